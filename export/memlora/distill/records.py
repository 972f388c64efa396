"""The teacher data format: one JSON object per line, one example of one memory operation.

A teacher file (``train.jsonl``, ``validation.jsonl``, ``heldout.jsonl`` in a teacher folder)
holds records of this shape::

    {"id": "locomo:26:D1:3:extract",
     "op": "extract" | "update" | "answer",
     "vars": {...},          # the template variables the runtime renders, per op (below)
     "output": "...",        # the teacher's raw text output, exactly what the student must write
     "source": {...}}        # where it came from: dataset, conversation, turn, teacher, rules

``vars`` per operation (the same values :mod:`memlora.memory.prompts` renders on the phone):

* ``extract``: ``{"turns": [{"speaker": str, "text": str}, ...], "today": str}``
* ``update``: ``{"old_memory": [{"id": "0", "text": str}, ...], "facts": [str, ...]}``; ids are
  the small ids the prompt shows, ``"0"``, ``"1"``, ... in order (the loop's :class:`IdMap`).
* ``answer``: ``{"memories": [{"timestamp": str, "text": str}, ...], "question": str}``

``output`` is raw text: Mem0's ``{"facts": [...]}`` for extract, ``{"memory": [...]}`` for
update, a few words for answer. ``source`` is free-form provenance; memlora's own LoCoMo teacher
writes ``dataset``, ``conversation``, ``teacher`` (``locomo-observation``, ``locomo-qa`` or
``rules``), ``rule_derived`` (true where the target was made by rules, not by an LLM) and the ids
of the turns or evidence behind it.

Prompts for training are rendered from ``vars`` by :func:`prompt_text` through the same template
and chat-format code the bundle ships; the target is ``output`` plus the chat format's end-of-turn
marker, so the adapter learns to stop where the runtime stops.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..memory.chat import get_format
from ..memory.parsing import IdMap
from ..memory.prompts import (DialogTurn, Op, Templates, answer_messages, extract_messages, render,
                              update_messages)
from ._core import MemloraError
from .record_filter import DropReason, FilterReport, check_output, filter_records

__all__ = ["FORMAT", "SPLITS", "BadLines", "DropReason", "FilterReport", "ReadReport", "RecordError", "TeacherRecord",
           "check_output", "file_sha256", "filter_records", "prompt_text", "read_jsonl", "target_text", "write_jsonl"]

FORMAT = "memlora-teacher/1"
SPLITS = ("train", "validation", "heldout")


class BadLines(str, Enum):
    """What to do with a malformed teacher line: stop with its line number, or skip and count it."""

    FAIL = "fail"
    SKIP = "skip"


class RecordError(ValueError):
    """A teacher record that does not follow the format (message says which field)."""


@dataclass(frozen=True)
class TeacherRecord:
    """One teacher example (see the module docstring for the fields)."""

    id: str
    op: Op
    vars: dict[str, Any]
    output: str
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_vars(self.op, self.vars)
        if not isinstance(self.output, str):
            raise RecordError(f"'output' must be a string, got {type(self.output).__name__}")

    @classmethod
    def from_json(cls, obj: Any) -> "TeacherRecord":
        if not isinstance(obj, dict):
            raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
        missing = [k for k in ("op", "vars", "output") if k not in obj]
        if missing:
            raise RecordError(f"missing field(s) {', '.join(missing)}")
        try:
            op = Op(obj["op"])
        except ValueError:
            raise RecordError(f"unknown op {str(obj['op'])[:40]!r} (expected one of: "
                              f"{', '.join(o.value for o in Op)})") from None
        source = obj.get("source") or {}
        if not isinstance(source, dict):
            raise RecordError("'source' must be an object")
        return cls(id=str(obj.get("id", "")), op=op, vars=obj["vars"], output=obj["output"],
                   source=source)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "op": self.op.value, "vars": self.vars, "output": self.output,
                "source": self.source}

    def messages(self, templates: Templates) -> list[dict[str, str]]:
        """The chat messages the runtime would build for this example."""
        v = self.vars
        if self.op is Op.EXTRACT:
            turns = [DialogTurn(t["speaker"], t["text"]) for t in v["turns"]]
            return extract_messages(templates, turns, v["today"])
        if self.op is Op.UPDATE:
            return update_messages(templates, [(m["id"], m["text"]) for m in v["old_memory"]],
                                   v["facts"])
        return answer_messages(templates, v["question"],
                               [(m["timestamp"], m["text"]) for m in v["memories"]])

    def id_map(self) -> IdMap:
        """Update records: the prompt's small ids, mapped to themselves."""
        return IdMap(m["id"] for m in self.vars.get("old_memory", []))

    def key(self) -> str:
        """Identity for de-duplication: op, variables and output."""
        return hashlib.sha256(json.dumps([self.op.value, self.vars, self.output], sort_keys=True,
                                         ensure_ascii=False).encode()).hexdigest()


