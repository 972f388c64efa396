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
    max_seq_len: Optional[int] = typer.Option(
        None, help="Context (KV-cache) length; default: the bundle's longest prompt + room, at least 2048."),
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
    onnx_head_bits: int = typer.Option(8, help="ONNX int4: bits of the LM head, 8 (as llama.cpp's q4_0 mix) or 4."),
    onnx_gqa: bool = typer.Option(False, help="ONNX: each causal layer's attention as one GroupQueryAttention "
                                  "(faster decode on short contexts, slower past ~500 cached tokens on CPU)."),
    coreml_target: str = typer.Option("iOS18", help="Core ML: minimum deployment target (iOS18 / macOS15 or newer)."),
    executorch_threads: Optional[int] = typer.Option(None, help="ExecuTorch: threadpool size the runner uses by default."),
    stock: bool = typer.Option(False, "--stock", help="Also run every artifact in its stock runtime (see parity --stock)."),
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
            embedder=embedder, onnx=OnnxConfig(onnx_opset, onnx_quantize_table, onnx_head_bits, onnx_gqa), coreml=CoreMLConfig(coreml_target),
            executorch=ExecuTorchConfig(executorch_threads), stock_check=stock)
        manifest = run_export(opts, show_progress=not quiet)
    except MemloraError as e:
        _fail(e)
    _wide().print(summary_table(manifest, out))
    failed = [a for a in manifest["artifacts"] if a.get("parity") and not a["parity"]["passed"]]
    if failed:
        console.print(f"[red]parity failed[/red] for {', '.join(_key(a) for a in failed)}; "
                      f"bundle kept at {out} for inspection")
        raise typer.Exit(1)
    if stock:
        from .stock import stock_table

        _wide().print(stock_table(manifest, out))
        if manifest.get("stock_passed") is False:
            raise typer.Exit(1)
    typer.echo(next_steps(manifest, out))


def _stock_parity(bundle: Path, json_out: bool) -> None:
    from ..stock.check import stock_check
    from .stock import stock_table

    try:
        report = stock_check(bundle)
    except MemloraError as e:
        _fail(e)
    _show_check(report, json_out, stock_table(report, bundle))
    if report["stock_passed"] is not True:  # failed, or nothing could run: never a pass
        raise typer.Exit(1)


def _show_check(report: dict, json_out: bool, table) -> None:
    """Print a re-check report: JSON, or its table and the file failures under it."""
    if json_out:
        typer.echo(json.dumps(report, indent=2))
        return
    _wide().print(table)
    for f in report["file_failures"]:
        console.print(f"[red]file:[/red] {f}")


def next_steps(manifest: dict, out: Path) -> str:
    """The closing lines: where the bundle is and what to run next (with the random-weights caveat)."""
    backend = manifest["artifacts"][0]["backend"] if manifest.get("artifacts") else "onnx"
    random = "preset" in (manifest.get("model", {}).get("source") or {})
    chat = f"memlora chat {out} --backend {backend}" + (" --raw-fallback" if random else "")
    lines = [f"bundle written to {out}",
             f"next: {chat}   |   memlora parity {out}   |   memlora bench {out} --out {out.name}-bench"]
    if random:
        lines.append("note: this preset has random weights: answers are noise and no extracted fact parses, so "
                     "chat stores nothing unless --raw-fallback stores each line verbatim")
    return "\n".join(lines)


@app.command()
def parity(bundle: Path = typer.Argument(..., help="Bundle folder written by memlora export."),
           tokens: Optional[int] = typer.Option(None, help="Greedy tokens per prompt (default: as exported)."),
           json_out: bool = typer.Option(False, "--json", help="Print the parity blocks as JSON."),
           stock: bool = typer.Option(False, "--stock", help="Run every artifact in its stock phone runtime "
                                      "(ExecuTorch TextLLMRunner, ONNX Runtime GenAI) against conformance.json "
                                      "instead of PyTorch; recorded in the manifest.")) -> None:
    """Re-check an existing bundle: file hashes, then parity of every artifact. Exit 1 on failure."""
    from ..recheck import recheck_bundle

    if stock:
        _stock_parity(bundle, json_out)
        return
    try:
        report = recheck_bundle(bundle, n_tokens=tokens)
    except MemloraError as e:
        _fail(e)
    _show_check(report, json_out, summary_table(report, bundle))
    if not report["passed"]:
        raise typer.Exit(1)


