"""Filtering teacher records: drop unparseable, empty, duplicate and over-long targets, and count why."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Iterable

from ..memory.parsing import parse_extract, parse_update
from ..memory.prompts import Op

if TYPE_CHECKING:
    from .records import TeacherRecord


class DropReason(str, Enum):
    UNPARSEABLE = "unparseable"
    EMPTY = "empty_output"
    DUPLICATE = "duplicate"
    TOO_LONG = "target_too_long"


@dataclass
class FilterReport:
    """Per operation: how many records were kept and how many were dropped for each reason."""

    kept: Counter = field(default_factory=Counter)
    dropped: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    examples: dict[str, str] = field(default_factory=dict)

    def drop(self, record: TeacherRecord, reason: DropReason, detail: str = "") -> None:
        self.dropped[record.op.value][reason.value] += 1
        self.examples.setdefault(f"{record.op.value}/{reason.value}",
                                 f"{record.id}: {detail}"[:300])

    def as_dict(self) -> dict[str, Any]:
        ops = [o.value for o in Op]
        return {op: {"kept": self.kept[op], "dropped": dict(sorted(self.dropped[op].items()))}
                for op in ops} | {"drop_examples": dict(sorted(self.examples.items()))}

    def merge(self, other: "FilterReport") -> None:
        self.kept.update(other.kept)
        for op, c in other.dropped.items():
            self.dropped[op].update(c)
        for k, v in other.examples.items():
            self.examples.setdefault(k, v)


def check_output(record: TeacherRecord) -> str | None:
    """Why ``record.output`` fails memlora's own parser (``None`` when it parses cleanly)."""
    if not record.output.strip():
        return "empty"
    if record.op is Op.EXTRACT:
        res = parse_extract(record.output)
        return "; ".join(res.errors) or None
    if record.op is Op.UPDATE:
        res = parse_update(record.output, record.id_map())
        if res.errors:
            return "; ".join(res.errors)
        return None if res.ops else "no operation"
    return None


def filter_records(records: Iterable[TeacherRecord], max_target_chars: int,
                   report: FilterReport | None = None,
                   seen: set[str] | None = None) -> tuple[list[TeacherRecord], FilterReport]:
    """Drop records whose output does not parse with memlora's parser, is empty, repeats an
    earlier record (same op, variables and output; ``seen`` carries keys across splits), or is
    longer than ``max_target_chars``. Returns the kept records and the counts."""
    report = report if report is not None else FilterReport()
    seen = seen if seen is not None else set()
    kept = []
    for r in records:
        why = check_output(r)
        if why == "empty":
            report.drop(r, DropReason.EMPTY)
            continue
        if why is not None:
            report.drop(r, DropReason.UNPARSEABLE, why)
            continue
        if len(r.output) > max_target_chars:
            report.drop(r, DropReason.TOO_LONG, f"{len(r.output)} chars > {max_target_chars}")
            continue
        k = r.key()
        if k in seen:
            report.drop(r, DropReason.DUPLICATE)
            continue
        seen.add(k)
        report.kept[r.op.value] += 1
        kept.append(r)
    return kept, report
