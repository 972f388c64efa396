"""Backends, found by name in one dict. Each module implements the interface in ``base.py``."""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MemloraError

BACKENDS: dict[str, str] = {
    "onnx": "memlora.backends.onnx_backend",
    "executorch": "memlora.backends.executorch_backend",
    "coreml": "memlora.backends.coreml_backend",
}


def get_backend(name: str) -> ModuleType:
    """Import the backend module for ``name`` (lazily, so one missing runtime breaks nothing else)."""
    try:
        module_path = BACKENDS[name]
    except KeyError:
        raise MemloraError(f"unknown backend {name!r}", fix=f"use one of: {', '.join(BACKENDS)}") from None
    try:
        return importlib.import_module(module_path)
    except ModuleNotFoundError as e:
        if e.name == module_path:
            raise MemloraError(f"backend {name!r} is not built into this memlora yet",
                               fix="use --backend onnx") from None
        raise


def availability() -> dict[str, str | None]:
    """Backend name -> None when usable here, else the reason it is not."""
    out: dict[str, str | None] = {}
    for name in BACKENDS:
        try:
            out[name] = get_backend(name).available()
        except MemloraError as e:
            out[name] = e.message
    return out
