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


def _probe_write(place: Path) -> None:
    """Really create (and remove) a folder in ``place``: ``os.access`` says yes to root on /proc,
    /sys and read-only mounts, where the export would only fail at the end."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".memlora-probe-", dir=place))
    except OSError as e:
        raise MemloraError(f"cannot write here ({e.strerror or type(e).__name__})", place,
                           "choose a writable --out") from None


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError:  # ENAMETOOLONG, ELOOP: not usable either way
        return False


def _check_lengths(out: Path, probe: Path) -> None:
    try:
        name_max, path_max = os.pathconf(probe, "PC_NAME_MAX"), os.pathconf(probe, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    # The temp folder is ".NAME.tmp-PID-XXXXXXXX": ~25 bytes more than NAME; files go ~120 deeper.
    too_long = [part for part in out.parts if len(part.encode()) > name_max]
    if too_long or len(out.name.encode()) + 25 > name_max or len(str(out.absolute()).encode()) + 120 > path_max:
        raise MemloraError(f"output name or path too long for this file system (name max {name_max}, "
                           f"path max {path_max})", str(out)[:120] + ("..." if len(str(out)) > 120 else ""),
                           "choose a shorter --out")


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse an existing non-empty output without --force, a mount point, a name or path too long
    for the file system, or a place we cannot write. Cheap; called before any model is loaded."""
    probe = out.parent if out.parent != Path("") else Path(".")
    while not _exists(probe):
        probe = probe.parent
    _check_lengths(out, probe)
    if out.exists() and not out.is_dir():
        raise MemloraError("output path is a file", out, "choose a folder path for --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MemloraError("output folder exists and is not empty", out, "choose another --out or pass --force")
    if out.is_dir() and os.path.ismount(out):
        raise MemloraError("output folder is a mount point (a bundle replaces --out in one rename)", out,
                           "pass a folder inside it, e.g. --out " + str(out / "bundle"))
    if not probe.is_dir():
        raise MemloraError("a parent of the output is a file", probe, "choose a folder path for --out")
    _probe_write(probe)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove ``PREFIX<pid>-*`` folders in ``parent`` whose process is gone (a killed export)."""
    removed = []
    for p in parent.glob(f"{prefix}*"):
        pid = p.name[len(prefix):].split("-", 1)[0]
        if p.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def scratch_dir(prefix: str = "memlora-src-") -> Iterator[Path]:
    """A temp folder in the system temp dir, named with our pid so a killed run's is cleaned later."""
    base = Path(tempfile.gettempdir())
    clean_stale(base, prefix)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temp folder beside ``out``; on success it replaces ``out`` in one rename, on any
    error it is removed, so a failed export never leaves a half-written bundle behind. Leftovers of
    killed runs beside ``out`` are removed first; the bundle gets the umask's usual mode, not 0700."""
    check_out_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("tmp", "old"):
        clean_stale(out.parent, f".{out.name}.{kind}-")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{tmp.name[-8:]}"
            out.rename(old)
        tmp.rename(out)
    except OSError as e:
        if old is not None and not out.exists():
            old.rename(out)  # put the previous bundle back
        shutil.rmtree(tmp, ignore_errors=True)
        raise MemloraError(f"cannot move the bundle into place ({e.strerror})", out, "choose another --out") from None
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


def exporter_versions() -> dict:
    """Versions of the packages that wrote the bundle (``manifest["exporter"]``); the phone apps
    refuse artifacts written by another major version of their runtime."""
    from importlib import metadata

    out = {}
    for pkg in ("memlora", "executorch", "onnxruntime", "coremltools", "torch", "transformers"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def write_manifest(root: Path, manifest: Manifest | dict) -> dict:
    """Fill in the file list and exporter versions and write ``manifest.json`` (temp file + rename);
    returns it as JSON."""
    record = manifest if isinstance(manifest, Manifest) else Manifest.from_json(manifest)
    record.format, record.format_version, record.files = FORMAT, FORMAT_VERSION, list_files(root)
    record.exporter = record.exporter or exporter_versions()
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
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MemloraError(f"manifest.json is not valid JSON ({getattr(e, 'msg', type(e).__name__)})", path,
                           "re-run memlora export") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MemloraError("not a memlora bundle manifest", path, "re-run memlora export")
    if not isinstance(manifest.get("format_version", 0), int):
        raise MemloraError("manifest format_version is not a number", path, "re-run memlora export")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise MemloraError(f"bundle format {manifest['format_version']} is newer than this memlora", path,
                           "upgrade memlora")
    return manifest


def load_manifest(root: Path) -> Manifest:
    """:func:`read_manifest` as a typed :class:`Manifest`."""
    return Manifest.from_json(read_manifest(root))


def _file_rows(manifest: dict, path: Path) -> list[dict]:
    """The manifest's ``files`` list, checked: relative paths inside the bundle, sizes, digests."""
    rows = manifest.get("files", [])
    fix = "re-run memlora export (the manifest's file list is damaged)"
    if not isinstance(rows, list):
        raise MemloraError("manifest 'files' is not a list", path, fix)
    for row in rows:
        if not (isinstance(row, dict) and isinstance(row.get("path"), str) and isinstance(row.get("bytes"), int)
                and isinstance(row.get("sha256"), str)):
            raise MemloraError(f"manifest file entry {str(row)[:80]!r} is malformed", path, fix)
        rel = Path(row["path"])
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise MemloraError(f"manifest names a file outside the bundle: {row['path'][:80]!r}", path, fix)
    return rows


def verify_files(root: Path, manifest: dict) -> list[str]:
    """Every listed file exists with its size and sha256; returns the failures (each with its fix)."""
    failures = []
    for row in _file_rows(manifest, Path(root) / MANIFEST):
        p = Path(root) / row["path"]
        if not p.is_file():
            failures.append(f"{row['path']}: missing -- fix: copy the whole bundle again, or re-run memlora export")
        elif p.stat().st_size != row["bytes"] or sha256_file(p) != row["sha256"]:
            failures.append(f"{row['path']}: sha256 mismatch (changed since export) -- fix: copy the bundle again, "
                            "or re-run memlora export")
    return failures