def _strs(value: Any, where: str, allow_empty: bool = True) -> None:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise RecordError(f"vars.{where} must be a {'non-empty ' if not allow_empty else ''}string")


def _check_vars(op: Op, v: Any) -> None:
    if not isinstance(v, dict):
        raise RecordError("'vars' must be an object")
    if op is Op.EXTRACT:
        turns = v.get("turns")
        if not isinstance(turns, list) or not turns:
            raise RecordError("vars.turns must be a non-empty list of {speaker, text}")
        for i, t in enumerate(turns):
            if not isinstance(t, dict):
                raise RecordError(f"vars.turns[{i}] must be an object")
            _strs(t.get("speaker"), f"turns[{i}].speaker")
            _strs(t.get("text"), f"turns[{i}].text", allow_empty=False)
        _strs(v.get("today"), "today")
    elif op is Op.UPDATE:
        old, facts = v.get("old_memory"), v.get("facts")
        if not isinstance(old, list):
            raise RecordError("vars.old_memory must be a list of {id, text}")
        for i, m in enumerate(old):
            if not isinstance(m, dict) or m.get("id") != str(i):
                raise RecordError(f"vars.old_memory[{i}] must be an object with id {str(i)!r} "
                                  "(small ids in prompt order)")
            _strs(m.get("text"), f"old_memory[{i}].text", allow_empty=False)
        if not isinstance(facts, list) or not facts:
            raise RecordError("vars.facts must be a non-empty list of strings")
        for i, f in enumerate(facts):
            _strs(f, f"facts[{i}]", allow_empty=False)
    else:
        mems = v.get("memories")
        if not isinstance(mems, list):
            raise RecordError("vars.memories must be a list of {timestamp, text}")
        for i, m in enumerate(mems):
            if not isinstance(m, dict):
                raise RecordError(f"vars.memories[{i}] must be an object")
            _strs(m.get("timestamp"), f"memories[{i}].timestamp")
            _strs(m.get("text"), f"memories[{i}].text", allow_empty=False)
        _strs(v.get("question"), "question", allow_empty=False)


def prompt_text(record: TeacherRecord, templates: Templates, chat_format: str) -> str:
    """The exact prompt string the runtime feeds the model for ``record``."""
    return render(chat_format, record.messages(templates))


def target_text(record: TeacherRecord, chat_format: str) -> str:
    """What the student learns to generate: the teacher output, then the end-of-turn marker."""
    return record.output + get_format(chat_format).stop[0]


# -- files ---------------------------------------------------------------------------------------

@dataclass
class ReadReport:
    """What reading one file skipped (``BadLines.SKIP``): ``(line number, reason)`` pairs."""

    path: Path
    records: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)


def read_jsonl(path: str | Path, bad_lines: BadLines = BadLines.FAIL
               ) -> tuple[list[TeacherRecord], ReadReport]:
    """Read a teacher JSONL file. A malformed line (bad JSON, unknown op, wrong fields) stops the
    read with a :class:`MemloraError` naming its line number, or with ``BadLines.SKIP`` is
    skipped and reported. Blank lines are ignored."""
    path = Path(path)
    if not path.is_file():
        raise MemloraError("teacher file not found", path,
                           "run `memlora teacher locomo DATA.zip --out DIR` or point --teacher at its folder")
    report = ReadReport(path)
    records: list[TeacherRecord] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(TeacherRecord.from_json(json.loads(line)))
            except (json.JSONDecodeError, RecordError) as e:
                reason = f"not valid JSON ({e.msg})" if isinstance(e, json.JSONDecodeError) else str(e)
                if bad_lines is BadLines.FAIL:
                    raise MemloraError(f"line {n}: {reason}", path,
                                       "fix or remove that line, or pass --bad-lines skip") from None
                report.skipped.append((n, reason))
    report.records = len(records)
    return records, report


def write_jsonl(path: str | Path, records: Iterable[TeacherRecord]) -> int:
    """Write records one per line (UTF-8); return how many."""
    n = 0
    with Path(path).open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def file_sha256(paths: Sequence[Path]) -> str:
    """One hash over the bytes of ``paths`` in order (the training record's data hash)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode() + b"\0")
        h.update(Path(p).read_bytes())
    return h.hexdigest()
