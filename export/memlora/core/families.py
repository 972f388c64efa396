"""Model families, looked up by the ``model_type`` of a Hugging Face config.

Adding a family is one entry in ``FAMILIES``; nothing else in memlora branches on model names.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import MemloraError

# Linear layers a MemLoRA adapter may target in these decoder families.
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    """What memlora needs to know about one decoder family.

    Attributes:
        model_type: the ``model_type`` in config.json.
        config_class: name of the transformers config class (for presets).
        chat_format: key into ``memlora.memory.chat`` formats.
        special_tokens: tokens a preset tokenizer reserves (bos, eos, pad, turn markers).
        bos/eos/pad: which of those the config points at.
        attn_implementation: transformers attention path used for export and reference.
            Eager everywhere: one path for every backend, and Gemma2's logit soft-capping needs it.
    """

    model_type: str
    config_class: str
    chat_format: str
    special_tokens: tuple[str, ...]
    bos: str
    eos: str
    pad: str
    attn_implementation: str = "eager"
    notes: str = ""


_CHATML = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_LLAMA3 = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
_GEMMA = ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>")

FAMILIES: dict[str, Family] = {
    "llama": Family("llama", "LlamaConfig", "llama3", _LLAMA3, "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"),
    "qwen2": Family("qwen2", "Qwen2Config", "chatml", _CHATML, "<|endoftext|>", "<|im_end|>", "<|endoftext|>"),
    "qwen3": Family("qwen3", "Qwen3Config", "chatml", _CHATML, "<|endoftext|>", "<|im_end|>", "<|endoftext|>"),
    "gemma2": Family("gemma2", "Gemma2Config", "gemma", _GEMMA, "<bos>", "<end_of_turn>", "<pad>",
                     notes="logit soft-capping; sliding-window layers"),
    "gemma3_text": Family("gemma3_text", "Gemma3TextConfig", "gemma", _GEMMA, "<bos>", "<end_of_turn>", "<pad>",
                          notes="text-only Gemma3; local/global attention layers"),
}

# Synonyms users type for the same family. Not ``gemma3``: that model_type is the Gemma-3
# vision-language model (``memlora.vision.families``), not the text-only ``gemma3_text``.
ALIASES: dict[str, str] = {}


def get_family(model_type: str, source: str | None = None) -> Family:
    """Return the family for ``model_type`` or raise a one-line error listing what is supported."""
    key = ALIASES.get(model_type, model_type)
    try:
        return FAMILIES[key]
    except KeyError:
        from ..vision.families import is_vision

        if is_vision(model_type):
            raise MemloraError(
                f"model_type {model_type!r} is a vision-language model, not a text decoder", path=source,
                fix="export it with memlora export (it takes the vision path), or point at a text model") from None
        raise MemloraError(
            f"model_type {model_type!r} is not a supported family",
            path=source,
            fix=f"use a model of one of: {', '.join(sorted(FAMILIES))}",
        ) from None
