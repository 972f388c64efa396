"""The ``memlora`` command: a thin typer layer over the library functions."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..core.errors import MemloraError

app = typer.Typer(help="Export memory-augmented small language models with LoRA adapters for phones.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)


def _fail(e: MemloraError) -> None:
    console.print(f"[red]error:[/red] {e.one_line()}", highlight=False, soft_wrap=True)
    raise typer.Exit(e.exit_code)


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
            embedder=embedder, onnx=OnnxConfig(onnx_opset), coreml=CoreMLConfig(coreml_target),
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


def _wide() -> Console:
    """Tables stay readable in pipes and CI logs, where rich would assume 80 columns."""
    width = Console().width
    return Console(width=max(width, 120))


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
                           log=lambda msg: console.print(f"[dim]{msg}[/dim]", highlight=False))
    except MemloraError as e:
        _fail(e)
    cols, cells = table(result.doc, compact=True)
    grid = Table(*cols, title=f"memlora bench ({result.doc['machine']['cpu']}, {result.doc['settings']['threads']} threads)")
    for row in cells:
        grid.add_row(*row)
    Console().print(grid)
    for runner, why in result.summary["not_measured"].items():
        console.print(f"[yellow]not measured[/yellow] {runner}: {why}", highlight=False)
    typer.echo(f"wrote {result.json_path}, {result.md_path} (full table)" + "".join(f", {p}" for p in result.plots))


# --- memory loop on a bundle: chat, memories, locomo ---------------------------------------------

@app.command()
def chat(
    bundle: Path = typer.Argument(..., help="Bundle folder written by memlora export."),
    backend: str = typer.Option("onnx", help="Runtime: onnx, executorch, coreml or pytorch (eager reference)."),
    db: Path = typer.Option(Path("memories.db"), help="SQLite memory store (created if missing)."),
    user: str = typer.Option("user", help="Whose memories to use."),
    raw_fallback: bool = typer.Option(False, help="Store a line verbatim when the model extracts nothing valid."),
    max_new_tokens: int = typer.Option(64, help="Token budget of each generation."),
) -> None:
    """Talk to the memory loop: each line is remembered, then answered from memory."""
    from ..chat import ChatOptions, quiet_loop_logs, run_chat
    from ..memory import MemoryStore
    from ..runtime import open_bundle

    try:
        session = open_bundle(bundle, backend)
    except MemloraError as e:
        _fail(e)
    store = MemoryStore(db)
    restore_logs = quiet_loop_logs()  # parse failures are expected noise here
    try:
        run_chat(session, store, ChatOptions(user=user, raw_fallback=raw_fallback, max_new_tokens=max_new_tokens),
                 stream=lambda text: (sys.stdout.write(text), sys.stdout.flush()))
    finally:
        restore_logs()
        store.close()
        session.close()


@app.command()
def memories(
    db: Path = typer.Argument(..., help="SQLite memory store (from memlora chat or locomo --db)."),
    search: Optional[str] = typer.Option(None, help="Text search (FTS5/BM25) instead of listing."),
    delete: Optional[str] = typer.Option(None, help="Delete the memory with this id (or unique id prefix)."),
    user: Optional[str] = typer.Option(None, help="Only this user's memories."),
    limit: int = typer.Option(50, help="At most this many rows."),
) -> None:
    """List, search or delete stored memories."""
    from ..memory import MemoryStore

    try:
        if not db.is_file():
            raise MemloraError("memory store not found", db, "pass the --db file of memlora chat")
        with MemoryStore(db) as store:
            if delete is not None:
                ids = [m.id for m in store.list(user) if m.id.startswith(delete)] if delete else []
                if len(ids) != 1:
                    raise MemloraError(f"{'no' if not ids else 'more than one'} memory with id {delete!r}",
                                       db, "copy an id from `memlora memories FILE`")
                store.delete(ids[0])
                typer.echo(f"deleted {ids[0]}")
                return
            if search is not None:
                rows = [(h.memory, f"{h.score:.3f}") for u in ([user] if user else store.users())
                        for h in store.search(search, u, limit)]
                rows.sort(key=lambda r: -float(r[1]))
            else:
                rows = [(m, "") for m in store.list(user, limit)]
            table = Table("id", "user", "updated", "text", *(["score"] if search is not None else []),
                          title=f"{db}: {store.count(user)} memories" + (f" of {user}" if user else ""))
            for m, score in rows[:limit]:
                table.add_row(m.id, m.user, m.updated_at, m.text, *([score] if search is not None else []))
            Console(width=200).print(table)
    except MemloraError as e:
        _fail(e)


@app.command()
def locomo(
    bundle: Path = typer.Argument(..., help="Bundle folder written by memlora export."),
    data: Path = typer.Option(..., help="LoCoMo file: locomo10.zip (one JSON per conversation) or locomo10.json."),
    conversations: int = typer.Option(1, help="First N conversations."),
    questions: Optional[int] = typer.Option(None, help="First M questions per conversation (default: all)."),
    backend: str = typer.Option("onnx", help="Runtime: onnx, executorch, coreml or pytorch."),
    compare: Optional[str] = typer.Option(None, help="'pytorch': also run the eager reference, report parity."),
    max_sessions: Optional[int] = typer.Option(None, help="First N sessions per conversation."),
    max_turns: Optional[int] = typer.Option(None, help="First N turns per session."),
    max_new_tokens: int = typer.Option(48, help="Token budget of every operation."),
    top_k: int = typer.Option(30, help="Memories given to the answer step."),
    skip_category: List[int] = typer.Option([5], help="QA categories to skip (repeat); 5 is adversarial."),
    raw_fallback: bool = typer.Option(True, help="Store a turn verbatim when the model yields nothing valid."),
    threads: int = typer.Option(1, help="CPU threads per runtime (0: the runtime's default)."),
    db: Optional[Path] = typer.Option(None, help="Keep the backend's memory store in this new SQLite file."),
    out: Optional[Path] = typer.Option(None, help="Write the full report as JSON here."),
) -> None:
    """Run the memory loop on LoCoMo: F1/BLEU-1 per category, time per operation, parity vs PyTorch."""
    from ..chat import quiet_loop_logs
    from ..eval.locomo import LocomoSettings, run_locomo

    restore_logs = quiet_loop_logs()  # counted as parse_failures instead
    try:
        settings = LocomoSettings(backend, conversations, questions, max_sessions, max_turns, tuple(skip_category),
                                  max_new_tokens, top_k, raw_fallback=raw_fallback, threads=threads or None,
                                  compare=compare, db=str(db) if db else None)
        report = run_locomo(bundle, data, settings)
    except MemloraError as e:
        _fail(e)
    finally:
        restore_logs()
    for table in locomo_tables(report):
        _wide().print(table)
    if out is not None:
        out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        typer.echo(f"wrote {out}")
    if "parity" in report and not report["parity"]["all_identical"]:
        raise typer.Exit(1)


def locomo_tables(report: dict) -> list[Table]:
    """Scores and store per runtime; time per operation; task-level parity (with --compare)."""
    s, res = report["settings"], report["results"]
    title = (f"LoCoMo {', '.join(s['conversation_ids'])} (max_new_tokens {s['max_new_tokens']}, sessions "
             f"{s['max_sessions'] or 'all'}, turns {s['max_turns'] or 'all'}, questions {s['questions'] or 'all'}, "
             f"threads {s['threads'] or 'default'})")
    scores = Table("runtime", "turns", "QA", "F1", "BLEU-1", "memories", "store KB", "wall s", title=title)
    for name, r in res.items():
        scores.add_row(name, str(r["turns"]), str(r["questions"]), f"{r['f1']:.3f}", f"{r['bleu1']:.3f}",
                       str(r["memories"]), f"{r['store_bytes'] / 1024:.0f}", f"{r['wall_s']:.1f}")
    times = Table("operation", *(f"{n} ms/call" for n in res), *(f"{n} decode ms/tok" for n in res),
                  "calls", title="time per operation")
    for op in ("extract", "update", "answer"):
        times.add_row(op, *(f"{r['ops'][op]['ms_per_call']:.1f}" for r in res.values()),
                      *(f"{r['ops'][op]['decode_ms_per_token']:.2f}" for r in res.values()),
                      str(next(iter(res.values()))["ops"][op]["calls"]))
    tables = [scores, times]
    if "parity" in report:
        par = Table("operation", "identical", "share", title=f"task-level parity {s['backend']} vs pytorch")
        for op in ("extract", "update", "answer"):
            p = report["parity"][op]
            par.add_row(op, f"{p['identical']}/{p['total']}", "-" if p["share"] is None else f"{p['share']:.0%}")
        tables.append(par)
    return tables


def main() -> None:
    """Console-script entry point."""
    import warnings

    # torch.export and its dependencies emit FutureWarnings about their own internals on every
    # export; they say nothing to a memlora user and bury the summary table.
    warnings.filterwarnings("ignore", category=FutureWarning)
    app()


if __name__ == "__main__":
    sys.exit(main())
