"""One chat step and one ingest with an optional verbatim fallback, over a :class:`MemoryLoop`."""
from __future__ import annotations

from typing import Sequence

from .loop import IngestResult
from .parsing import Event, UpdateOp
from .prompts import DialogTurn


def ingest(loop, turns: Sequence[DialogTurn], user: str, at: str | None = None, today: str | None = None,
           raw_fallback: bool = False) -> IngestResult:
    """``loop.ingest_turn`` plus an optional verbatim fallback (see :func:`remember_and_answer`)."""
    if not raw_fallback:
        return loop.ingest_turn(turns, user, at=at, today=today)
    extracted = loop.extract(turns, today=today)
    facts = extracted.facts or ([turns[-1].text] if turns[-1].text.strip() else [])
    applied = loop.update(facts, user, at=at)
    errors = list(extracted.errors) + list(loop.last_errors)
    stored_from = "model" if extracted.facts else "raw-turn"
    if not applied and errors:
        applied = loop.store.apply([UpdateOp(Event.ADD, None, f) for f in facts], user, loop.embedder,
                                   at=at, actor="fallback").applied
        stored_from = "verbatim-facts" if extracted.facts else "raw-turn"
    return IngestResult(facts, applied, errors, stored_from)


def remember_and_answer(loop, text: str, user: str, raw_fallback: bool = False,
                        at: str | None = None, today: str | None = None):
    """One chat step: store what ``text`` says (extract, update), then answer it from memory.

    Returns ``(ingest_result, answer)``. With ``raw_fallback``, a turn the model extracts nothing
    valid from is stored verbatim (useful with random-weight models, whose output never parses).
    """
    result = ingest(loop, [DialogTurn(user, text)], user, at=at, today=today, raw_fallback=raw_fallback)
    return result, loop.answer(text, user)
