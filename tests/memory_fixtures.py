"""Shared test helpers for the memory loop: a tiny tokenizer, fake runners, a toy embedder.

Nothing here downloads anything: the tokenizer is a byte-level BPE trained in a few milliseconds
on the sentences below, with every chat format's control markers as special tokens.
"""
from __future__ import annotations

import functools
import re
import zlib
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from memlora.memory.chat import CHAT_FORMATS

SPECIALS = sorted({t for f in CHAT_FORMATS.values() for t in f.special_tokens})
CORPUS = [
    'Hi, my name is John. I am a software engineer.',
    '{"facts": ["Name is John", "Is a software engineer"]}',
    '{"memory": [{"id": "0", "text": "Loves pizza", "event": "UPDATE", "old_memory": "x"}]}',
    'I went to a support group yesterday and it was so powerful.',
    'What does the user like? The user likes hiking in the mountains.',
]


@functools.lru_cache(maxsize=1)
def make_tokenizer() -> Tokenizer:
    """A byte-level BPE (exact round trip of any text) with all chat markers as special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return tok


def steer(vocab: int, token: int, strength: float = 10.0) -> np.ndarray:
    """Logits whose argmax is ``token`` (and which put ~all sampling mass on it)."""
    out = np.zeros(vocab, dtype=np.float32)
    out[token] = strength
    return out


class ScriptedRunner:
    """A Runner that replies with queued token sequences, one queue per adapter.

    Each ``prefill`` starts the next reply of the active adapter's queue (or a bare eos when the
    queue is empty); logits steer towards the reply one token at a time. With ``from_texts`` a
    reply may also be a function of the decoded prompt text, returning the reply text. Every call is logged in
    ``calls``, every prompt in ``prompts``; exceeding ``max_seq_len`` raises, as a real cache would.
    """

    def __init__(self, vocab: int, eos_id: int, replies: dict[str | None, list[list[int]]],
                 max_seq_len: int | None = None, adapters: Sequence[str] | None = None):
        self.vocab = vocab
        self.eos_id = eos_id
        self.replies: dict[str | None, list] = {k: [list(r) for r in v]
                                                for k, v in replies.items()}
        self.adapters = list(adapters if adapters is not None else
                             [k for k in replies if k is not None])
        self.max_seq_len = max_seq_len
        self.calls: list[tuple] = []
        self.prompts: list[tuple[str | None, list[int]]] = []
        self.active: str | None = None
        self.adapter_set = False
        self.cache_len = 0
        self.script: list[int] = []
        self.pos = 0
        self.tokenizer: Tokenizer | None = None

    @classmethod
    def from_texts(cls, tokenizer: Tokenizer, replies: dict[str | None, list[str]],
                   **kw) -> "ScriptedRunner":
        eos = tokenizer.token_to_id("<|endoftext|>")
        encoded = {k: [t if callable(t) else tokenizer.encode(t, add_special_tokens=False).ids
                       + [eos] for t in v] for k, v in replies.items()}
        runner = cls(tokenizer.get_vocab_size(), eos, {}, **kw)
        runner.replies = encoded
        runner.adapters = list(kw.get("adapters") or [k for k in replies if k is not None])
        runner.tokenizer = tokenizer
        return runner

    def set_adapter(self, name: str | None) -> None:
        if name is not None and name not in self.adapters:
            raise KeyError(name)
        self.calls.append(("set_adapter", name))
        self.active, self.adapter_set = name, True
        self.reset()

    def reset(self) -> None:
        self.calls.append(("reset",))
        self.cache_len, self.script, self.pos = 0, [], 0

    def _grow(self, n: int) -> None:
        self.cache_len += n
        if self.max_seq_len is not None and self.cache_len > self.max_seq_len:
            raise RuntimeError(f"cache overflow: {self.cache_len} > {self.max_seq_len}")

    def _next(self) -> np.ndarray:
        tok = self.script[self.pos] if self.pos < len(self.script) else self.eos_id
        return steer(self.vocab, tok)

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        assert self.adapter_set, "prefill before set_adapter"
        self.calls.append(("prefill", len(ids)))
        self._grow(len(ids))
        self.prompts.append((self.active, list(ids)))
        queue = self.replies.get(self.active, [])
        reply = queue.pop(0) if queue else []
        if callable(reply):
            assert self.tokenizer is not None
            text = reply(self.tokenizer.decode(list(ids), skip_special_tokens=False))
            reply = self.tokenizer.encode(text, add_special_tokens=False).ids + [self.eos_id]
        self.script, self.pos = reply, 0
        out = np.zeros((len(ids), self.vocab), dtype=np.float32)
        out[-1] = self._next()
        return out

    def decode(self, token: int) -> np.ndarray:
        self.calls.append(("decode", int(token)))
        self._grow(1)
        self.pos += 1
        return self._next()

    def close(self) -> None:
        pass


class BigramRunner:
    """A Runner whose logits depend only on the last token, from a fixed random table.

    Flat enough that sampling at temperature 1 varies with the seed.
    """

    def __init__(self, vocab: int, seed: int = 0, max_seq_len: int | None = None):
        self.table = np.random.default_rng(seed).normal(0, 1.5, (vocab, vocab)).astype(np.float32)
        self.adapters = ["extract", "update", "answer"]
        self.max_seq_len = max_seq_len
        self.calls: list[tuple] = []

    def set_adapter(self, name: str | None) -> None:
        self.calls.append(("set_adapter", name))

    def reset(self) -> None:
        self.calls.append(("reset",))

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self.calls.append(("prefill", len(ids)))
        return self.table[np.asarray(ids)]

    def decode(self, token: int) -> np.ndarray:
        self.calls.append(("decode", int(token)))
        return self.table[token]

    def close(self) -> None:
        pass


def hash_embedder(texts: Sequence[str], dim: int = 512) -> np.ndarray:
    """Bag-of-words vectors hashed with CRC32 (stable across processes), L2-normalised."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            out[i, zlib.crc32(word.encode()) % dim] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-9)
