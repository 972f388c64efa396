"""Verbs of the memory loop on a bundle: chat, memories, locomo."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..core.errors import MemloraError
from .app import _fail, _wide, app


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
