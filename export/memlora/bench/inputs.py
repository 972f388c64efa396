"""``memlora bench`` input checks: the target, ``--out`` and the filters, before any runtime starts."""
from __future__ import annotations

import os
from pathlib import Path

from ..backends import exportable
from ..core.bundle import MANIFEST, read_manifest
from ..core.errors import MemloraError
from .rows import runner_name


def check_inputs(target: str | Path, out_dir: Path, *, backends=None, adapters=None, adapter_modes=None,
                 quants=None) -> tuple[Path | None, dict | None]:
    """Every check that needs no runtime: the target, ``out_dir`` and the filters. Returns the
    bundle and its manifest, or (None, None) for a model folder / preset (exported first)."""
    from ..core.config import AdapterMode, Quant

    if out_dir.exists() and not out_dir.is_dir():
        raise MemloraError("--out is a file, not a folder", out_dir, "pass a folder (it is created if missing)")
    names = exportable()
    bad = [b for b in backends or [] if b not in names]
    if bad:
        raise MemloraError(f"unknown backend {', '.join(bad)}", fix=f"use one of: {', '.join(names)}")
    for flag, given, choices in (("--adapter-mode", adapter_modes, [m.value for m in AdapterMode]),
                                 ("--quant", quants, [q.value for q in Quant])):
        bad = [v for v in given or [] if v not in choices]
        if bad:
            raise MemloraError(f"unknown {flag} {', '.join(bad)}", fix=f"use one of: {', '.join(choices)}")
    path = Path(target)
    if (path / MANIFEST).is_file():
        manifest = read_manifest(path)
        have = [a["name"] for a in manifest["adapters"]]
        bad = [a for a in adapters or [] if a not in have]
        if bad:
            raise MemloraError(f"unknown adapter {', '.join(bad)}", path, f"adapters here: {', '.join(have)}")
        picked = [a for a in manifest["artifacts"] if all(not want or a[k] in want for k, want in
                  (("backend", backends), ("adapter_mode", adapter_modes), ("quant", quants)))]
        if not picked:
            here = ", ".join(runner_name(a) for a in manifest["artifacts"])
            raise MemloraError("no artifact of the bundle matches --backend/--adapter-mode/--quant", path,
                               f"artifacts here: {here or 'none'}")
        return path, manifest
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MemloraError("neither a bundle (no manifest.json) nor a model folder (no config.json)", path,
                               "pass a folder written by memlora export, a Hugging Face model folder or a "
                               "preset name (memlora presets)")
    elif path.exists() or os.sep in str(target) or str(target).startswith("."):
        raise MemloraError("not a bundle folder, model folder or preset", path,
                           "pass a folder written by memlora export, a model folder or a preset name")
    else:
        from ..sources.presets import get_preset

        get_preset(str(target))  # unknown name: one line listing the presets
    return None, None
