"""The ``memlora`` command: a thin typer layer over the library functions, one module per verb
group (``export.py``: export, parity, preset(s), backends; ``bench.py``; ``memory.py``: chat,
memories, locomo). ``memlora.cli:main`` is the console-script entry point."""
from __future__ import annotations

import sys

from . import export  # noqa: F401,I001  (each registers its verbs on app, in --help order)
from . import bench  # noqa: F401,I001
from . import memory  # noqa: F401,I001
from .app import app
from ..distill.cli import register as _register_distill

_register_distill(app)  # teacher locomo, distill
from .export import summary_table  # noqa: F401  (re-exported)
from .memory import locomo_tables  # noqa: F401  (re-exported)

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    from ..core.console import quiet_third_party

    # Before any library is imported: torch, torchao, coremltools and transformers log, warn and
    # draw progress bars about their own internals, burying memlora's lines (``--verbose`` shows them).
    quiet_third_party("--verbose" in sys.argv[1:])
    app()


if __name__ == "__main__":
    sys.exit(main())
