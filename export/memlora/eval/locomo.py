"""``memlora locomo``: the MemLoRA memory loop on LoCoMo, on an exported bundle.

For each conversation, every turn of every session (up to ``max_sessions`` / ``max_turns``) is
ingested for its speaker (extract, then update against that speaker's memories) with the session's
date as timestamp; then each QA item (category 5, adversarial, skipped by default) is answered from
both speakers' memories and scored with token F1 and BLEU-1 per category.

With ``compare="pytorch"`` the same run is repeated on the PyTorch eager reference (PEFT) and
**task-level parity** is reported: the share of extract outputs, update outputs and answers whose
raw generated text is identical between the backend and PyTorch (matched by call order; a run that
diverges makes different calls, and every unmatched call counts as different).

Random-weight presets generate garbage that never parses, so nothing would ever be stored:
``raw_fallback`` stores a turn verbatim when the model yields nothing valid, so retrieval and
answering are still exercised. Generation is greedy; ``max_new_tokens`` caps every operation.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ..core.errors import MemloraError


@dataclass(frozen=True)
class LocomoSettings:
    """What a run did; reported with the results."""

    backend: str = "onnx"
    conversations: int = 1
    questions: int | None = None
    max_sessions: int | None = None
    max_turns: int | None = None
    skip_categories: tuple[int, ...] = (5,)
    max_new_tokens: int = 48
    answer_top_k: int = 30
    update_top_k: int = 5
    raw_fallback: bool = True
    threads: int | None = 1
    compare: str | None = None  # "pytorch": also run the eager reference, report task-level parity
    db: str | None = None  # keep the backend's store in this new SQLite file

    def __post_init__(self) -> None:
        if self.compare not in (None, "pytorch"):
            raise MemloraError(f"unknown --compare {self.compare!r}", fix="use --compare pytorch")
        for name in ("conversations", "max_new_tokens", "answer_top_k", "update_top_k"):
            if getattr(self, name) < 1:
                raise MemloraError(f"--{name.replace('_', '-')} must be >= 1")
        for name in ("questions", "max_sessions", "max_turns"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise MemloraError(f"--{name.replace('_', '-')} must be >= 1")


@dataclass
class RunRecord:
    """Raw outputs in call order (for parity) plus the scored answers."""

    outputs: dict[str, list[str]] = field(default_factory=lambda: {"extract": [], "update": [], "answer": []})
    scores: list[tuple[int, float, float]] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)
    stored: dict[str, int] = field(default_factory=dict)
    """Turns by where their stored text came from (``IngestResult.stored_from``)."""
    events: dict[str, int] = field(default_factory=dict)
    """Store events applied while ingesting, by event (ADD, UPDATE, DELETE, NONE)."""


def _load(data_path: str | Path, n: int):
    from ..memory.locomo import load_locomo

    path = Path(data_path)
    if not path.is_file():
        raise MemloraError("LoCoMo file not found", path, "pass --data locomo10.zip or a LoCoMo .json")
    try:
        convs = load_locomo(path)
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise MemloraError(f"not a LoCoMo file ({type(e).__name__}: {str(e)[:200]})", path,
                           "pass the snap-research/locomo data (.zip of per-conversation JSON or locomo10.json)") from None
    if not convs:
        raise MemloraError("no conversations in the file", path, "pass a non-empty LoCoMo file")
    return convs[:n]


def _date(session) -> str:
    return session.date_time or f"session {session.index}"


def run_backend(bundle: Path, conversations: Sequence, backend: str, s: LocomoSettings,
                db: str | None, max_seq_len: int | None = None) -> tuple[dict, RunRecord]:
    """Ingest and answer ``conversations`` on one backend; return (summary, raw record).

    ``max_seq_len`` sets the runner's context limit: the reference run takes the compared
    backend's (a static KV cache truncates long prompts; the reference must truncate alike)."""
    from ..memory import GenerationSettings, LoopSettings, MemoryStore
    from ..runtime import open_bundle

    session = open_bundle(bundle, backend, threads=s.threads, max_seq_len=max_seq_len)
    gen = GenerationSettings(max_new_tokens=s.max_new_tokens, eos_ids=session.eos_ids)
    settings = LoopSettings(extract=gen, update=gen, answer=gen, update_top_k=s.update_top_k,
                            answer_top_k=s.answer_top_k)
    tmp = tempfile.TemporaryDirectory(prefix="memlora-locomo-") if db is None else None
    db_path = Path(tmp.name) / "memories.db" if tmp else Path(db)
    store = MemoryStore(db_path)
    loop = session.loop(store, settings)
    rec = RunRecord()
    t0 = time.perf_counter()
    try:
        turns, questions = _play(loop, conversations, s, rec)
        wall = time.perf_counter() - t0
        memories, history = store.count(), len(store.history())
        store.close()
        store_bytes = sum(p.stat().st_size for p in db_path.parent.glob(db_path.name + "*"))
        summary = {"backend": backend, "artifact": session.describe(), "max_seq_len": session.runner.max_seq_len,
                   "turns": turns, "questions": questions,
                   **_metrics(rec.scores), "ops": _ops(loop.stats_dict()), "memories": memories,
                   "history_events": history, "turns_stored_from": rec.stored, "events_applied": rec.events,
                   "store_bytes": store_bytes, "wall_s": round(wall, 2),
                   "examples": rec.examples}
    finally:
        session.close()
        if tmp:
            tmp.cleanup()
    return summary, rec


