"""The KV-cache text decoder task: a base model, its adapters, and export wrappers."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..sources.adapters import LoraAdapter
from ..sources.model_io import ModelInfo
from .lora import LoraLinear, inject_lora
from .names import kv_names, lora_input_names  # noqa: F401  (re-exported)


class TextShape:
    """Shape figures of a task's text decoder, read from ``text_config`` (shared by the text and
    the vision-language task, whose decoder config is nested)."""

    adapters: dict[str, LoraAdapter]

    @property
    def num_layers(self) -> int:
        return self.text_config.num_hidden_layers

    @property
    def kv_heads(self) -> int:
        return self.text_config.num_key_value_heads

    @property
    def head_dim(self) -> int:
        c = self.text_config
        return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.text_config.vocab_size

    def lora_modules(self) -> list[str]:
        """Every module any adapter targets, in a stable order (the external graph's LoRA inputs)."""
        return sorted({m for a in self.adapters.values() for m in a.weights})


@dataclass
class DecoderTask(TextShape):
    """A loaded causal LM (float32, eval) and the validated adapters to export with it."""

    model: nn.Module
    info: ModelInfo
    adapters: dict[str, LoraAdapter] = field(default_factory=dict)

    @property
    def config(self):
        return self.model.config

    @property
    def text_config(self):
        return self.model.config


def build_decoder_task(info: ModelInfo, adapters: dict[str, LoraAdapter]) -> DecoderTask:
    """Load the model weights (adapters were validated against the config already)."""
    from ..sources.model_io import load_model

    return DecoderTask(load_model(info), info, adapters)


class DynamicKVDecoder(nn.Module):
    """Decoder step with explicit past/present key-values (the cache grows by concatenation).

    Inputs: ``input_ids [1, T]``, ``position_ids [1, T]``, past key/values per layer
    ``[1, kv_heads, P, head_dim]``, and, in external mode, LoRA ``(A^T [in, r], B^T [r, out])`` per
    LoRA unit. Outputs: ``logits [1, T, V]`` and the present key/values ``[.., P+T, ..]``.

    ``lora_units`` name modules, or packed groups found in ``packs`` (:mod:`memlora.tasks.packed`,
    whose per-call input cache is cleared after every forward).
    """

    def __init__(self, model: nn.Module, lora_units: list[str] | None = None, packs: dict | None = None):
        super().__init__()
        self.model = model
        self.lora_paths = list(lora_units or [])
        self.packs = dict(packs or {})
        singles = [p for p in self.lora_paths if p not in self.packs]
        injected: dict = inject_lora(model, singles) if singles else {}
        self.lora = {p: self.packs[p] if p in self.packs else injected[p] for p in self.lora_paths}

    def forward(self, input_ids, position_ids, past, lora=None):
        from transformers import DynamicCache

        # LoRA tensors arrive as inputs; hand them to the wrapped linears for this call only.
        for path, ab in zip(self.lora_paths, lora or []):
            self.lora[path].ab = ab
        # A cache built without a config: with one, Gemma's sliding layers add a length guard.
        cache = DynamicCache()
        for i, (k, v) in enumerate(past):
            cache.update(k, v, i)
        try:
            out = self.model(input_ids=input_ids, position_ids=position_ids, past_key_values=cache, use_cache=True)
        finally:
            for mod in self.lora.values():
                mod.ab = None
            for pack in self.packs.values():
                pack.reset()
        present = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return out.logits, present


def example_inputs(task: DecoderTask, seq: int = 3, past_len: int = 2, rank: int = 4, units=None):
    """Example tensors for tracing (sizes > 1 so no dimension specialises); LoRA per module of the
    task, or per :class:`~memlora.tasks.packed.LoraUnit` of ``units``."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, task.vocab_size, (1, seq), generator=gen)
    pos = torch.arange(past_len, past_len + seq).unsqueeze(0)
    past, lora = example_past_and_lora(task, gen, past_len, rank)
    if units is not None:
        lora = [(torch.randn(u.inp, rank, generator=gen) * 0.01, torch.randn(rank, sum(u.outs), generator=gen) * 0.01)
                for u in units]
    return ids, pos, past, lora


def example_past_and_lora(task: TextShape, gen: torch.Generator, past_len: int, rank: int):
    """Random past key/values per layer and small LoRA ``(A, B)`` per adapted module, for tracing
    any decoder of ``task`` (token or embeddings input)."""
    shape = (1, task.kv_heads, past_len, task.head_dim)
    past = [(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)) for _ in range(task.num_layers)]
    lora = []
    for m in task.lora_modules():
        base = task.model.get_submodule(m)
        base = base.base if isinstance(base, LoraLinear) else base
        lora.append((torch.randn(base.in_features, rank, generator=gen) * 0.01,  # A^T, B^T: LoraLinear.ab
                     torch.randn(rank, base.out_features, generator=gen) * 0.01))
    return past, lora
