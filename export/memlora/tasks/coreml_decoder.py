"""The decoder as Core ML wants it: KV cache in registered buffers updated in place (Core ML
state), a prebuilt 4D additive mask as input, and LoRA baked in as constant low-rank matmuls.

Inputs: ``input_ids [1, T]`` and ``position_ids [1, T]`` (int32), ``causal_mask [1, 1, T, E]``
(float, 0 = attend, -inf = masked) where ``E = past + T`` is the cache end after this call.
The write position is read off the mask's shape (``E - T``), so one function serves prefill
(T > 1) and decode (T = 1) with flexible shapes and no scalar position input.
Output: ``logits [1, T, V]``. States: ``key_cache`` and ``value_cache`` ``[L, 1, H_kv, S, D]``,
float16 (the only state dtype Core ML takes), plus ``*_lo`` parts in fp32 exports.

Why this and not transformers' own cache: the model's mask path lowers to ops Core ML lacks
(``diff``, ``new_ones``, ``__and__``), and coremltools names states after ``named_buffers()``,
so the buffers must live on the exported module. Why not ``static_decoder.py`` (ExecuTorch's):
it re-implements attention and keeps its cache in the model dtype, whereas Core ML states must be
float16 (split hi/lo here for fp32 checks); this wrapper keeps every family's own attention code
(soft-capping, q/k norms, scaling) and only swaps the cache object and the mask.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.errors import MemloraError
from .decoder import DecoderTask
from .lora import LoraLinear, attach_constants
from .names import make_causal_mask  # noqa: F401  (re-exported)

STATE_NAMES = ("key_cache", "value_cache")
SPLIT_STATE_NAMES = ("key_cache", "value_cache", "key_cache_lo", "value_cache_lo")


class _SliceCache:
    """Duck-typed transformers cache: ``update`` writes ``[begin, end)`` of the stacked buffers in
    place and hands back everything up to ``end``. Models call nothing else when they are given
    position ids and a mask mapping.

    Core ML states are float16 only. With ``lo`` buffers (fp32 exports) each value is kept as
    ``hi + lo``, two float16 parts (about 22 significant bits), so an fp32 export checks the
    conversion at fp32 tolerance instead of measuring fp16 cache rounding.
    """

    def __init__(self, keys, values, keys_lo=None, values_lo=None):
        self.parts = [(keys, keys_lo), (values, values_lo)]
        self.begin, self.end = 0, 0

    def _write_read(self, x: torch.Tensor, hi: torch.Tensor, lo: torch.Tensor | None, layer: int) -> torch.Tensor:
        x_hi = x.to(hi.dtype)
        hi[layer, :, :, self.begin:self.end, :] = x_hi
        if lo is not None:
            lo[layer, :, :, self.begin:self.end, :] = (x - x_hi.to(x.dtype)).to(lo.dtype)
        out = hi[layer, :, :, :self.end, :].to(x.dtype)
        if lo is not None:
            out = out + lo[layer, :, :, :self.end, :].to(x.dtype)
        return out

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int, *args, **kwargs):
        (kh, kl), (vh, vl) = self.parts
        return self._write_read(k, kh, kl, layer_idx), self._write_read(v, vh, vl, layer_idx)


class CoreMLDecoder(nn.Module):
    """Stateful decoder step for Core ML; see the module docstring for the signature.

    Args:
        task: the loaded decoder.
        capacity: cache slots (tokens) in the state buffers.
        adapter: LoRA to keep unfused as constant ``(A, B_scaled)`` matmuls; ``None`` for the
            bare base or a model whose adapter was fused already.
        split_cache: keep each cached value as two float16 parts (fp32 exports; see ``_SliceCache``).
    """

    def __init__(self, task: DecoderTask, capacity: int, adapter=None, split_cache: bool = False):
        super().__init__()
        cfg = task.config
        for window in (getattr(cfg, "sliding_window", None),):
            if window is not None and getattr(cfg, "layer_types", None) and \
                    "sliding_attention" in cfg.layer_types and window < capacity:
                raise MemloraError(
                    f"sliding window {window} is shorter than max_seq_len {capacity}; the Core ML export "
                    "builds one causal mask for every layer", fix=f"use --max-seq-len {window} or less")
        self.model = task.model
        shape = (task.num_layers, 1, task.kv_heads, capacity, task.head_dim)
        self.state_names = SPLIT_STATE_NAMES if split_cache else STATE_NAMES
        for name in self.state_names:
            self.register_buffer(name, torch.zeros(shape, dtype=torch.float16))
        self.lora: dict[str, LoraLinear] = {}
        if adapter is not None:
            # Plain tensors, not parameters: torch.export lifts them as constants (``c_*``),
            # apart from the base parameters (``p_*``) that compression touches.
            self.lora = attach_constants(self.model, adapter)

    def forward(self, input_ids, position_ids, causal_mask):
        return self._step(input_ids.shape[-1], position_ids, causal_mask, input_ids=input_ids)

    def _step(self, n, position_ids, causal_mask, **first):
        """Write ``n`` new positions ending at the mask's key length; ``first``: the ids or embeddings."""
        cache = _SliceCache(*(getattr(self, s) for s in self.state_names))
        cache.end = causal_mask.shape[-1]
        cache.begin = cache.end - n
        # A 4D mask is taken as given (transformers returns it before building its own), for
        # full and sliding layers alike; the constructor refused windows shorter than the cache.
        out = self.model(**first, position_ids=position_ids, attention_mask=causal_mask,
                         past_key_values=cache, use_cache=True)
        return out.logits

    def release(self) -> None:
        """Drop the LoRA wrappers from the shared model (the task is reused across exports)."""
        for mod in self.lora.values():
            mod.ab = None
        from .lora import remove_lora

        remove_lora(self.model)
        self.lora = {}


class CoreMLEmbedsDecoder(CoreMLDecoder):
    """The same stateful step on embeddings: ``inputs_embeds [1, T, D]`` (float) in place of
    ``input_ids``, for an SVLM's ``vqa`` function (the app merges image rows into the token
    embeddings). ``task`` is the SVLM's language model as a ``DecoderTask``
    (``memlora.tasks.vision.as_decoder_task``), whose forward takes ``inputs_embeds``."""

    def forward(self, inputs_embeds, position_ids, causal_mask):
        return self._step(inputs_embeds.shape[1], position_ids, causal_mask, inputs_embeds=inputs_embeds)
