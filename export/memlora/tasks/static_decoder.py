"""A static-KV-cache decoder for ahead-of-time runtimes (ExecuTorch, Core ML).

The Hugging Face forward builds its causal mask through ops few AOT converters take (``diff``,
``new_ones``, ``__and__``, vmap'd mask functions) and grows its cache by concatenation. This
wrapper keeps the HF decoder layers, norms, MLPs and projections (which may be ``LoraLinear``)
and replaces only two things:

* each layer's attention module, with ``StaticAttention``: the same q/k/v/o projections, q/k
  norms and rotary embedding, but a fixed-size K/V cache held in registered buffers updated in
  place, and an attention kernel chosen per layer;
* the model body's forward: embeddings, a rotary table indexed by position, and a mask built
  from positions with plain comparisons (no HF mask code).

Inputs: ``tokens [1, T]`` (int64, T dynamic in 1..max_seq_len-1) and ``input_pos [1]`` (int64,
the position of ``tokens[0, 0]``). Output: ``logits [1, T, vocab]`` (float32), or with
``last_logits_only`` ``[1, 1, vocab]``: the final norm and LM head on the last position only, as
ExecuTorch's own llama export does (``generate_full_logits=False``). ExecuTorch memory-plans the
output at the largest T, so full logits cost every loaded program a zero-filled
``[max_seq_len, vocab]`` fp32 buffer (1.7 GB at qwen2.5-0.5b); a sampler needs only the last row.

Two attention kernels:

* ``"custom"``: ExecuTorch's LLM ops (``llama::update_cache`` + ``llama::custom_sdpa``), cache
  layout ``[1, S, kv_heads, head_dim]``. Reads only the written part of the cache; about 2x
  faster decode than plain math on XNNPACK. Needs ``executorch.extension.llm.custom_ops``.
* ``"math"``: plain matmul/softmax with ``index_copy_`` into a ``[1, kv_heads, S, head_dim]``
  cache and an additive mask from positions (causal, plus the sliding window where a layer has
  one). Works in any converter; Gemma2's attention logit soft-capping needs it.

``"auto"`` picks custom per layer where the layer allows (no soft-capping, no sliding window
shorter than the cache) and math elsewhere. Core ML uses ``"math"``.
"""
from __future__ import annotations

import copy
import inspect
from typing import Literal

import torch
from torch import nn

from .delegable import LinearRMSNorm, TanhGELU, delegable_activations, delegable_norms  # noqa: F401  (re-exported)

AttentionKind = Literal["auto", "custom", "math"]


def custom_ops_available() -> bool:
    """True when ExecuTorch's LLM custom ops (custom_sdpa, update_cache) can be registered."""
    try:
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (registers llama::*)
    except Exception:  # a missing package or a missing shared library; either way: not usable
        return False
    return hasattr(torch.ops.llama, "custom_sdpa")


class StaticAttention(nn.Module):
    """One layer's attention with a static, in-place K/V cache.

    Keeps the HF module's projections under the same attribute names, so module paths
    (``model.layers.0.self_attn.q_proj``) and LoRA targets do not change when it is swapped in.
    """

    def __init__(self, attn: nn.Module, config, max_seq_len: int, kind: Literal["custom", "math"],
                 sliding_window: int | None, dtype: torch.dtype = torch.float32):
        super().__init__()
        for name in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"):
            if hasattr(attn, name):
                setattr(self, name, getattr(attn, name))
        self.has_qk_norm = hasattr(attn, "q_norm")
        self.layer_idx = attn.layer_idx
        self.head_dim = attn.head_dim
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.groups = self.num_heads // self.num_kv_heads
        self.scaling = float(attn.scaling)
        self.softcap = getattr(attn, "attn_logit_softcapping", None)
        self.sliding_window = sliding_window
        self.kind = kind
        self.max_seq_len = max_seq_len
        if kind == "custom":
            shape = (1, max_seq_len, self.num_kv_heads, self.head_dim)
        else:
            shape = (1, self.num_kv_heads, max_seq_len, self.head_dim)
        # In-place state: registered buffers, no grad (ExecuTorch refuses to lower grad buffers).
        self.register_buffer("rotate", _rotate_half_matrix(self.head_dim), persistent=False)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype), persistent=False)
        self.k_cache.requires_grad_(False)
        self.v_cache.requires_grad_(False)

    def forward(self, hidden_states: torch.Tensor, position_embeddings=None, attention_mask=None,
                memlora_start=None, memlora_positions=None, **_):
        bsz, seq, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(bsz, seq, self.num_heads, self.head_dim)
        k = self.k_proj(hidden_states).view(bsz, seq, self.num_kv_heads, self.head_dim)
        v = self.v_proj(hidden_states).view(bsz, seq, self.num_kv_heads, self.head_dim)
        if self.has_qk_norm:  # per-head RMSNorm over head_dim: layout-independent
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = position_embeddings  # [T, 1, head_dim]: broadcasts over [1, T, heads, head_dim]
        # rotate_half as a matmul with a constant +-1 permutation: exact, and one delegable
        # linear instead of two dynamic-shape slices and a cat (which split XNNPACK islands).
        q = q * cos + nn.functional.linear(q, self.rotate) * sin
        k = k * cos + nn.functional.linear(k, self.rotate) * sin
        if self.kind == "custom":
            out = self._custom(q, k, v, memlora_start)
        else:
            out = self._math(q, k, v, memlora_positions, attention_mask)
        return self.o_proj(out.reshape(bsz, seq, self.num_heads * self.head_dim)), None

    def _custom(self, q, k, v, start):
        torch.ops.llama.update_cache(k, self.k_cache, start)
        torch.ops.llama.update_cache(v, self.v_cache, start)
        return torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start, None, 0.0, True, self.scaling)

    def _math(self, q, k, v, positions, mask):
        seq = q.shape[1]
        # Write this step's keys/values at their positions (in place).
        self.k_cache.index_copy_(2, positions, k.transpose(1, 2))
        self.v_cache.index_copy_(2, positions, v.transpose(1, 2))
        # Grouped-query attention without repeat_kv: fold the query groups into the row axis and
        # keep every tensor 3D (bmm, and a mask broadcast over one leading axis), which XNNPACK
        # takes whole; 4D/5D broadcasts leave expand/view copies outside.
        kv, s_len, d = self.num_kv_heads, self.max_seq_len, self.head_dim
        qg = q.transpose(1, 2).reshape(kv, self.groups * seq, d)
        scores = torch.bmm(qg, self.k_cache.view(kv, s_len, d).transpose(1, 2)) * self.scaling
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        scores = scores.view(kv * self.groups, seq, s_len) + mask.unsqueeze(0)
        probs = torch.softmax(scores, dim=-1).view(kv, self.groups * seq, s_len)
        out = torch.bmm(probs, self.v_cache.view(kv, s_len, d))  # [kv, g*T, D]
        return out.view(1, self.num_heads, seq, self.head_dim).transpose(1, 2)


