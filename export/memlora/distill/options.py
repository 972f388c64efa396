"""``memlora distill`` options: which adapter(s), the LoRA shape, optimisation, the run itself."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from ..memory.prompts import Op
from ._core import ATTN, MLP, MemloraError
from .records import SPLITS, BadLines


class OpChoice(str, Enum):
    """Which adapter(s) to train."""

    EXTRACT = "extract"
    UPDATE = "update"
    ANSWER = "answer"
    ALL = "all"

    def ops(self) -> list[Op]:
        return list(Op) if self is OpChoice.ALL else [Op(self.value)]


class Device(str, Enum):
    AUTO = "auto"
    """CUDA when present, else CPU."""
    CPU = "cpu"
    CUDA = "cuda"


def _enum(enum: type[Enum], value: Any, flag: str) -> Enum:
    if isinstance(value, enum):
        return value
    try:
        return enum(value)
    except ValueError:
        raise MemloraError(f"unknown {flag} {value!r}",
                           fix=f"use one of: {', '.join(e.value for e in enum)}") from None


@dataclass(frozen=True)
class LoraOptions:
    """The adapter's shape: rank, alpha, target modules, dropout."""

    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ATTN + MLP
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha <= 0:
            raise MemloraError(f"--rank {self.rank} / --alpha {self.alpha} must be positive", fix="e.g. --rank 8 --alpha 16")
        object.__setattr__(self, "targets", tuple(self.targets))
        if not self.targets or any(not t.replace("_", "").isalnum() for t in self.targets):
            raise MemloraError(f"bad --targets {','.join(self.targets)!r}",
                               fix="name linear modules, e.g. q_proj,k_proj,v_proj,o_proj")
        if not 0 <= self.dropout < 1:
            raise MemloraError(f"--dropout {self.dropout} is not in [0, 1)", fix="e.g. --dropout 0.05")


@dataclass(frozen=True)
class TrainOptions:
    """Optimisation and evaluation settings, the same for every operation."""

    learning_rate: float = 2e-3
    steps: int = 300
    batch_size: int = 4
    warmup_steps: int = 10
    weight_decay: float = 0.0
    eval_every: int = 50
    val_examples: int = 64
    """Validation records for the loss (the first ones)."""
    eval_examples: int = 8
    """Validation records generated for the op's metric at each evaluation."""
    heldout_examples: int | None = 32
    """Held-out records scored before and after (``None``: all)."""
    patience: int = 3
    max_seq_len: int | None = None
    """Context limit for prompt + target (default: the model's ``max_position_embeddings``)."""
    max_new_tokens: int | None = None
    """Generation budget in evaluation (default: the longest training target + 16, at most 256)."""
    max_train_examples: int | None = None
    share_prefix: bool = True
    """Compute the template head all examples share once per batch (same loss, several times faster)."""
    seed: int = 0
    device: Device = Device.AUTO
    threads: int | None = 1
    """CPU threads for torch (``None``: torch's default). One is fastest for tiny models and on a
    shared machine (measured here: 12x faster generation than two threads on a loaded 2-core box)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", _enum(Device, self.device, "--device"))
        if not (0 < self.learning_rate < 1 and math.isfinite(self.learning_rate)):
            raise MemloraError(f"--learning-rate {self.learning_rate} is out of range", fix="e.g. --learning-rate 2e-3")
        for name in ("steps", "batch_size", "eval_every", "val_examples", "eval_examples", "patience"):
            if getattr(self, name) < 1:
                raise MemloraError(f"--{name.replace('_', '-')} must be >= 1", fix="pass a positive number")
        for name in ("heldout_examples", "max_seq_len", "max_new_tokens", "max_train_examples", "threads"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise MemloraError(f"--{name.replace('_', '-')} must be >= 1", fix="pass a positive number or leave it out")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise MemloraError("--warmup-steps and --weight-decay must be >= 0", fix="pass 0 or more")


@dataclass(frozen=True)
class DistillConfig:
    """One ``memlora distill`` run: model, teacher folder, output folder, what and how to train."""

    model: Path
    teacher: Path
    out: Path
    op: OpChoice = OpChoice.ALL
    lora: LoraOptions = field(default_factory=LoraOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    bad_lines: BadLines = BadLines.FAIL
    force: bool = False
    op_train: dict[str, TrainOptions] = field(default_factory=dict)
    """Per-operation replacements of ``train`` (a preset whose update op needs more steps)."""
    templates: Path | None = None
    """Prompt templates folder (default: memlora's own, which ``memlora export`` ships in the
    bundle's ``prompts/``); train with the templates the runtime will load."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", _enum(OpChoice, self.op, "--op"))
        object.__setattr__(self, "bad_lines", _enum(BadLines, self.bad_lines, "--bad-lines"))
        bad = [k for k in self.op_train if k not in {o.value for o in Op}]
        if bad:
            raise MemloraError(f"unknown op(s) {', '.join(bad)} in per-op options", fix="use extract, update, answer")
        for name in ("model", "teacher", "out"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if not self.teacher.is_dir():
            raise MemloraError("teacher folder not found", self.teacher,
                               "run `memlora teacher locomo DATA.zip --out DIR` and pass --teacher DIR")
        for split in SPLITS:
            if not (self.teacher / f"{split}.jsonl").is_file():
                raise MemloraError(f"teacher folder has no {split}.jsonl", self.teacher,
                                   "write train.jsonl, validation.jsonl and heldout.jsonl (memlora teacher does)")

    def for_op(self, op: Op) -> "DistillConfig":
        """This run with ``op``'s own training options, if it has any."""
        return replace(self, train=self.op_train[op.value]) if op.value in self.op_train else self
