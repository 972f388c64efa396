"""Verbs that make and check bundles: export, parity, preset(s), backends."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..core.errors import MemloraError
from .app import _fail, _wide, app, console


@app.command()
def export(
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to write."),
    model: Optional[str] = typer.Option(None, help="HF model folder or preset name (default: tiny-qwen2)."),
    adapter: Optional[List[str]] = typer.Option(None, help="NAME=PATH of a PEFT adapter folder; repeat."),
    backend: str = typer.Option("onnx", help="Comma-separated: onnx, executorch, coreml."),
    adapter_mode: str = typer.Option("external", help="Comma-separated: external, fused."),
    quant: str = typer.Option("none", help="Comma-separated: none, int8, int4."),
    precision: str = typer.Option("fp32", help="Compute precision where selectable (Core ML): fp32, fp16."),
    group_size: int = typer.Option(32, help="Block size of int4 weights."),
    max_seq_len: int = typer.Option(512, help="KV-cache capacity for static-cache backends."),
    parity_tokens: int = typer.Option(32, help="Greedy tokens compared per prompt."),
    no_parity: bool = typer.Option(False, "--no-parity", help="Skip the parity check (not recommended)."),
    force: bool = typer.Option(False, help="Replace an existing non-empty --out."),
    allow_pickle: bool = typer.Option(False, help="Allow .bin pickle weights (they can run code)."),
    trust_remote_code: bool = typer.Option(False, help="Allow models that need custom code."),
    quiet: bool = typer.Option(False, help="No progress bars."),
    embedder: Optional[str] = typer.Option(None, help="Sentence embedder for retrieval: 'tiny' or an HF encoder folder."),
    onnx_opset: int = typer.Option(18, help="ONNX: opset of the exported graphs (18 or newer)."),
    onnx_quantize_table: bool = typer.Option(False, help="ONNX int4: the embedding table in int4 too "
                                             "(GatherBlockQuantized); the LM head is always quantized."),
    coreml_target: str = typer.Option("iOS18", help="Core ML: minimum deployment target (iOS18 / macOS15 or newer)."),
    executorch_threads: Optional[int] = typer.Option(None, help="ExecuTorch: threadpool size the runner uses by default."),
) -> None:
    """Export a model and its adapters to a bundle, with parity against PyTorch."""
    from ..core.config import (AdapterMode, CoreMLConfig, ExecuTorchConfig, OnnxConfig, Precision, Quant,
                               parse_backends, parse_choices)
    from ..export import ExportOptions, run_export
    from ..sources.resolve import parse_adapter_args

    try:
        opts = ExportOptions(
            out=out, model=model, adapters=parse_adapter_args(adapter), backends=parse_backends(backend),
            adapter_modes=parse_choices(AdapterMode, adapter_mode, "--adapter-mode"),
            quants=parse_choices(Quant, quant, "--quant"), precision=parse_choices(Precision, precision, "--precision")[0],
            group_size=group_size, max_seq_len=max_seq_len, parity_tokens=parity_tokens,
            check_parity=not no_parity, force=force, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
            embedder=embedder, onnx=OnnxConfig(onnx_opset, onnx_quantize_table), coreml=CoreMLConfig(coreml_target),
            executorch=ExecuTorchConfig(executorch_threads))
        manifest = run_export(opts, show_progress=not quiet)
    except MemloraError as e:
        _fail(e)
    _wide().print(summary_table(manifest, out))
    failed = [a for a in manifest["artifacts"] if a.get("parity") and not a["parity"]["passed"]]
    if failed:
        console.print(f"[red]parity failed[/red] for {', '.join(_key(a) for a in failed)}; "
                      f"bundle kept at {out} for inspection")
        raise typer.Exit(1)


@app.command()
def parity(bundle: Path = typer.Argument(..., help="Bundle folder written by memlora export."),
           tokens: Optional[int] = typer.Option(None, help="Greedy tokens per prompt (default: as exported)."),
           json_out: bool = typer.Option(False, "--json", help="Print the parity blocks as JSON.")) -> None:
    """Re-check an existing bundle: file hashes, then parity of every artifact. Exit 1 on failure."""
    from ..recheck import recheck_bundle

    try:
        report = recheck_bundle(bundle, n_tokens=tokens)
    except MemloraError as e:
        _fail(e)
    if json_out:
        typer.echo(json.dumps(report, indent=2))
    else:
        _wide().print(summary_table(report, bundle))
        for f in report["file_failures"]:
            console.print(f"[red]file:[/red] {f}")
    if not report["passed"]:
        raise typer.Exit(1)


@app.command()
def preset(name: str = typer.Argument(..., help="Preset name (see `memlora presets`)."),
           out: Path = typer.Argument(..., help="Folder to write model/ and adapters/ into.")) -> None:
    """Write a built-in seeded preset: a real HF model folder and three PEFT adapters."""
    from ..sources.presets import write_preset

    try:
        if out.exists() and any(out.iterdir()):
            raise MemloraError("output folder exists and is not empty", out, "choose another folder")
        model_dir, adapters = write_preset(name, out)
    except MemloraError as e:
        _fail(e)
    typer.echo(f"model: {model_dir}")
    for n, p in adapters.items():
        typer.echo(f"adapter {n}: {p}")


@app.command()
def presets() -> None:
    """List the built-in presets."""
    from ..sources.presets import PRESETS

    table = Table("preset", "family", "real size", "description")
    for p in PRESETS.values():
        table.add_row(p.name, p.model_type, "yes" if p.real_size else "", p.description)
    Console().print(table)


@app.command()
def backends() -> None:
    """Which backends can export and run on this machine, and why not."""
    from ..backends import availability

    table = Table("backend", "status")
    for name, reason in availability().items():
        table.add_row(name, "[green]available[/green]" if reason is None else f"[yellow]{reason}[/yellow]")
    Console().print(table)


def _key(a: dict) -> str:
    return f"{a['backend']}/{a['adapter_mode']}/{a['quant']}"


def _bytes_of(sizes: dict[str, int], path: str) -> int:
    """Bytes of an artifact file with its side files (``.onnx.data``), or of a folder (``.mlpackage``)."""
    return sum(b for p, b in sizes.items() if p == path or p == path + ".data" or p.startswith(path + "/"))


def summary_table(manifest: dict, root: Path) -> Table:
    """One row per artifact and adapter: size on disk and the parity figures."""
    sizes = {f["path"]: f["bytes"] for f in manifest.get("files", [])}
    table = Table("artifact", "adapter", "MB", "max |diff|", "top-1", "KL", "neg. control", "parity",
                  title=f"bundle {root}")
    for a in manifest["artifacts"]:
        shared = sum(_bytes_of(sizes, p) for r, p in a["files"].items() if ":" not in r)
        parity = a.get("parity") or {}
        rows = parity.get("adapters") or [{"adapter": n, "passed": parity.get("passed")} for n in a["adapters"]]
        for row in rows:
            name = row.get("adapter")
            own = sum(_bytes_of(sizes, p) for r, p in a["files"].items() if r.endswith(f":{name}"))
            ok = row.get("passed")
            table.add_row(_key(a), str(name), f"{(own + shared) / 1e6:.2f}" if shared == 0 else
                          f"{own / 1e6:.2f}+{shared / 1e6:.2f}",
                          f"{row['max_abs_diff']:.2e}" if "max_abs_diff" in row else "-",
                          f"{row['top1_agreement']:.0%}" if "top1_agreement" in row else "-",
                          f"{row['kl_mean']:.1e}" if "kl_mean" in row else "-",
                          f"{row['negative_control'].get('max_abs_diff', 0):.2g}" if row.get("negative_control") else "-",
                          "-" if ok is None else ("[green]pass[/green]" if ok else "[red]FAIL[/red]"))
    return table
