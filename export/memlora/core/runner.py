"""The runner protocol: what the memory loop, parity and the benchmark drive.

Every backend's runner implements it (see ``memlora.backends.base.RunnerBase``), and so does
the PyTorch reference.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Runner(Protocol):
    """A decoder with a KV cache, driven one prompt at a time.

    Every call returns float32 logits as NumPy arrays. ``set_adapter`` always drops the KV
    cache: a cache filled under one adapter is garbage under another.
    """

    adapters: Sequence[str]
    max_seq_len: int | None

    def set_adapter(self, name: str | None) -> None:
        """Activate adapter ``name`` (``None``: the bare base, external mode only); resets the cache."""

    def reset(self) -> None:
        """Forget the KV cache."""

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Append ``ids`` to the cache; return logits ``[len(ids), vocab]``, or only the last
        position's ``[1, vocab]`` where the runner's ``returns_all_positions`` is False (read it with
        ``getattr(runner, "returns_all_positions", True)``: not every runner has it)."""

    def decode(self, token: int) -> np.ndarray:
        """Append one token; return logits ``[vocab]``."""

    def close(self) -> None:
        """Release runtime resources."""