def _play(loop, conversations: Sequence, s: LocomoSettings, rec: RunRecord) -> tuple[int, int]:
    """Every turn ingested, then every question answered; raw outputs and scores go to ``rec``."""
    from ..memory import Op
    from ..memory.ingest import ingest
    from ..memory.metrics import score

    turns = questions = 0
    for conv in conversations:
        users = [f"{conv.sample_id}:{conv.speaker_a}", f"{conv.sample_id}:{conv.speaker_b}"]
        for sess in conv.sessions[: s.max_sessions]:
            for turn in sess.turns[: s.max_turns]:
                n_update = loop.stats[Op.UPDATE].calls
                res = ingest(loop, [_dialog(turn)], f"{conv.sample_id}:{turn.speaker}", at=_date(sess),
                             today=_date(sess), raw_fallback=s.raw_fallback)
                rec.stored[res.stored_from] = rec.stored.get(res.stored_from, 0) + 1
                for op in res.applied:
                    rec.events[op.event.value] = rec.events.get(op.event.value, 0) + 1
                rec.outputs["extract"].append(loop.last_raw[Op.EXTRACT])
                if loop.stats[Op.UPDATE].calls > n_update:
                    rec.outputs["update"].append(loop.last_raw[Op.UPDATE])
                turns += 1
        for q in [q for q in conv.qa if q.category not in s.skip_categories][: s.questions]:
            ans = loop.answer(q.question, users)
            rec.outputs["answer"].append(loop.last_raw[Op.ANSWER])
            sc = score(ans.text, q.answer)
            rec.scores.append((q.category, sc.f1, sc.bleu1))
            if len(rec.examples) < 5:
                rec.examples.append({"question": q.question, "gold": q.answer, "prediction": ans.text,
                                     "memories": len(ans.memories), "f1": sc.f1})
            questions += 1
    return turns, questions


def _dialog(turn):
    from ..memory import DialogTurn

    return DialogTurn(turn.speaker, turn.display_text())


def _metrics(scores: list[tuple[int, float, float]]) -> dict:
    by: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for cat, f1, b1 in scores:
        by[cat].append((f1, b1))

    def mean(xs: list[float]) -> float:
        return round(sum(xs) / len(xs), 4) if xs else 0.0

    return {"f1": mean([f for _, f, _ in scores]), "bleu1": mean([b for _, _, b in scores]),
            "by_category": {str(c): {"n": len(v), "f1": mean([f for f, _ in v]), "bleu1": mean([b for _, b in v])}
                            for c, v in sorted(by.items())}}


def _ops(stats: dict[str, dict[str, float]]) -> dict:
    out = {}
    for op, st in stats.items():
        calls = st["calls"] or 1
        out[op] = {"calls": st["calls"], "parse_failures": st["failures"],
                   "ms_per_call": round(1000 * st["total_s"] / calls, 2),
                   "prefill_ms_per_call": round(1000 * st["prefill_s"] / calls, 2),
                   "decode_ms_per_token": round(1000 * st["decode_s"] / max(st["new_tokens"], 1), 3),
                   "prompt_tokens_per_call": round(st["prompt_tokens"] / calls, 1),
                   "new_tokens_per_call": round(st["new_tokens"] / calls, 1)}
    return out


def task_parity(a: RunRecord, b: RunRecord) -> dict:
    """Per operation: how many raw outputs are identical (by call order) out of the larger count."""
    out = {}
    for op in ("extract", "update", "answer"):
        xs, ys = a.outputs[op], b.outputs[op]
        total = max(len(xs), len(ys))
        same = sum(x == y for x, y in zip(xs, ys))
        first = next((i for i, (x, y) in enumerate(zip(xs, ys)) if x != y), None)
        out[op] = {"identical": same, "total": total, "share": round(same / total, 4) if total else None,
                   "first_difference": None if first is None else {"index": first, "backend": xs[first][:200],
                                                                   "pytorch": ys[first][:200]}}
    out["all_identical"] = all(v["identical"] == v["total"] for v in out.values() if isinstance(v, dict))
    return out


def run_locomo(bundle: str | Path, data_path: str | Path, settings: LocomoSettings | None = None) -> dict:
    """Run LoCoMo on ``bundle`` with ``settings.backend``; with ``compare="pytorch"`` add
    task-level parity.

    Returns ``{"settings", "results": {backend: summary[, "pytorch": summary]}, "parity"?}``.
    ``settings.db`` keeps the backend's store in that SQLite file (the reference run always uses a
    temp one).
    """
    s = settings or LocomoSettings()
    convs = _load(data_path, s.conversations)
    if s.db is not None and Path(s.db).exists():
        raise MemloraError("--db file already exists", s.db, "pass a new path (a run starts from an empty store)")
    meta = {k: v for k, v in asdict(s).items() if k not in ("compare", "db")}
    report: dict = {"settings": meta | {"data": str(data_path), "bundle": str(bundle),
                                        "conversation_ids": [c.sample_id for c in convs], "cpu_count": os.cpu_count()},
                    "results": {}}
    summary, rec = run_backend(Path(bundle), convs, s.backend, s, s.db)
    report["results"][s.backend] = summary
    if s.compare:
        ref_summary, ref = run_backend(Path(bundle), convs, "pytorch", s, None, summary["max_seq_len"])
        report["results"]["pytorch"] = ref_summary
        report["parity"] = task_parity(rec, ref)
    return report
