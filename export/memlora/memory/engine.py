"""Text generation over any :class:`~memlora.backends.base.Runner`.

:func:`generate` activates an adapter (which drops the KV cache: a cache filled under one adapter
is garbage under another), prefills the prompt, then samples token by token until an eos id, a
stop string, the token budget or the runner's ``max_seq_len``. Greedy when ``temperature == 0``;
otherwise temperature plus top-p (nucleus) sampling from a seeded NumPy generator, so a seed
reproduces a run exactly.

Prefix reuse: given ``prefix_text`` (the constant head of the prompt's template), a runner with
``prefill_with_prefix`` (every :class:`~memlora.backends.runner_base.RunnerBase`) keeps the KV
cache of that head per adapter and prefills only the rest of each prompt. The reused ids are the
longest run of the prompt's own ids that the head's ids start with, so a token merged across the
boundary is never reused wrongly, and the logits equal a full prefill's.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from tokenizers import Tokenizer

from ..backends.base import Runner

log = logging.getLogger(__name__)

EOS_NAMES = ("</s>", "<eos>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>", "<|im_end|>",
             "<end_of_turn>")
"""Token names treated as end of sequence when ``GenerationSettings.eos_ids`` is not given."""


@dataclass
class GenerationSettings:
    """How to generate. ``eos_ids=None`` derives them from the tokenizer and stop strings."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    stop: tuple[str, ...] = ()
    eos_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        self.stop = tuple(self.stop)
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    stopped_by: str
    """``"eos"``, ``"stop"``, ``"length"`` (max_new_tokens) or ``"context"`` (max_seq_len)."""
    prefill_s: float
    decode_s: float
    truncated_prompt_tokens: int = 0
    meta: dict[str, float] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return len(self.token_ids) / self.decode_s if self.decode_s > 0 else 0.0


def eos_ids_for(tokenizer: Tokenizer, stop: Sequence[str] = ()) -> tuple[int, ...]:
    """Ids of single-token stop strings and of the usual eos names present in ``tokenizer``."""
    ids = []
    for name in (*stop, *EOS_NAMES):
        tid = tokenizer.token_to_id(name)
        if tid is not None and tid not in ids:
            ids.append(tid)
    return tuple(ids)


