"""Backends, found by name: the one list of names is :class:`~memlora.core.config.BackendName`,
and backend ``X`` is the package ``memlora.backends.X`` exposing ``BACKEND`` (a
:class:`~memlora.backends.base.Backend`). Packages are imported lazily, so one missing runtime
breaks nothing else."""
from __future__ import annotations

import importlib

from ..core.config import BackendName
from ..core.errors import MemloraError
from .base import Artifact, Backend, Runner  # noqa: F401  (the contract, re-exported)

NAMES: tuple[str, ...] = tuple(b.value for b in BackendName)


def exportable() -> list[str]:
    """The backends that are export targets (every one but the PyTorch reference)."""
    return [n for n in NAMES if get_backend(n).exports]


def get_backend(name: str | BackendName) -> Backend:
    """The backend called ``name``; a one-line error listing the names otherwise."""
    try:
        key = BackendName(name)
    except ValueError:
        raise MemloraError(f"unknown backend {name!r}", fix=f"use one of: {', '.join(NAMES)}") from None
    return importlib.import_module(f"{__name__}.{key.value}").BACKEND


def availability(runtimes: bool = False) -> dict[str, str | None]:
    """Backend name -> None when usable here, else the reason it is not (``runtimes``: include
    the run-only reference)."""
    return {n: get_backend(n).available() for n in NAMES if runtimes or get_backend(n).exports}
