"""Lenient parsing and strict validation of untrusted model output.

A small model's reply may wrap its JSON in a code fence, add prose before or after it, or be
garbage. :func:`find_json_object` digs out the first JSON object that parses; the ``parse_*``
functions then validate it item by item. Nothing here raises on bad model output: invalid items
are dropped and described in ``errors``.

Update operations may only touch memories the prompt showed: the prompt lists them under small
ids ("0", "1", ...) through an :class:`IdMap`, and an op naming any other id is rejected, so a
hostile output cannot update or delete a memory it was never given.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable

MAX_INPUT_CHARS = 32_768
MAX_TEXT_CHARS = 2_000
_MAX_CANDIDATES = 32
_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)


class Event(str, Enum):
    ADD = "ADD"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    NONE = "NONE"


@dataclass
class ExtractResult:
    facts: list[str]
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class UpdateOp:
    """A validated operation. ``id`` is the real memory id (``None`` for ADD)."""

    event: Event
    id: str | None
    text: str
    old_memory: str | None = None


@dataclass
class UpdateResult:
    ops: list[UpdateOp]
    errors: list[str] = field(default_factory=list)


class IdMap:
    """Two-way map between the small ids shown to the model and real memory ids."""

    def __init__(self, real_ids: Iterable[str] = ()):
        self._to_real: dict[str, str] = {}
        self._to_short: dict[str, str] = {}
        for rid in real_ids:
            self.add(rid)

    def add(self, real_id: str) -> str:
        """Register ``real_id`` (idempotent) and return its short id."""
        if real_id not in self._to_short:
            short = str(len(self._to_real))
            self._to_real[short] = real_id
            self._to_short[real_id] = short
        return self._to_short[real_id]

    def short(self, real_id: str) -> str:
        return self._to_short[real_id]

    def real(self, short_id: str) -> str | None:
        """The real id for ``short_id``, or ``None`` if the prompt never showed it."""
        return self._to_real.get(short_id)

    def real_ids(self) -> list[str]:
        return list(self._to_real.values())

    def items(self) -> list[tuple[str, str]]:
        """``(short, real)`` pairs in prompt order."""
        return list(self._to_real.items())

    def __len__(self) -> int:
        return len(self._to_real)

    def __contains__(self, short_id: object) -> bool:
        return short_id in self._to_real


def _balanced_end(text: str, start: int) -> int | None:
    """Index one past the ``}`` closing the object opened at ``start``, string-aware."""
    depth, in_str, esc = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1 if c == "}" else None
            if depth < 0:
                return None
    return None


def find_json_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """Return ``(obj, None)`` for the first JSON object in ``text``, else ``(None, reason)``.

    Fenced blocks are tried first, then the whole text, then each balanced ``{...}`` span in
    order. Input beyond :data:`MAX_INPUT_CHARS` is ignored.
    """
    if not isinstance(text, str):
        return None, f"expected text, got {type(text).__name__}"
    text = text[:MAX_INPUT_CHARS]
    sources = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    tried = 0
    for src in sources:
        try:
            obj = json.loads(src)
            if isinstance(obj, dict):
                return obj, None
        except (ValueError, RecursionError):
            pass
        pos = src.find("{")
        while pos != -1 and tried < _MAX_CANDIDATES:
            tried += 1
            end = _balanced_end(src, pos)
            if end is not None:
                try:
                    obj = json.loads(src[pos:end])
                    if isinstance(obj, dict):
                        return obj, None
                except (ValueError, RecursionError):
                    pass
            pos = src.find("{", pos + 1)
    return None, "no JSON object found in model output"


def _text(value: Any) -> str | None:
    """A usable memory text: a non-empty, not over-long string, whitespace-trimmed."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if 0 < len(value) <= MAX_TEXT_CHARS else None


def parse_extract(output: str) -> ExtractResult:
    """Parse ``{"facts": [str, ...]}``; bad items are dropped, duplicates removed."""
    obj, err = find_json_object(output)
    if obj is None:
        return ExtractResult([], [err or "no object"])
    facts_raw = obj.get("facts")
    if not isinstance(facts_raw, list):
        return ExtractResult([], [f"'facts' is not a list: {type(facts_raw).__name__}"])
    facts: list[str] = []
    errors: list[str] = []
    for i, item in enumerate(facts_raw):
        fact = _text(item)
        if fact is None:
            errors.append(f"facts[{i}]: not a non-empty string of at most {MAX_TEXT_CHARS} chars")
        elif fact not in facts:
            facts.append(fact)
    return ExtractResult(facts, errors)


def parse_update(output: str, id_map: IdMap) -> UpdateResult:
    """Parse ``{"memory": [{"id", "text", "event", "old_memory"?}, ...]}`` against ``id_map``.

    ADD needs a text (its id is ignored: the store assigns one); UPDATE needs a known id and a
    text; DELETE and NONE need a known id. Only the first op on a given id is kept.
    """
    obj, err = find_json_object(output)
    if obj is None:
        return UpdateResult([], [err or "no object"])
    items = obj.get("memory")
    if not isinstance(items, list):
        return UpdateResult([], [f"'memory' is not a list: {type(items).__name__}"])
    ops: list[UpdateOp] = []
    errors: list[str] = []
    touched: set[str] = set()
    added: set[str] = set()
    for i, item in enumerate(items):
        where = f"memory[{i}]"
        if not isinstance(item, dict):
            errors.append(f"{where}: not an object")
            continue
        raw_event = item.get("event")
        try:
            event = Event(raw_event.strip().upper()) if isinstance(raw_event, str) else None
        except ValueError:
            event = None
        if event is None:
            errors.append(f"{where}: bad event {str(raw_event)[:40]!r}")
            continue
        text = _text(item.get("text"))
        if event is Event.ADD:
            if text is None:
                errors.append(f"{where}: ADD without a usable text")
            elif text in added:
                errors.append(f"{where}: duplicate ADD")
            else:
                added.add(text)
                ops.append(UpdateOp(Event.ADD, None, text))
            continue
        raw_id = item.get("id")
        short = str(raw_id).strip() if isinstance(raw_id, (str, int)) and not isinstance(
            raw_id, bool) else None
        real = id_map.real(short) if short is not None else None
        if real is None:
            errors.append(f"{where}: {event.value} with unknown id {str(raw_id)[:40]!r}")
            continue
        if real in touched:
            errors.append(f"{where}: second operation on id {short!r}")
            continue
        if event is Event.UPDATE and text is None:
            errors.append(f"{where}: UPDATE without a usable text")
            continue
        touched.add(real)
        old = _text(item.get("old_memory")) if event is Event.UPDATE else None
        ops.append(UpdateOp(event, real, text or "", old))
    return UpdateResult(ops, errors)
