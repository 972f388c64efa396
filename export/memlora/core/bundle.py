"""Bundle directory: atomic writing (temp dir, then rename), the manifest, and file checks."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import MemloraError

from .manifest import FORMAT, FORMAT_VERSION, Manifest

MANIFEST = "manifest.json"


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse an existing non-empty output without --force, or a place we cannot write. Cheap;
    called before any model is loaded."""
    if out.exists() and not out.is_dir():
        raise MemloraError("output path is a file", out, "choose a folder path for --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MemloraError("output folder exists and is not empty", out, "choose another --out or pass --force")
    parent = out.parent if out.parent != Path("") else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise MemloraError("output folder is not writable", probe, "choose a writable --out")


@contextlib.contextmanager
def atomic_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temp folder beside ``out``; on success it replaces ``out`` in one rename, on any
    error it is removed, so a failed export never leaves a half-written bundle behind."""
    check_out_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def list_files(root: Path) -> list[dict]:
    """Every file under ``root`` except the manifest: relative path, bytes, sha256."""
    rows = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rows.append({"path": p.relative_to(root).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)})
    return rows


def write_manifest(root: Path, manifest: Manifest | dict) -> dict:
    """Fill in the file list and write ``manifest.json`` (temp file + rename); returns it as JSON."""
    record = manifest if isinstance(manifest, Manifest) else Manifest.from_json(manifest)
    record.format, record.format_version, record.files = FORMAT, FORMAT_VERSION, list_files(root)
    data = record.to_json()
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False))
    tmp.replace(root / MANIFEST)
    return data


def read_manifest(root: Path) -> dict:
    """Read and sanity-check a bundle manifest (as JSON; :func:`load_manifest` gives the record)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise MemloraError("no manifest.json", root, "point at a folder written by memlora export")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MemloraError(f"manifest.json is not valid JSON ({e.msg})", path, "re-run memlora export") from None
    if manifest.get("format") != FORMAT:
        raise MemloraError("not a memlora bundle manifest", path, "re-run memlora export")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise MemloraError(f"bundle format {manifest['format_version']} is newer than this memlora", path,
                           "upgrade memlora")
    return manifest


def load_manifest(root: Path) -> Manifest:
    """:func:`read_manifest` as a typed :class:`Manifest`."""
    return Manifest.from_json(read_manifest(root))


def verify_files(root: Path, manifest: dict) -> list[str]:
    """Every listed file exists with its size and sha256; returns the failures."""
    failures = []
    for row in manifest.get("files", []):
        p = Path(root) / row["path"]
        if not p.is_file():
            failures.append(f"{row['path']}: missing")
        elif p.stat().st_size != row["bytes"] or sha256_file(p) != row["sha256"]:
            failures.append(f"{row['path']}: sha256 mismatch")
    return failures
