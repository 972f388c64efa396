"""The typer app every verb group registers on, and the one-line error path (exit code 2)."""
from __future__ import annotations

import typer
from rich.console import Console

from ..core.errors import MemloraError

app = typer.Typer(help="Export memory-augmented small language models with LoRA adapters for phones.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)


def _fail(e: MemloraError) -> None:
    console.print(f"[red]error:[/red] {e.one_line()}", highlight=False, soft_wrap=True)
    raise typer.Exit(e.exit_code)




def _wide() -> Console:
    """Tables stay readable in pipes and CI logs, where rich would assume 80 columns."""
    width = Console().width
    return Console(width=max(width, 120))

