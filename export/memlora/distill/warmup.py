"""Base warm-up: a short language-model pass over the training conversations' dialogue.

MemLoRA distils adapters onto a *pretrained* small model, one that can already read a turn and
copy a name or a phrase out of it. memlora's tiny presets are seeded random weights, which cannot
copy anything, and a LoRA adapter on a frozen random base does not learn to: last session's tiny
extract adapter wrote the same fact for every turn. The distilled preset therefore warms its base
up first, a stand-in for pretraining:

- full-parameter next-token loss on the dialogue text of the **train split only** (``Speaker: text``
  lines, one session per document); never observations, questions, answers, or the validation /
  held-out conversations;
- copying rows: runs of random tokens repeated to the row's length, which can only be predicted
  by copying from earlier in the context. The first ``copy_steps`` steps train on them alone,
  then they are ``copy_share`` of each batch beside dialogue windows. In-context copying
  (induction heads) forms within a few hundred steps: on copying rows alone the loss on a
  repeated dialogue window fell from 6.7 to 1.9 nats between steps 400 and 600, where dialogue
  alone had not formed it in 3,000.

The base must start from a small initialisation (``initializer_range`` 0.02, HF's default): from
the presets' 0.08 the same recipe had still not learned to copy after 2,000 steps.

What it records (``memlora_warmup.json`` beside the weights): steps, seconds, the validation
conversations' loss before / after, and the *copy gain* (loss on the first copy of a validation
window minus loss on its repeat: 0 for a base that cannot copy).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from ._core import MemloraError

WARMUP_RECORD = "memlora_warmup.json"


@dataclass(frozen=True)
class WarmupOptions:
    """How long and how hard the base is warmed up (``steps=0``: not at all)."""

    steps: int = 2000
    copy_steps: int = 800
    """The first steps train on copying rows only (half as long, twice as many), so induction forms
    before the dialogue rows can crowd it out; the rest mix dialogue and copying."""
    learning_rate: float = 2e-3
    seq_len: int = 256
    batch_size: int = 16
    copy_share: float = 0.5
    """Share of each batch after ``copy_steps`` that is random tokens repeated (the copying rows)."""
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.copy_steps <= self.steps or self.steps < 0 or self.learning_rate <= 0 or self.batch_size < 1 or self.seq_len < 32:
            raise MemloraError(f"bad warm-up options {asdict(self)}",
                               fix="0 <= copy_steps <= steps, learning_rate > 0, batch_size >= 1, seq_len >= 32")
        if not 0 <= self.copy_share <= 1:
            raise MemloraError(f"warm-up copy_share {self.copy_share} is not in [0, 1]", fix="e.g. 0.5")


def dialogue_ids(conversations: Sequence, encode, eos_id: int) -> list[int]:
    """Token ids of every session as ``Speaker: text`` lines, sessions separated by end-of-text."""
    ids: list[int] = []
    for conv in conversations:
        for session in conv.sessions:
            text = "\n".join(f"{t.speaker}: {t.display_text()}" for t in session.turns)
            if text:
                ids += encode(text) + [eos_id]
    return ids


def _rows(stream, step: int, opts: WarmupOptions, rng: random.Random, vocab: int):
    """One batch: copying rows only for the first ``copy_steps`` (at half length, twice as many),
    then ``copy_share`` of them among dialogue windows."""
    import torch

    copying = step < opts.copy_steps
    n, length = (opts.batch_size * 2, opts.seq_len // 2) if copying else (opts.batch_size, opts.seq_len)
    n_copy = n if copying else round(n * opts.copy_share)
    rows = []
    for r in range(n):
        if r < n_copy:  # random tokens, repeated to the row's length: nothing to predict but by copying
            k = rng.randint(8, max(9, length // 2))
            window = torch.tensor([rng.randrange(3, vocab) for _ in range(k)])
            rows.append(window.repeat(length // k + 1)[:length])
        else:
            s = rng.randrange(0, len(stream) - length - 1)
            rows.append(stream[s:s + length])
    return torch.stack(rows)


def probe(model, stream, window: int = 64, windows: int = 8) -> dict[str, float]:
    """Loss on held-apart dialogue (``loss``) and the copy gain on ``windows`` repeated windows."""
    import torch
    import torch.nn.functional as F

    window = min(window, len(stream) // 4)
    first, second = [], []
    step = max(1, (len(stream) - 2 * window) // windows)
    with torch.no_grad():
        for s in range(0, step * windows, step):
            x = stream[s:s + window].repeat(2)[None]
            loss = F.cross_entropy(model(x).logits[0, :-1].float(), x[0, 1:], reduction="none")
            first.append(loss[:window - 1].mean().item())
            second.append(loss[window:].mean().item())
    a, b = sum(first) / len(first), sum(second) / len(second)
    return {"loss": round(a, 4), "copy_gain": round(a - b, 4)}


def _train(model, stream, opts: WarmupOptions, progress) -> list[dict[str, float]]:
    import torch

    torch.manual_seed(opts.seed)
    rng = random.Random(opts.seed)
    optim = torch.optim.AdamW(model.parameters(), lr=opts.learning_rate, weight_decay=0.0)
    warm = max(1, opts.steps // 40)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warm) * max(0.1, 1 - s / opts.steps))
    task = progress.add_task("base warm-up", total=opts.steps)
    history = []
    model.train()
    for step in range(opts.steps):
        x = _rows(stream, step, opts, rng, model.config.vocab_size)
        loss = model(x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step(), sched.step(), optim.zero_grad()
        if step % 50 == 0 or step == opts.steps - 1:
            history.append({"step": step, "train_loss": round(loss.item(), 4)})
        progress.update(task, completed=step + 1, description=f"base warm-up: loss {loss.item():.3f}")
    model.eval()
    return history


def warm_base(model_dir: str | Path, train: Sequence, validation: Sequence, opts: WarmupOptions,
              show_progress: bool = True, source: str | Path | None = None) -> dict[str, Any]:
    """Warm the HF model in ``model_dir`` up on ``train``'s dialogue; rewrite its weights in place.

    ``train`` / ``validation`` are :class:`~memlora.memory.locomo.Conversation` lists (the teacher's
    splits); ``source`` is the file they came from, named in the error when they are too short. The new weights are written to a temporary folder and renamed over the old ones, so an
    interrupted warm-up leaves the old weights. Returns the record also written to ``memlora_warmup.json``.
    """
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from ..core.progress import steps as progress_steps
    from ..sources.model_io import quiet_transformers

    quiet_transformers()
    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    encode = lambda text: tok.encode(text, add_special_tokens=False).ids  # noqa: E731
    stream = torch.tensor(dialogue_ids(train, encode, int(cfg["eos_token_id"])))
    held = torch.tensor(dialogue_ids(validation, encode, int(cfg["eos_token_id"])))
    if len(stream) < 2 * opts.seq_len or len(held) < 64:
        raise MemloraError(f"too little dialogue to warm the base up ({len(stream)} train / {len(held)} "
                           "validation tokens)", source or model_dir, "give more conversations or lower the warm-up seq_len")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa", dtype=torch.float32)
    before, t0 = probe(model.eval(), held), time.time()
    with progress_steps(show_progress) as progress:
        history = _train(model, stream, opts, progress)
    record = {"options": asdict(opts), "seconds": round(time.time() - t0, 1), "train_tokens": len(stream),
              "validation_tokens": len(held), "before": before, "after": probe(model, held), "history": history,
              "conversations": {"train": [c.sample_id for c in train],
                                "validation": [c.sample_id for c in validation]}}
    _replace_weights(model, model_dir, record)
    return record


def _replace_weights(model, model_dir: Path, record: dict[str, Any]) -> None:
    tmp = model_dir.parent / f".{model_dir.name}.warm"
    model.save_pretrained(tmp)
    (tmp / WARMUP_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    for name in os.listdir(tmp):  # weights (and the record) only: config and tokenizer stay as they were
        if name.endswith(".safetensors") or name in (WARMUP_RECORD, "model.safetensors.index.json"):
            os.replace(tmp / name, model_dir / name)
    shutil.rmtree(tmp)
