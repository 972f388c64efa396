"""``memlora distill`` data: teacher records tokenised into examples, and padded batches."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..memory.prompts import Op, Templates
from ._core import MemloraError
from .options import DistillConfig
from .records import SPLITS, BadLines, TeacherRecord, prompt_text, read_jsonl, target_text

IGNORE = -100


@dataclass(frozen=True)
class Example:
    record: TeacherRecord
    ids: list[int]
    n_prompt: int


@dataclass
class OpData:
    """One operation's examples per split, and what was left out."""

    train: list[Example]
    validation: list[Example]
    heldout: list[TeacherRecord]
    dropped_over_context: dict[str, int]
    skipped_lines: dict[str, list[tuple[int, str]]]


def _encode(record: TeacherRecord, tokenizer, templates: Templates, chat_format: str) -> tuple[list[int], list[int]]:
    prompt = tokenizer.encode(prompt_text(record, templates, chat_format), add_special_tokens=False).ids
    target = tokenizer.encode(target_text(record, chat_format), add_special_tokens=False).ids
    return prompt, target


def load_split(path: Path, op: Op, tokenizer, templates: Templates, chat_format: str, max_seq_len: int,
               bad_lines: BadLines, line_numbers: bool = True) -> tuple[list[Example], int, list[tuple[int, str]]]:
    """Examples of ``op`` in one teacher file; returns (examples, dropped over context, skipped lines).

    A target that alone does not fit in ``max_seq_len`` is bad input (fatal, or skipped with
    ``BadLines.SKIP``); a prompt + target over the limit is dropped and counted."""
    records, report = read_jsonl(path, bad_lines)
    out, over = [], 0
    skipped = list(report.skipped)
    lines = _op_lines(path, records)
    for rec in records:
        if rec.op is not op:
            continue
        prompt, target = _encode(rec, tokenizer, templates, chat_format)
        if len(target) >= max_seq_len:
            msg = (f"line {lines.get(rec.id, '?')}: {op.value} target of {len(target)} tokens is longer than the "
                   f"context ({max_seq_len} tokens)")
            if bad_lines is BadLines.FAIL:
                raise MemloraError(msg, path, "shorten or drop that record, raise --max-seq-len, or pass --bad-lines skip")
            skipped.append((lines.get(rec.id, 0), msg.split(": ", 1)[1]))
            continue
        if len(prompt) + len(target) > max_seq_len:
            over += 1
            continue
        out.append(Example(rec, prompt + target, len(prompt)))
    return out, over, skipped


def _op_lines(path: Path, records: Sequence[TeacherRecord]) -> dict[str, int]:
    """Record id -> line number (for messages); ids are unique in memlora's own teacher files."""
    ids = {r.id for r in records if r.id}
    found: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rid = json.loads(line).get("id")
            except (json.JSONDecodeError, AttributeError):
                continue
            if rid in ids:
                found.setdefault(rid, n)
    return found


def load_op_data(cfg: DistillConfig, op: Op, tokenizer, templates: Templates, chat_format: str,
                 max_seq_len: int) -> OpData:
    """``op``'s examples in every split of ``cfg.teacher`` (the train split sampled down to ``max_train_examples``)."""
    parts, over, skipped = {}, {}, {}
    for split in SPLITS:
        path = cfg.teacher / f"{split}.jsonl"
        exs, over[split], skipped[split] = load_split(path, op, tokenizer, templates, chat_format, max_seq_len,
                                                      cfg.bad_lines)
        if not exs:
            raise MemloraError(f"no usable {op.value} records in {split}.jsonl"
                               + (f" ({over[split]} longer than the {max_seq_len}-token context)" if over[split] else ""),
                               path, f"add {op.value} records to every split, or train another --op")
        parts[split] = exs
    train = parts["train"]
    if cfg.train.max_train_examples is not None:
        train = random.Random(cfg.train.seed).sample(train, min(len(train), cfg.train.max_train_examples))
    return OpData(train, parts["validation"], [e.record for e in parts["heldout"]], over, skipped)


def _batch(examples: Sequence[Example], pad_id: int, device):
    import torch

    n = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        t = torch.tensor(e.ids)
        ids[i, : len(t)] = t
        mask[i, : len(t)] = 1
        labels[i, e.n_prompt: len(t)] = t[e.n_prompt:]
    return ids.to(device), mask.to(device), labels.to(device)
