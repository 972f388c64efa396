"""Graph input/output names shared by exporters, runners and adapter files (no torch import, so
runtimes that only run an exported model stay light)."""
from __future__ import annotations

import numpy as np


def kv_names(num_layers: int, prefix: str) -> list[str]:
    """``past.0.key, past.0.value, ...``: the names backends and runners agree on."""
    return [f"{prefix}.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


def lora_input_names(modules: list[str]) -> list[str]:
    """``lora.<module>.A/B``: graph input names of the external LoRA weights, also the tensor names
    inside every adapter file, so a name mismatch is impossible by construction."""
    return [f"lora.{m}.{ab}" for m in modules for ab in ("A", "B")]


def make_causal_mask(past: int, n: int, dtype=None):
    """Additive mask ``[1, 1, n, past + n]`` for ``n`` new tokens after ``past`` cached ones (NumPy)."""
    q = np.arange(past, past + n)[:, None]
    k = np.arange(past + n)[None, :]
    return np.where(k <= q, 0.0, -np.inf).astype(dtype or np.float32)[None, None]
