"""``tiny-qwen2-distilled``: the tiny default model with three adapters distilled from LoCoMo.

The base is the seeded random ``tiny-qwen2`` preset (2 layers, 64 wide, a 1,024-token BPE). Its
weights know no language, so what distillation can teach it in a few CPU minutes is the *form*
of each operation's output (valid ``{"facts": [...]}`` and ``{"memory": [...]}`` JSON, short
answers, stopping at end of turn) and surface habits of the teacher (facts start with the
speaker's name, most update events are ADD), not understanding: parse rates rise to most
outputs, while fact F1 and answer F1 stay low and say how often the tiny model's facts happen to
overlap the teacher's. The point is a memory loop that really stores facts and applies events,
end to end on every backend, not a useful assistant.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._core import MemloraError
from .teacher import TeacherSettings, teacher_locomo
from .train import DistillConfig, LoraOptions, OpChoice, TrainOptions, distill


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
    op_steps: dict = field(default_factory=dict)
    """Steps for the operations that need other than ``train.steps`` (op name -> steps)."""
    description: str = ""


DISTILLED_PRESETS: dict[str, DistilledPreset] = {p.name: p for p in (
    # 4,096 positions: with the 1,024-token BPE an update prompt is 1,781-2,756 tokens (the
    # template alone ~1,720), so 2,048 would drop 95% of the update records. RoPE has no position
    # weights, so the base's weights are tiny-qwen2's, byte for byte.
    DistilledPreset("tiny-qwen2-distilled", "tiny-qwen2", base_config={"max_position_embeddings": 4096},
                    lora=LoraOptions(rank=16, alpha=32),
                    train=TrainOptions(learning_rate=1e-2, steps=400, batch_size=4, eval_every=100,
                                       eval_examples=4, heldout_examples=16, patience=2),
                    # Update's target copies a whole fact between fixed JSON: at 400 steps its text
                    # still loops instead of closing the string (parse rate 0), so it trains longer.
                    op_steps={"update": 800},
                    description="tiny-qwen2 with extract/update/answer adapters distilled from LoCoMo "
                                "(needs --data locomo10.zip; about 16 min on a busy 2-core CPU)"),
)}


def write_distilled_preset(name: str, out: str | Path, data: str | Path, *, steps: int | None = None,
                           show_progress: bool = True) -> tuple[Path, dict[str, Path], dict[str, Any]]:
    """Write ``out/model``, ``out/teacher`` and ``out/adapters/{extract,update,answer}``.

    ``data`` is the LoCoMo file (read, never copied). Returns the model folder, the adapter
    folders and the distill report (before/after held-out metrics, timings)."""
    from ..sources.presets import write_preset

    if name not in DISTILLED_PRESETS:
        raise MemloraError(f"unknown distilled preset {name!r}", fix=f"use one of: {', '.join(DISTILLED_PRESETS)}")
    p = DISTILLED_PRESETS[name]
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise MemloraError("output folder exists and is not empty", out, "choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".base-", dir=out) as tmp:
        model_dir, _random_adapters = write_preset(p.base, tmp, p.base_config)
        shutil.move(str(model_dir), out / "model")
    teacher_locomo(data, out / "teacher", p.teacher)
    train = p.train if steps is None else replace(p.train, steps=steps)
    op_train = {} if steps is not None else {op: replace(p.train, steps=n) for op, n in p.op_steps.items()}
    report = distill(DistillConfig(model=out / "model", teacher=out / "teacher", out=out / "adapters",
                                   op=OpChoice.ALL, lora=p.lora, train=train, op_train=op_train),
                     show_progress=show_progress)
    return out / "model", {op: out / "adapters" / op for op in report["ops"]}, report
