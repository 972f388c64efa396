"""Bundle writing and reading on hostile places and files: one clear error, nothing left behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memlora.core.bundle import (FORMAT, MANIFEST, atomic_dir, check_out_dir, clean_stale, read_manifest,
                            scratch_dir, verify_files)
from memlora.core.errors import MemloraError


@pytest.mark.parametrize("out", ["/proc/memlora-x", "/sys/memlora-x", "/proc/self/nope/deeper"])
def test_unwritable_system_places(out):
    with pytest.raises(MemloraError, match="cannot write here") as e:
        check_out_dir(Path(out), force=True)
    assert "fix:" in e.value.one_line()


def test_long_name_and_path(tmp_path):
    with pytest.raises(MemloraError, match="too long"):
        check_out_dir(tmp_path / ("b" * 300), force=False)
    with pytest.raises(MemloraError, match="too long"):
        check_out_dir(tmp_path / "/".join(["d" * 200] * 25), force=False)
    assert list(tmp_path.iterdir()) == []


def test_mount_point_is_refused_before_work(tmp_path, monkeypatch):
    with pytest.raises(MemloraError, match="mount point"):
        check_out_dir(Path("/proc"), force=True)
    target = tmp_path / "mnt"
    target.mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == target)
    with pytest.raises(MemloraError, match="mount point") as e:
        with atomic_dir(target, force=True):
            raise AssertionError("must not be reached")
    assert str(target / "bundle") in e.value.one_line()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnt"]


def test_bundle_mode_follows_umask(tmp_path):
    with atomic_dir(tmp_path / "b", force=False) as tmp:
        (tmp / "f").write_text("x")
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o777 & ~_umask()


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


def test_stale_leftovers_of_dead_runs_are_cleaned(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".b.tmp-{dead.pid}-abcd1234", tmp_path / f".b.old-{dead.pid}-abcd1234"]
    alive = tmp_path / f".b.tmp-{os.getppid()}-live0000"  # a running process's: kept
    for p in (*stale, alive):
        p.mkdir()
        (p / "weights.bin").write_bytes(b"0" * 10)
    with atomic_dir(tmp_path / "b", force=False) as tmp:
        (tmp / "f").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["b", alive.name])
    assert clean_stale(tmp_path, ".b.tmp-") == []


def test_killed_export_leftovers_are_cleaned_next_run(tmp_path):
    """kill -9 inside atomic_dir and scratch_dir; the next run removes both leftovers."""
    script = (f"import time\nfrom pathlib import Path\nfrom memlora.core.bundle import atomic_dir, scratch_dir\n"
              f"with scratch_dir('memlora-test-src-') as s, atomic_dir(Path({str(tmp_path / 'b')!r}), False) as t:\n"
              f"    (t / 'part').write_text('x'); (s / 'src').write_text('y'); print(s, flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    scratch = Path(proc.stdout.readline().strip())
    assert scratch.is_dir() and any(p.name.startswith(".b.tmp-") for p in tmp_path.iterdir())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.1)
    with scratch_dir("memlora-test-src-"), atomic_dir(tmp_path / "b", force=False) as tmp:
        (tmp / "f").write_text("x")
    assert not scratch.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def _write(root: Path, doc) -> None:
    root.mkdir(exist_ok=True)
    (root / MANIFEST).write_text(json.dumps(doc))


@pytest.mark.parametrize("doc,match", [
    ([1, 2], "not a memlora bundle"), ("text", "not a memlora bundle"), ({"format": "x"}, "not a memlora bundle"),
    ({"format": FORMAT, "format_version": "1"}, "not a number"),
    ({"format": FORMAT, "format_version": 99}, "newer than this memlora"),
])
def test_bad_manifests(tmp_path, doc, match):
    _write(tmp_path, doc)
    with pytest.raises(MemloraError, match=match):
        read_manifest(tmp_path)


@pytest.mark.parametrize("files,match", [
    ("x", "not a list"), ([1], "malformed"), ([{"path": "a", "bytes": "1", "sha256": "0"}], "malformed"),
    ([{"path": "../etc/passwd", "bytes": 1, "sha256": "0"}], "outside the bundle"),
    ([{"path": "/etc/passwd", "bytes": 1, "sha256": "0"}], "outside the bundle"),
])
def test_bad_file_lists(tmp_path, files, match):
    with pytest.raises(MemloraError, match=match):
        verify_files(tmp_path, {"files": files})


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                     max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(doc=_json, files=_json, raw=st.binary(max_size=64))
def test_manifest_reader_fuzz(tmp_path_factory, doc, files, raw):
    """Any JSON, any file list, any bytes: a manifest, or a MemloraError -- never another exception."""
    root = tmp_path_factory.mktemp("fuzz")
    for content in (json.dumps(doc).encode(), json.dumps({"format": FORMAT, "files": files}).encode(), raw):
        (root / MANIFEST).write_bytes(content)
        try:
            manifest = read_manifest(root)
            verify_files(root, manifest)
        except MemloraError:
            pass