def _rotate_half_matrix(dim: int) -> torch.Tensor:
    """``W`` with ``F.linear(x, W) == rotate_half(x) == cat(-x[half:], x[:half])``."""
    half = dim // 2
    w = torch.zeros(dim, dim)
    idx = torch.arange(half)
    w[idx, idx + half] = -1.0
    w[idx + half, idx] = 1.0
    return w


def _layer_type(config, i: int) -> str:
    types = getattr(config, "layer_types", None)
    return types[i] if types else "full_attention"


def _rope_tables(body: nn.Module, layer_types: set[str], max_seq_len: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """cos/sin ``[max_seq_len, 1, head_dim]`` per layer type from the model's own rotary module, so
    every scaling rule (llama3, linear, Gemma3 local/global bases) comes from transformers."""
    rotary = body.rotary_emb
    takes_type = "layer_type" in inspect.signature(rotary.forward).parameters
    pos = torch.arange(max_seq_len).unsqueeze(0)
    dummy = torch.zeros(1, dtype=torch.float32)
    out = {}
    with torch.no_grad():
        for lt in sorted(layer_types):
            cos, sin = rotary(dummy, pos, lt) if takes_type else rotary(dummy, pos)
            out[lt] = (cos[0].float().unsqueeze(1).contiguous(), sin[0].float().unsqueeze(1).contiguous())
    return out


class StaticKVDecoder(nn.Module):
    """A causal LM with a static K/V cache of ``max_seq_len`` positions, for ``torch.export``.

    Args:
        model: a transformers ``*ForCausalLM`` (float32, eval). It is modified in place (its
            attention modules are swapped); pass a copy (see ``static_decoder``) to keep yours.
        max_seq_len: cache capacity: prompt plus generated tokens.
        attention: ``"auto"``, ``"custom"`` or ``"math"`` (see the module docstring).
        last_logits_only: return ``logits [1, 1, vocab]`` of the last position instead of
            ``[1, T, vocab]`` (see the module docstring).
    """

    def __init__(self, model: nn.Module, max_seq_len: int, attention: AttentionKind = "auto",
                 last_logits_only: bool = False):
        super().__init__()
        self.model = model
        self.config = config = model.config
        self.max_seq_len = max_seq_len
        self.last_logits_only = bool(last_logits_only)
        body = model.model
        n = config.num_hidden_layers
        self.layer_types = [_layer_type(config, i) for i in range(n)]
        use_custom = attention != "math" and custom_ops_available()
        if attention == "custom" and not use_custom:
            raise RuntimeError("attention='custom' needs executorch.extension.llm.custom_ops")
        self.kinds: list[str] = []
        self.windows: list[int | None] = []
        for i, layer in enumerate(body.layers[:n]):
            attn = layer.self_attn
            window = getattr(attn, "sliding_window", None) if self.layer_types[i] == "sliding_attention" else None
            window = window if window is not None and window < max_seq_len else None  # wider than the cache: no-op
            custom_ok = use_custom and getattr(attn, "attn_logit_softcapping", None) is None and window is None
            if attention == "custom" and not custom_ok:
                custom_ok = False  # fall back per layer (soft-capping or a short window), never fail
            kind = "custom" if custom_ok else "math"
            layer.self_attn = StaticAttention(attn, config, max_seq_len, kind, window)
            self.kinds.append(kind)
            self.windows.append(window)
        for lt, (cos, sin) in _rope_tables(body, set(self.layer_types), max_seq_len).items():
            self.register_buffer(f"rope_cos_{lt}", cos, persistent=False)
            self.register_buffer(f"rope_sin_{lt}", sin, persistent=False)
        self.register_buffer("key_positions", torch.arange(max_seq_len), persistent=False)
        self.final_softcap = getattr(config, "final_logit_softcapping", None)

    @property
    def attention_summary(self) -> dict[str, int]:
        """How many layers use each kernel, e.g. ``{"custom": 2}``."""
        out: dict[str, int] = {}
        for k in self.kinds:
            out[k] = out.get(k, 0) + 1
        return out

    def cache_buffers(self) -> list[str]:
        """Fully qualified names of the K/V state buffers (Core ML declares them as states)."""
        return [n for n, _ in self.named_buffers() if n.endswith(("k_cache", "v_cache"))]

    def _mask(self, positions: torch.Tensor, window: int | None, also: torch.Tensor | None = None) -> torch.Tensor:
        """Additive mask ``[T, S]``: 0 where key position <= query position (and within the
        window), float32 min elsewhere. Built with where/sub only (no bool and/or ops).
        ``also [T, S]`` (> 0 where a query may attend besides): or-ed in, as HF or's Gemma3's
        image blocks into its causal and sliding masks."""
        dist = positions.unsqueeze(1) - self.key_positions.unsqueeze(0)  # query - key
        neg = torch.finfo(torch.float32).min
        mask = torch.where(dist < 0, neg, 0.0)
        if window is not None:
            mask = mask + torch.where(dist >= window, neg, 0.0)
        if also is not None:
            mask = torch.where(also > 0, 0.0, mask)
        return mask

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        return self.decode(input_pos, tokens.shape[1], lambda: self.model.model.embed_tokens(tokens))

    def decode(self, input_pos: torch.Tensor, seq: int, embed, also=None) -> torch.Tensor:
        """One step over ``seq`` new positions from ``input_pos``; ``embed()`` gives their input
        embeddings ``[1, seq, D]`` (token ids through the table, or embeddings as given), called
        after the position-only tensors so their ops come first in the graph. ``also(positions)``:
        extra allowed query/key pairs ``[T, S]`` for the masks (math layers only)."""
        body = self.model.model
        positions = input_pos[:1] + torch.arange(seq, dtype=input_pos.dtype)
        start = None
        if "custom" in self.kinds:
            start = input_pos[0].item()
            torch._check_is_size(start)
            torch._check(start + seq <= self.max_seq_len)
        # Everything that depends only on positions first: computed outside the accelerator
        # islands, it would otherwise split the first one.
        ropes = {lt: (torch.index_select(getattr(self, f"rope_cos_{lt}"), 0, positions),
                      torch.index_select(getattr(self, f"rope_sin_{lt}"), 0, positions))
                 for lt in dict.fromkeys(self.layer_types)}
        extra = also(positions) if also is not None else None
        masks = {w: self._mask(positions, w, extra) for w, k in zip(self.windows, self.kinds) if k == "math"}
        hidden = embed()
        for i, layer in enumerate(body.layers[: self.config.num_hidden_layers]):
            lt, window = self.layer_types[i], self.windows[i]
            mask = masks[window] if self.kinds[i] == "math" else None
            hidden = layer(hidden, attention_mask=mask, position_embeddings=ropes[lt], position_ids=None,
                           past_key_values=None, memlora_start=start, memlora_positions=positions)
            if isinstance(hidden, tuple):  # older layer signatures return (hidden, ...)
                hidden = hidden[0]
        if self.last_logits_only:  # a static [1, 1, D]: the head's output is no longer planned at max T
            hidden = hidden[:, -1:, :]
        hidden = body.norm(hidden)
        logits = self.model.lm_head(hidden)
        if self.final_softcap is not None:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits


def static_decoder(model: nn.Module, max_seq_len: int, attention: AttentionKind = "auto",
                   copy_model: bool = True, last_logits_only: bool = False) -> StaticKVDecoder:
    """Wrap ``model`` (a copy of it by default, so the caller's model keeps its HF attention)."""
    if copy_model:
        model = copy.deepcopy(model)
    return StaticKVDecoder(model, max_seq_len, attention, last_logits_only).eval()


def example_inputs(seq: int = 3, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Example ``(tokens, input_pos)`` for tracing; seq > 1 so the sequence dim stays dynamic."""
    return torch.zeros(1, seq, dtype=torch.long), torch.tensor([start], dtype=torch.long)


def dynamic_shapes(max_seq_len: int) -> dict:
    """``tokens`` dim 1 dynamic up to ``max_seq_len - 1`` (an upper bound equal to the cache
    length trips a guard in some converters); ``input_pos`` static."""
    seq = torch.export.Dim("seq", min=1, max=max_seq_len - 1)
    return {"tokens": {1: seq}, "input_pos": None}
