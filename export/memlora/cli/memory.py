"""Verbs of the memory loop on a bundle: chat, memories, locomo."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ..core.errors import MemloraError
from .app import _fail, _wide, app, console


@app.command()
def chat(
    bundle: Path = typer.Argument(..., help="Bundle folder written by memlora export."),
    backend: str = typer.Option("onnx", help="Runtime: onnx, executorch, coreml or pytorch (eager reference)."),
    db: Path = typer.Option(Path("memories.db"), help="SQLite memory store (created if missing)."),
    user: str = typer.Option("user", help="Whose memories to use."),
    raw_fallback: bool = typer.Option(False, help="Store a line verbatim when the model extracts nothing valid "
                                                  "(needed with the random-weight presets, whose output never parses)."),
    max_new_tokens: int = typer.Option(64, help="Token budget of each generation (1..4096)."),
    programs: str = typer.Option("auto", help="ExecuTorch adapter programs kept loaded: auto (all when they fit "
                                              "in memory), all, or one (a switch reloads)."),
) -> None:
    """Talk to the memory loop: each line is remembered, then answered from memory."""
    from ..chat import ChatOptions, quiet_loop_logs, run_chat
    from ..memory import MemoryStore
    from ..runtime import open_bundle

    session = store = None
    try:
        if not 1 <= max_new_tokens <= 4096:
            raise MemloraError(f"--max-new-tokens {max_new_tokens} is out of range", fix="use 1..4096")
        session = open_bundle(bundle, backend, programs=programs)
        session.loop(MemoryStore(":memory:"))  # adapters the loop needs, before the store is touched
        for failure in session.file_failures():
            console.print(f"[yellow]warning:[/yellow] {bundle}: {failure}", highlight=False, soft_wrap=True)
        if "preset" in (session.manifest.get("model", {}).get("source") or {}) and not raw_fallback:
            console.print("[yellow]note:[/yellow] this bundle's model has random weights: its extractions never "
                          "parse, so nothing is stored -- pass --raw-fallback to store each line verbatim",
                          highlight=False, soft_wrap=True)
        store = MemoryStore(db)
    except MemloraError as e:
        if session is not None:
            session.close()
        _fail(e)
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
    history: bool = typer.Option(False, "--history", help="The ADD/UPDATE/DELETE history, old -> new text."),
    undo: bool = typer.Option(False, "--undo", help="Revert the newest update batch (one transaction)."),
    user: Optional[str] = typer.Option(None, help="Only this user's memories."),
    limit: int = typer.Option(50, help="At most this many rows."),
) -> None:
    """List, search, show the history of, delete or undo stored memories (reading never writes)."""
    from ..memory import MemoryStore

    try:
        writes = delete is not None or undo
        with MemoryStore(db, readonly=not writes) as store:
            if delete is not None:
                _delete(store, db, delete, user)
            elif undo:
                reverted = store.undo_last()
                typer.echo(f"undid {len(reverted)} event(s)" if reverted else "nothing to undo")
                for op in reverted:
                    typer.echo(f"  {op.event.value} {op.memory_id}: {printable_pair(op.old_text, op.new_text)}")
            elif history:
                _wide().print(_history_table(store, db, limit))
            else:
                _wide().print(_memory_table(store, db, search, user, limit))
    except MemloraError as e:
        _fail(e)


def printable_pair(old: str | None, new: str | None) -> str:
    """``old -> new`` with control and bidi characters escaped."""
    from ..memory.display import printable

    return f"{printable(old) if old is not None else '-'} -> {printable(new) if new is not None else '-'}"


def _delete(store, db: Path, prefix: str, user: str | None) -> None:
    ids = [m.id for m in store.list(user) if m.id.startswith(prefix)] if prefix else []
    if len(ids) != 1:
        raise MemloraError(f"{'no' if not ids else 'more than one'} memory with id {prefix!r}",
                           db, "copy an id from `memlora memories FILE`")
    store.delete(ids[0])
    typer.echo(f"deleted {ids[0]} (memlora memories {db} --undo restores it)")


def _memory_table(store, db: Path, search: str | None, user: str | None, limit: int) -> Table:
    from ..memory.display import printable

    if search is not None:
        rows = [(h.memory, f"{h.score:.3f}") for u in ([user] if user else store.users())
                for h in store.search(search, u, limit)]
        rows.sort(key=lambda r: -float(r[1]))
    else:
        rows = [(m, "") for m in store.list(user, limit)]
    table = Table("id", "user", "updated", "text", *(["score"] if search is not None else []),
                  title=f"{db}: {store.count(user)} memories" + (f" of {user}" if user else ""))
    for m, score in rows[:limit]:
        table.add_row(m.id, printable(m.user), m.updated_at, printable(m.text), *([score] if search is not None else []))
    return table


def _history_table(store, db: Path, limit: int) -> Table:
    entries = store.history()[-limit:]
    table = Table("batch", "at", "event", "memory", "old -> new", "actor", title=f"{db}: history (newest last)")
    for h in entries:
        table.add_row(str(h.batch or "-"), h.at, h.event + (" (undone)" if h.undone else ""), h.memory_id[:8],
                      printable_pair(h.old_text, h.new_text), h.actor)
    return table


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


_CATEGORIES = {"1": "multi-hop", "2": "temporal", "3": "open-domain", "4": "single-hop", "5": "adversarial"}


def _category_table(res: dict) -> Table:
    """F1 / BLEU-1 per LoCoMo QA category, one column pair per runtime."""
    cats = sorted({c for r in res.values() for c in r.get("by_category", {})})
    table = Table("category", *(f"{n} F1" for n in res), *(f"{n} BLEU-1" for n in res), "QA",
                  title="scores per category")
    for c in cats:
        rows = [r.get("by_category", {}).get(c, {}) for r in res.values()]
        table.add_row(f"{c} {_CATEGORIES.get(c, '')}".strip(), *(f"{x.get('f1', 0):.3f}" for x in rows),
                      *(f"{x.get('bleu1', 0):.3f}" for x in rows), str(rows[0].get("n", 0)))
    return table


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
    tables = [scores, _category_table(res), times]
    if "parity" in report:
        par = Table("operation", "identical", "share", title=f"task-level parity {s['backend']} vs pytorch")
        for op in ("extract", "update", "answer"):
            p = report["parity"][op]
            par.add_row(op, f"{p['identical']}/{p['total']}", "-" if p["share"] is None else f"{p['share']:.0%}")
        tables.append(par)
    return tables