@app.command()
def preset(name: str = typer.Argument(..., help="Preset name (see `memlora presets`)."),
           out: Path = typer.Argument(..., help="Folder to write model/ and adapters/ into."),
           data: Optional[Path] = typer.Option(None, "--data", help="Distilled presets: the LoCoMo file their "
                                                                   "adapters are trained from (read, never copied)."),
           quiet: bool = typer.Option(False, help="No progress bars.")) -> None:
    """Write a built-in seeded preset: a real HF model folder and its PEFT adapters (distilled presets
    train theirs from LoCoMo first; vision-language presets bring four, vqa included, plus bad_adapters/)."""
    from ..distill.preset import DISTILLED_PRESETS, write_distilled_preset
    from ..sources.presets import write_preset
    from ..vision.presets import VISION_PRESETS, write_vision_preset

    try:
        if out.exists() and any(out.iterdir()):
            raise MemloraError("output folder exists and is not empty", out, "choose another folder")
        if name in DISTILLED_PRESETS:
            if data is None:
                raise MemloraError(f"preset {name} is trained from LoCoMo", fix="pass --data locomo10.zip")
            model_dir, adapters, _ = write_distilled_preset(name, out, data, show_progress=not quiet)
        elif name in VISION_PRESETS:
            model_dir, adapters = write_vision_preset(name, out)
        else:
            model_dir, adapters = write_preset(name, out)
    except MemloraError as e:
        _fail(e)
    typer.echo(f"model: {model_dir}")
    for n, p in adapters.items():
        typer.echo(f"adapter {n}: {p}")


@app.command()
def presets() -> None:
    """List the built-in presets."""
    from ..distill.preset import DISTILLED_PRESETS
    from ..sources.presets import PRESETS
    from ..vision.presets import VISION_PRESETS

    table = Table("preset", "family", "real size", "description")
    for p in [*PRESETS.values(), *VISION_PRESETS.values()]:
        table.add_row(p.name, p.model_type, "yes" if p.real_size else "", p.description)
    for d in DISTILLED_PRESETS.values():
        table.add_row(d.name, "qwen2", "", d.description)
    Console().print(table)


@app.command()
def backends() -> None:
    """Which backends can export and run on this machine, and why not."""
    from ..backends import availability

    from ..backends import get_backend

    table = Table("backend", "export", "run here")
    for name, reason in availability().items():
        if reason is not None:
            table.add_row(name, f"[yellow]{reason}[/yellow]", "-")
            continue
        backend = get_backend(name)
        why_not = backend.runnable()
        run = "[green]yes[/green]" if why_not is None else f"[yellow]{why_not}[/yellow]"
        table.add_row(name, "[green]yes[/green]" if backend.exports else "reference only", run)
    _wide().print(table)


def _key(a: dict) -> str:
    return f"{a['backend']}/{a['adapter_mode']}/{a['quant']}"


def _bytes_of(sizes: dict[str, int], path: str) -> int:
    """Bytes of an artifact file with its side files (``.onnx.data``), or of a folder (``.mlpackage``)."""
    return sum(b for p, b in sizes.items() if p == path or p == path + ".data" or p.startswith(path + "/"))


def summary_table(manifest: dict, root: Path) -> Table:
    """One row per artifact and adapter: size on disk and the parity figures."""
    sizes = {f["path"]: f["bytes"] for f in manifest.get("files", [])}
    table = Table("artifact", "adapter", "MB", "max |diff|", "top-1", "KL", "neg. control", "parity",
                  title=f"{root}: parity against PyTorch", caption=_CAPTION, caption_justify="left")
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
                          _verdict(ok, a))
    return table


_CAPTION = ("MB: the adapter's own file + the shared base (external mode). max |diff|, top-1, KL: the export vs "
            "PyTorch eager with PEFT, teacher-forced over real prompts and greedy tokens. neg. control: max |diff| "
            "of the reference under another adapter, which must be far above the tolerance (proves the check "
            "can fail). MIL: Core ML checked by memlora's NumPy evaluator of the converted program (Core ML "
            "predicts only on macOS).")


def _verdict(ok: bool | None, artifact: dict) -> str:
    if ok is None:
        return "-"
    mil = artifact.get("backend") == "coreml" and (artifact.get("meta") or {}).get("numerics") == "mil-numpy"
    return ("[green]pass[/green]" if ok else "[red]FAIL[/red]") + (" (MIL)" if mil else "")
