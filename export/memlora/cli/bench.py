"""``memlora bench``: the benchmark verb."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..core.errors import MemloraError
from .app import _fail, app, console


@app.command()
def bench(
    target: str = typer.Argument(..., help="Bundle folder, or a model folder / preset name (exported first)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for bench.json, bench.md and the plots."),
    prompt_lens: str = typer.Option("64,256,1024", help="Comma-separated prefill lengths."),
    decode_tokens: int = typer.Option(128, help="Greedy tokens per decode run."),
    repeats: int = typer.Option(5, help="Timed runs per measurement (median, min, max)."),
    warmup: int = typer.Option(1, help="Untimed runs before timing."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for every runtime (default: all usable)."),
    backend: Optional[str] = typer.Option(None, help="Comma-separated backends to bench (default: all)."),
    adapter: Optional[str] = typer.Option(None, help="Comma-separated adapters to bench (default: all)."),
    adapter_mode: Optional[str] = typer.Option(None, help="Only these modes (a model TARGET: external,fused)."),
    quant: Optional[str] = typer.Option(None, help="Only these quants (a model TARGET: none,int8,int4)."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots."),
    llama_bench: Optional[Path] = typer.Option(
        None, help="A llama-bench binary: llama.cpp rows on the same weights (default: $LLAMA_BENCH or PATH)."),
    loop: bool = typer.Option(False, "--loop", help="Also time a memory-loop turn per backend, with and without prefix reuse."),
    programs: str = typer.Option("auto", help="ExecuTorch adapter programs kept loaded: auto (all when they fit "
                                              "in memory), all, or one (a switch reloads)."),
) -> None:
    """Time every artifact against PyTorch eager: TTFT, prefill and decode speed, switching, RSS, disk."""
    from ..bench.run import run_bench
    from ..bench.report import table

    def csv(text: Optional[str]) -> Optional[list[str]]:
        return [p.strip() for p in text.split(",") if p.strip()] if text else None

    try:
        lens = tuple(int(n) for n in csv(prompt_lens) or [])
    except ValueError:
        _fail(MemloraError(f"bad --prompt-lens {prompt_lens!r}", fix="write e.g. --prompt-lens 64,256,1024"))
    try:
        result = run_bench(target, out, prompt_lens=lens, decode_tokens=decode_tokens, repeats=repeats,
                           warmup=warmup, threads=threads, backends=csv(backend), adapters=csv(adapter),
                           adapter_modes=csv(adapter_mode), quants=csv(quant), plots=not no_plots,
                           llama_bench=llama_bench, loop=loop, programs=programs,
                           log=lambda msg: console.print(f"[dim]{msg}[/dim]", highlight=False))
    except MemloraError as e:
        _fail(e)
    cols, cells = table(result.doc, compact=True)
    grid = Table(*cols, title=f"memlora bench ({result.doc['machine']['cpu']}, {result.doc['settings']['threads']} threads)")
    for row in cells:
        grid.add_row(*row)
    # Piped output (a CI log, `| tee`) is not cut to rich's 80-column default.
    Console(width=None if sys.stdout.isatty() else 250).print(grid)
    for runner, why in result.summary["not_measured"].items():
        console.print(f"[yellow]not measured[/yellow] {runner}: {why}", highlight=False)
    typer.echo(f"wrote {result.json_path}, {result.md_path} (full table)" + "".join(f", {p}" for p in result.plots))
