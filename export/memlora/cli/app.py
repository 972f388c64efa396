"""The typer app every verb group registers on, and the one-line error path (exit code 2)."""
from __future__ import annotations

import typer
from rich.console import Console

from ..core.errors import MemloraError

app = typer.Typer(help="Export memory-augmented small language models with LoRA adapters for phones.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)


def _show_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"memlora {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", help="Show third-party logs, warnings and native output."),
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print memlora's version and exit."),
) -> None:
    """Export memory-augmented small language models with LoRA adapters for phones."""
    from ..core.console import quiet_third_party

    quiet_third_party(verbose)


def _fail(e: MemloraError) -> None:
    console.print(f"[red]error:[/red] {e.one_line()}", highlight=False, soft_wrap=True)
    raise typer.Exit(e.exit_code)




def _wide() -> Console:
    """Tables stay readable in pipes and CI logs, where rich would assume 80 columns."""
    width = Console().width
    return Console(width=max(width, 120))

