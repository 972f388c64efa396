"""Grouped-query attention without ``repeat_kv``, for the dynamic-KV (ONNX) decoder.

Hugging Face's eager attention expands every key/value head ``groups`` times (``repeat_kv``)
before the two matmuls. Exported to ONNX that is ``Unsqueeze -> Expand -> Reshape`` of the whole
present cache, in every layer, on every step: at Qwen2.5-0.5B's 14 query / 2 kv heads and a
1.5k-token memory-loop prompt, about 5 MB written and read again per K and per V per layer, or a
quarter of a gigabyte a token on top of the weights. Here the query heads of one group are
folded into the row axis instead (``[b, kv, groups * s, d]``), so each cached head is read once,
in place; the dot products are the same ones eager attention computes.

Registered with transformers' ``AttentionInterface`` under :data:`NAME` (the mask is eager's:
additive, causal, sliding windows included); :func:`grouped_attention_for` switches a model to
it for the length of a ``with`` block, so the reference and other backends keep eager attention.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

NAME = "memlora_grouped"


def grouped_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float | None = None,
                      dropout: float = 0.0, softcap: float | None = None, **_):
    """``query [b, h, s, d]``, ``key/value [b, kv, p, d]`` -> ``([b, s, h, d], None)``; eager's math
    (scale, Gemma's soft-capping, additive mask, fp32 softmax) without expanding key/value."""
    b, h, s, d = query.shape
    kv = key.shape[1]
    groups = h // kv
    if scaling is None:
        scaling = d ** -0.5
    # Heads kv*groups .. kv*groups+groups-1 share kv head i (repeat_kv's order): row j*s + t of
    # group i is query head i*groups + j at position t.
    q = query.reshape(b, kv, groups * s, d)
    weights = torch.matmul(q, key.transpose(2, 3)) * scaling
    if softcap is not None:
        weights = torch.tanh(weights / softcap) * softcap
    if attention_mask is not None:
        mask = attention_mask[:, :, :, : key.shape[-2]]
        weights = weights + (mask.repeat(1, 1, groups, 1) if groups > 1 else mask)
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights, value)  # [b, kv, groups * s, d]
    return out.reshape(b, h, s, d).transpose(1, 2).contiguous(), None


def register() -> None:
    """Make :data:`NAME` known to transformers (idempotent): the attention and eager's mask."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    ALL_ATTENTION_FUNCTIONS.register(NAME, grouped_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


@contextlib.contextmanager
def grouped_attention_for(model: nn.Module):
    """Within the block, ``model`` (and every sub-config that names an attention) uses
    :data:`NAME`; the previous implementation is restored afterwards, also on error."""
    register()
    configs = [c for c in _configs(model.config) if getattr(c, "_attn_implementation", None) == "eager"]
    for c in configs:
        c._attn_implementation = NAME
    try:
        yield model
    finally:
        for c in configs:
            c._attn_implementation = "eager"


def _configs(config):
    """The config and its nested text config (the attribute the decoder layers read)."""
    yield config
    text = getattr(config, "text_config", None)
    if text is not None and text is not config:
        yield text
