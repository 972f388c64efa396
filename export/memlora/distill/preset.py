"""``tiny-qwen2-distilled``: the tiny default model with three adapters distilled from LoCoMo.

The base is ``tiny-qwen2``'s shape (2 layers, 64 wide, a 1,024-token BPE), drawn at HF's default
initialisation and then warmed up for a few CPU minutes on the train split's dialogue
(``warmup.py``: next-token loss plus repeated random tokens, so it learns in-context copying) as a
stand-in for the pretrained small model MemLoRA starts from. A frozen random base cannot copy a
name or a phrase out of a turn, and its adapters wrote one constant fact for every turn.

What distillation then teaches in a few CPU minutes is the *form* of each operation's output
(valid ``{"facts": [...]}`` and ``{"memory": [...]}`` JSON, short answers, stopping at end of
turn) and what a 2-layer model can copy (the speaker's name, words of the turn, a fact into an
update event), not understanding: fact F1 and answer F1 stay low and say how often its facts
overlap the teacher's. The point is a memory loop that really stores per-turn facts and applies
events, end to end on every backend, not a useful assistant.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._core import MemloraError
from .teacher import TeacherSettings, read_locomo, split_conversations, teacher_locomo
from .train import DistillConfig, LoraOptions, OpChoice, TrainOptions, distill
from .warmup import WarmupOptions, warm_base


@dataclass(frozen=True)
class DistilledPreset:
    """A built-in base preset plus how to distill its adapters from the LoCoMo teacher."""

    name: str
    base: str
    base_config: dict = field(default_factory=dict)
    """Config fields the base is written with instead of its preset's (see :func:`write_preset`)."""
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    lora: LoraOptions = field(default_factory=LoraOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    op_train: dict = field(default_factory=dict)
    """``TrainOptions`` fields that differ per operation (op name -> {field: value})."""
    warmup: WarmupOptions = field(default_factory=lambda: WarmupOptions(steps=0))
    """The base's warm-up on the train split's dialogue before distillation (``steps=0``: none)."""
    description: str = ""


DISTILLED_PRESETS: dict[str, DistilledPreset] = {p.name: p for p in (
    # 4,096 positions: with the 1,024-token BPE an update prompt is 1,781-2,756 tokens (the
    # template alone ~1,720), so 2,048 would drop 95% of the update records. initializer_range
    # 0.02 (tiny-qwen2 draws at 0.08): from 0.08 the warm-up never learned to copy (warmup.py).
    DistilledPreset("tiny-qwen2-distilled", "tiny-qwen2",
                    base_config={"max_position_embeddings": 4096, "initializer_range": 0.02},
                    warmup=WarmupOptions(),
                    lora=LoraOptions(rank=16, alpha=32),
                    train=TrainOptions(learning_rate=1e-2, steps=400, batch_size=4, eval_every=100,
                                       eval_examples=4, heldout_examples=16, patience=2),
                    # Extract's loss still falls at 1,200 steps (words of the turn start to be copied
                    # around 1,000). Update copies a whole fact between fixed JSON: its loss drops
                    # from 2.8 to 0.85 around step 400 and its parse rate follows only by 700-900,
                    # so it trains longer, is scored on 8 examples, and is not stopped early on a
                    # noisy 4-example parse rate.
                    op_train={"extract": {"steps": 1200, "eval_every": 200, "eval_examples": 8, "patience": 20},
                              "update": {"steps": 1000, "eval_examples": 8, "patience": 20}},
                    description="tiny-qwen2 with extract/update/answer adapters distilled from LoCoMo "
                                "(needs --data locomo10.zip; about 25 min on a 2-core CPU)"),
)}


def write_distilled_preset(name: str, out: str | Path, data: str | Path, *, steps: int | None = None,
                           show_progress: bool = True) -> tuple[Path, dict[str, Path], dict[str, Any]]:
    """Write ``out/model``, ``out/teacher`` and ``out/adapters/{extract,update,answer}``.

    ``data`` is the LoCoMo file (read, never copied). Returns the model folder, the adapter
    folders and the distill report (before/after held-out metrics, timings). On an error the
    folder is left as empty as it was found."""
    if name not in DISTILLED_PRESETS:
        raise MemloraError(f"unknown distilled preset {name!r}", fix=f"use one of: {', '.join(DISTILLED_PRESETS)}")
    p = DISTILLED_PRESETS[name]
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise MemloraError("output folder exists and is not empty", out, "choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _build(p, out, data, steps, show_progress)
    except BaseException:  # the folder was empty: leave nothing half-written (a base without adapters)
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise


def _build(p: DistilledPreset, out: Path, data: str | Path, steps: int | None,
           show_progress: bool) -> tuple[Path, dict[str, Path], dict[str, Any]]:
    from ..sources.presets import write_preset

    with tempfile.TemporaryDirectory(prefix=".base-", dir=out) as tmp:
        model_dir, _random_adapters = write_preset(p.base, tmp, p.base_config)
        shutil.move(str(model_dir), out / "model")
    warmup = _warm_up(p, out / "model", data, steps, show_progress)
    teacher_locomo(data, out / "teacher", p.teacher)
    train = p.train if steps is None else replace(p.train, steps=steps)
    op_train = {} if steps is not None else {op: replace(p.train, **kw) for op, kw in p.op_train.items()}
    report = distill(DistillConfig(model=out / "model", teacher=out / "teacher", out=out / "adapters",
                                   op=OpChoice.ALL, lora=p.lora, train=train, op_train=op_train),
                     show_progress=show_progress)
    report["warmup"] = warmup
    return out / "model", {op: out / "adapters" / op for op in report["ops"]}, report


def _warm_up(p: DistilledPreset, model_dir: Path, data: str | Path, steps: int | None,
             show_progress: bool) -> dict[str, Any] | None:
    """Warm the base up on the teacher's train split (the same split the adapters train on)."""
    n = p.warmup.steps if steps is None else min(steps, p.warmup.steps)  # a smoke run warms up as briefly
    opts = replace(p.warmup, steps=n, copy_steps=min(n, p.warmup.copy_steps))
    if opts.steps == 0:
        return None
    splits = split_conversations(read_locomo(data), p.teacher)
    return warm_base(model_dir, [i.conversation for i in splits["train"]],
                     [i.conversation for i in splits["validation"]], opts, show_progress, source=data)
