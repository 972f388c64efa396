"""SVLM tasks: the vision encoder, the token embedding and the KV-cache decoder on embeddings.

All three wrap one loaded HF ``*ForConditionalGeneration``; the family record
(``memlora.vision.families``) says where the language model lives. LoRA module paths are the
full-model paths PEFT wrote (``model.text_model.layers.0.self_attn.q_proj``), so the ONNX graph's
LoRA inputs and the ``.onnx_adapter`` tensors carry the adapter's own names.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..sources.adapters import LoraAdapter
from .decoder import TextShape, example_past_and_lora
from .lora import LoraLinear, inject_lora


@dataclass
class VisionTask(TextShape):
    """A loaded SVLM (float32, eval), its family, preprocessing contract and adapters."""

    model: nn.Module
    info: "object"  # memlora.vision.model_io.VisionModelInfo
    contract: "object"  # memlora.vision.preprocess.Contract
    adapters: dict[str, LoraAdapter] = field(default_factory=dict)

    @property
    def family(self):
        return self.info.family

    @property
    def text_config(self):
        return self.model.config.get_text_config()

    def language_model(self) -> nn.Module:
        return self.model.get_submodule(self.family.language_model)

    def lm_head(self) -> nn.Module:
        return self.model.get_submodule(self.family.lm_head)


class VisionEncoder(nn.Module):
    """``pixels [1, 3, S, S]`` (uint8 0..255, or float in the same range) -> ``[1, N, D]``.

    Rescale and normalise happen in the graph, so an app feeds the resized RGB bytes as they are.
    Fixed shape: one tile of ``S`` px.
    """

    def __init__(self, task: VisionTask):
        super().__init__()
        c = task.contract
        self.model = task.model
        self.fixed_tile = task.family.fixed_tile_encoder
        self.rescale = float(c.rescale_factor)
        self.register_buffer("mean", torch.tensor(c.image_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(c.image_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        if self.fixed_tile:
            emb = self.model.model.vision_model.embeddings
            self.register_buffer("position_ids", torch.arange(emb.num_patches).unsqueeze(0), persistent=False)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.to(torch.float32) * self.rescale - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Image embeddings of normalised pixels ``[1, 3, S, S]`` (what HF computes)."""
        if not self.fixed_tile:
            out = self.model.model.get_image_features(x).pooler_output
            return out if out.dim() == 3 else out.unsqueeze(0)
        # SmolVLM / Idefics3 for one full tile: no padding-image filter, and the bucketized
        # position ids of a full patch mask are simply 0..P-1.
        vm = self.model.model.vision_model
        emb = vm.embeddings
        h = emb.patch_embedding(x).flatten(2).transpose(1, 2) + emb.position_embedding(self.position_ids)
        h = vm.encoder(inputs_embeds=h, attention_mask=None).last_hidden_state
        return self.model.model.connector(vm.post_layernorm(h))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.features(self.normalise(pixels))


class TokenEmbedding(nn.Module):
    """``input_ids [1, T]`` -> ``[1, T, D]``: the language model's own embedding module (Gemma's
    sqrt(D) scale is part of it)."""

    def __init__(self, task: VisionTask):
        super().__init__()
        self.embed = task.model.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids)


class EmbedsKVDecoder(nn.Module):
    """Decoder step on embeddings with explicit past/present key-values (ONNX).

    Inputs: ``inputs_embeds [1, T, D]``, ``position_ids [1, T]``, ``attention_mask [1, 1, T, P+T]``
    (additive float: 0 = attend, float32 min = masked; the runner builds it, which is how
    Gemma3's bidirectional image blocks get in), past key/values per layer, and in external
    mode LoRA ``(A, B)`` per adapted module. Outputs: ``logits [1, T, V]`` and the presents.
    """

    def __init__(self, task: VisionTask, lora_modules: list[str] | None = None):
        super().__init__()
        self.model = task.model
        self.body = task.language_model()
        self.head = task.lm_head()
        self.softcap = getattr(task.text_config, "final_logit_softcapping", None)
        self.lora_paths = list(lora_modules or [])
        self.lora: dict[str, LoraLinear] = inject_lora(task.model, self.lora_paths) if self.lora_paths else {}

    def forward(self, inputs_embeds, position_ids, attention_mask, past, lora=None):
        from transformers import DynamicCache

        for path, ab in zip(self.lora_paths, lora or []):
            self.lora[path].ab = ab
        cache = DynamicCache()
        for i, (k, v) in enumerate(past):
            cache.update(k, v, i)
        try:
            out = self.body(inputs_embeds=inputs_embeds, position_ids=position_ids, attention_mask=attention_mask,
                            past_key_values=cache, use_cache=True)
        finally:
            for mod in self.lora.values():
                mod.ab = None
        logits = self.head(out.last_hidden_state)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        present = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return logits, present


def additive_mask(positions_q, total: int, block_ids=None):
    """``[1, 1, T, total]`` float mask: causal, plus (``block_ids`` given) bidirectional within
    each image block. ``block_ids[j]`` is the image block of key position j, -1 for text."""
    import numpy as np

    q = np.asarray(positions_q)[:, None]
    k = np.arange(total)[None, :]
    allowed = k <= q
    if block_ids is not None:
        b = np.asarray(block_ids)
        bq, bk = b[q[:, 0]][:, None], b[None, :total]
        allowed |= (bq >= 0) & (bq == bk)
    return np.where(allowed, 0.0, np.finfo(np.float32).min).astype(np.float32)[None, None]