def sample(logits: np.ndarray, temperature: float, top_p: float,
           rng: np.random.Generator) -> int:
    """Pick one token id: argmax at temperature 0, else nucleus sampling."""
    logits = np.asarray(logits, dtype=np.float64).ravel()
    if not np.isfinite(logits).any():
        raise ValueError("logits have no finite value")
    if temperature == 0:
        return int(np.argmax(np.where(np.isnan(logits), -np.inf, logits)))
    z = np.where(np.isfinite(logits), logits / temperature, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    if top_p < 1.0:
        cum = np.cumsum(p[order])
        keep = int(np.searchsorted(cum, top_p)) + 1
        order = order[:keep]
    q = p[order] / p[order].sum()
    return int(order[rng.choice(len(order), p=q)])


def _fit_prompt(ids: list[int], max_seq_len: int | None, max_new: int,
                keep_first: bool) -> tuple[list[int], int, int]:
    """Return (ids, tokens dropped from the left, new-token budget) within ``max_seq_len``."""
    if max_seq_len is None:
        return ids, 0, max_new
    reserve = min(max_new, max(1, max_seq_len // 4))
    limit = max_seq_len - reserve
    dropped = 0
    if len(ids) > limit:
        dropped = len(ids) - limit
        head = ids[:1] if keep_first else []
        ids = head + ids[len(head) + dropped:]
        # Not silent: the template's instructions are what gets cut (a loop CLI shows this line).
        log.warning("warning: prompt of %d tokens truncated from the left to %d (max_seq_len %d) -- fix: "
                    "re-export with --max-seq-len %d or more", len(ids) + dropped, len(ids), max_seq_len,
                    len(ids) + dropped + max_new)
    return ids, dropped, min(max_new, max_seq_len - len(ids))


def _check_stop(text: str, stop: Sequence[str], start: int) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string found at or after ``start``."""
    hits = [i for s in stop if (i := text.find(s, start)) != -1]
    return (text[:min(hits)], True) if hits else (text, False)


def _held_back(text: str, stop: Sequence[str]) -> int:
    """How many trailing chars of ``text`` could begin a stop string (not streamed yet)."""
    return max((k for s in stop for k in range(len(s) - 1, 0, -1) if text.endswith(s[:k])),
               default=0)


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _prefill(runner: Runner, tokenizer: Tokenizer, ids: list[int],
             prefix_text: str | None) -> tuple[np.ndarray, int]:
    """Logits at the prompt's last position, and how many prompt tokens the reused prefix cache gave."""
    if prefix_text and hasattr(runner, "prefill_with_prefix"):
        head = tokenizer.encode(prefix_text, add_special_tokens=False).ids
        rows, reused = runner.prefill_with_prefix(ids, common_prefix_len(head, ids))
        return np.asarray(rows)[-1], reused
    return np.asarray(runner.prefill(ids))[-1], 0


def generate(runner: Runner, tokenizer: Tokenizer, adapter: str | None, prompt_text: str,
             settings: GenerationSettings,
             on_token: Callable[[int, str], None] | None = None,
             prefix_text: str | None = None) -> GenerationResult:
    """Generate a completion of ``prompt_text`` with ``adapter`` active.

    The prompt is encoded without adding special tokens (the chat format already wrote any BOS).
    ``on_token(token_id, new_text)`` is called per generated token with the text it added.
    ``prefix_text``: the prompt's constant head, whose KV cache the runner keeps and reuses.
    """
    runner.set_adapter(adapter)
    runner.reset()
    rng = np.random.default_rng(settings.seed)
    eos = set(settings.eos_ids if settings.eos_ids is not None
              else eos_ids_for(tokenizer, settings.stop))
    ids = tokenizer.encode(prompt_text, add_special_tokens=False).ids
    if not ids:
        raise ValueError("empty prompt")
    special = {t for t, tok in tokenizer.get_added_tokens_decoder().items() if tok.special}
    ids, dropped, budget = _fit_prompt(ids, runner.max_seq_len, settings.max_new_tokens,
                                       keep_first=ids[0] in special)
    max_stop = max((len(s) for s in settings.stop), default=0)

    t0 = time.perf_counter()
    logits, reused = _prefill(runner, tokenizer, ids, prefix_text)
    t1 = time.perf_counter()
    out: list[int] = []
    text = emitted = ""
    stopped_by = "length" if budget == settings.max_new_tokens else "context"

    def emit(tok: int, upto: int, final: bool = False) -> None:
        nonlocal emitted
        partial = not final and text[upto - 1:upto] == "\ufffd"
        if text.startswith(emitted) and upto > len(emitted) and not partial:
            if on_token is not None:
                on_token(tok, text[len(emitted):upto])
            emitted = text[:upto]

    tok = -1
    while len(out) < budget:
        tok = sample(logits, settings.temperature, settings.top_p, rng)
        if tok in eos:
            stopped_by = "eos"
            break
        out.append(tok)
        text, hit = _check_stop(tokenizer.decode(out, skip_special_tokens=False), settings.stop,
                                max(0, len(text) - max_stop))
        if hit:
            stopped_by = "stop"
            break
        emit(tok, len(text) - _held_back(text, settings.stop))
        if len(out) < budget:
            logits = np.asarray(runner.decode(tok))
    emit(tok, len(text), final=True)
    t2 = time.perf_counter()
    return GenerationResult(text=text, token_ids=out, prompt_tokens=len(ids),
                            stopped_by=stopped_by, prefill_s=t1 - t0, decode_s=t2 - t1,
                            truncated_prompt_tokens=dropped, meta={"reused_tokens": float(reused)})