class LanguageModelView(nn.Module):
    """The language model of an SVLM shaped like a ``*ForCausalLM`` (``.model`` body,
    ``.lm_head``, ``.config``), so the static-cache decoder wraps it unchanged."""

    def __init__(self, task: VisionTask):
        super().__init__()
        self.model = task.language_model()
        self.lm_head = task.lm_head()
        self.config = task.text_config
        self.softcap = getattr(self.config, "final_logit_softcapping", None)

    def forward(self, input_ids=None, inputs_embeds=None, **kwargs):
        """``*ForCausalLM.forward``: the body, then the head (and Gemma's final soft-cap)."""
        from transformers.modeling_outputs import CausalLMOutputWithPast

        out = self.model(input_ids=input_ids, inputs_embeds=inputs_embeds, **kwargs)
        logits = self.lm_head(out.last_hidden_state)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return CausalLMOutputWithPast(logits=logits, past_key_values=out.past_key_values)


def view_path(task: VisionTask, module: str) -> str:
    """A full-model module path as seen from ``LanguageModelView`` (``model.layers.0...``)."""
    prefix = task.family.language_model + "."
    if not module.startswith(prefix):
        raise ValueError(f"{module} is outside the language model")
    return "model." + module[len(prefix):]


def example_inputs(task: VisionTask, seq: int = 3, past_len: int = 2, rank: int = 4):
    """Example tensors for tracing the embeddings decoder (sizes > 1 so nothing specialises)."""
    gen = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, seq, task.hidden_size, generator=gen)
    pos = torch.arange(past_len, past_len + seq).unsqueeze(0)
    mask = torch.from_numpy(additive_mask(range(past_len, past_len + seq), past_len + seq))
    past, lora = example_past_and_lora(task, gen, past_len, rank)
    return embeds, pos, mask, past, lora


def remap_adapter(task: VisionTask, adapter: LoraAdapter) -> LoraAdapter:
    """The same adapter keyed by ``LanguageModelView`` paths (for wrappers built on the view)."""
    import dataclasses

    return dataclasses.replace(adapter, weights={view_path(task, m): w for m, w in adapter.weights.items()})


def static_embeds_decoder(task: VisionTask, max_seq_len: int, attention: str = "auto", image_marker: bool = False):
    """The static-KV-cache decoder of ``memlora.tasks.static_decoder`` on embeddings:
    ``text_decoder(inputs_embeds [1, T, D], input_pos [1]) -> logits [1, T, V]``, the signature
    ExecuTorch's ``MultimodalRunner`` calls.

    ``image_marker``: the input is ``[1, T, D + 1]``, its last column 1 on rows that came from
    the vision encoder and 0 on rows from the token embedding (``Marked``); each contiguous run of
    marked rows in one call is an image block whose rows attend to each other (Gemma3). The
    stock runner prefills every image as its own call, so a block never spans calls; a text
    chunk of any length carries 0s and stays causal. Math attention only (the mask is built here).
    Logits of every position (no ``last_logits_only``, unlike the text programs): one multimodal
    program is loaded at a time, and its parity compares the image prompt position by position.
    """
    import copy

    from .static_decoder import StaticKVDecoder

    hidden = task.hidden_size

    class EmbedsStaticDecoder(StaticKVDecoder):
        def forward(self, inputs_embeds: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
            if not image_marker:
                return self.decode(input_pos, inputs_embeds.shape[1], lambda: inputs_embeds)
            flag = inputs_embeds[0, :, hidden]
            return self.decode(input_pos, inputs_embeds.shape[1], lambda: inputs_embeds[..., :hidden],
                               also=lambda positions: self._image_blocks(flag, positions))

        def _image_blocks(self, flag: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
            """``[T, S]``: 1 where query and key are marked rows of the same run in this call."""
            prev = torch.cat([flag.new_zeros(1), flag[:-1]])
            run = torch.cumsum(flag * (1.0 - prev), 0)  # block number of each row (1, 2, ...)
            same = flag.unsqueeze(1) * flag.unsqueeze(0) * (run.unsqueeze(1) == run.unsqueeze(0)).to(flag.dtype)
            return torch.zeros(flag.shape[0], self.max_seq_len, dtype=flag.dtype).index_copy(1, positions, same)

    view = copy.deepcopy(LanguageModelView(task))
    return EmbedsStaticDecoder(view, max_seq_len, "math" if image_marker else attention).eval()


class Marked(nn.Module):
    """``module``'s output ``[1, T, D]`` with a constant column ``value`` appended (``[1, T, D+1]``):
    1 from the vision encoder, 0 from the token embedding; the image-block signal of
    ``static_embeds_decoder(image_marker=True)``, set by which method made the row."""

    def __init__(self, module: nn.Module, value: float):
        super().__init__()
        self.module, self.value = module, float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        return torch.cat([out, torch.ones_like(out[..., :1]) * self.value], dim=-1)


def as_decoder_task(task: VisionTask, names: list[str]):
    """The SVLM's language model as a text ``DecoderTask`` (``LanguageModelView`` and adapters keyed
    by its paths), so the text backends export the text-only adapters in their usual layout."""
    from dataclasses import replace

    from .decoder import DecoderTask

    info = replace(task.info, family=task.family.text)  # the text backends read family.model_type
    return DecoderTask(LanguageModelView(task), info, {n: remap_adapter(task, task.adapters[n]) for n in names})
