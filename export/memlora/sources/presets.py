"""Built-in seeded presets: tiny models for tests and the default job, real-size shapes for benchmarks.

Nothing can be downloaded here, so a preset *writes* a real Hugging Face folder (config.json,
safetensors, tokenizer.json) and three real PEFT adapter folders with random, non-zero A and B.
The same name and seed always produce the same bytes, so a bundle can be re-checked later by
regenerating its preset.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import MemloraError
from ..core.families import ATTN, FAMILIES, MLP

DEFAULT_PRESET = "tiny-qwen2"

_TINY = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
             initializer_range=0.08)


@dataclass(frozen=True)
class AdapterPreset:
    name: str
    rank: int
    alpha: int
    targets: tuple[str, ...]


# Ranks and targets differ on purpose: the external mode must handle adapters that disagree.
MEMORY_ADAPTERS = (
    AdapterPreset("extract", 8, 16, ATTN + MLP),
    AdapterPreset("update", 4, 8, ATTN),
    AdapterPreset("answer", 16, 16, ("q_proj", "v_proj", "down_proj")),
)


@dataclass(frozen=True)
class Preset:
    """A named model to write: family, config overrides, seed, and whether it is a real-size shape."""

    name: str
    model_type: str
    config: dict
    seed: int = 0
    real_size: bool = False
    tokenizer_vocab: int = 1024
    adapters: tuple[AdapterPreset, ...] = MEMORY_ADAPTERS
    description: str = ""
    dtype: str = "float32"


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("tiny-llama", "llama", dict(_TINY, tie_word_embeddings=False), seed=1,
           description="2-layer Llama, 64 wide (tests)"),
    Preset("tiny-qwen2", "qwen2", dict(_TINY, tie_word_embeddings=True), seed=2,
           description="2-layer Qwen2, tied embeddings (default)"),
    Preset("tiny-qwen3", "qwen3", dict(_TINY, head_dim=16, tie_word_embeddings=True), seed=3,
           description="2-layer Qwen3 with q/k norms (tests)"),
    Preset("tiny-gemma2", "gemma2", dict(_TINY, head_dim=16, sliding_window=4096, query_pre_attn_scalar=16,
                                          final_logit_softcapping=30.0, attn_logit_softcapping=50.0), seed=4,
           description="2-layer Gemma2 with soft-capping (tests)"),
    Preset("tiny-gemma3", "gemma3_text", dict(_TINY, head_dim=16, sliding_window=4096, query_pre_attn_scalar=16),
           seed=5, description="2-layer Gemma3 text (tests)"),
    # Published shapes with random weights: latency does not depend on weight values.
    Preset("qwen2.5-0.5b-shape", "qwen2", dict(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=True), seed=10, real_size=True, description="Qwen2.5-0.5B shape, random weights"),
    Preset("llama3.2-1b-shape", "llama", dict(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192), tie_word_embeddings=True),
           seed=11, real_size=True, description="Llama3.2-1B shape, random weights"),
    Preset("gemma2-2b-shape", "gemma2", dict(
        vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, max_position_embeddings=8192, sliding_window=4096,
        query_pre_attn_scalar=256, final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
           seed=12, real_size=True, description="Gemma2-2B shape, random weights", dtype="bfloat16"),
)}


def get_preset(name: str) -> Preset:
    """Look up a preset by name, with a one-line error listing the choices."""
    try:
        return PRESETS[name]
    except KeyError:
        raise MemloraError(f"unknown preset {name!r}", fix=f"use one of: {', '.join(PRESETS)}") from None


def write_preset(name: str, out: str | Path, config_overrides: dict | None = None) -> tuple[Path, dict[str, Path]]:
    """Write preset ``name`` to ``out``: ``out/model`` and ``out/adapters/<name>``.

    ``config_overrides`` replace config fields that do not change the weights' shapes
    (a distilled preset's longer ``max_position_embeddings``: RoPE has no position weights, so the
    weights stay byte for byte; its ``initializer_range``: the same draws at another scale), and
    are recorded in ``memlora_preset.json``. Returns the model folder and a mapping adapter name
    -> PEFT folder.
    """
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from .tokenizer_train import train_bpe
    from .model_io import quiet_transformers

    quiet_transformers()

    preset = get_preset(name)
    family = FAMILIES[preset.model_type]
    out = Path(out)
    model_dir, adapters_dir = out / "model", out / "adapters"
    model_dir.mkdir(parents=True, exist_ok=True)

    tok = train_bpe(preset.tokenizer_vocab, family.special_tokens)
    ids = {t: tok.token_to_id(t) for t in (family.bos, family.eos, family.pad)}
    overrides = dict(config_overrides or {})
    config = getattr(transformers, family.config_class)(
        **(preset.config | overrides), bos_token_id=ids[family.bos], eos_token_id=ids[family.eos], pad_token_id=ids[family.pad])

    torch.manual_seed(preset.seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=family.attn_implementation)
    _perturb_norms(model, preset.seed)
    model.eval()
    dtype = getattr(torch, preset.dtype)
    model.to(dtype).save_pretrained(model_dir)
    model.to(torch.float32)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=family.bos, eos_token=family.eos,
                            pad_token=family.pad).save_pretrained(model_dir)
    (model_dir / "memlora_preset.json").write_text(json.dumps(
        {"preset": name, "seed": preset.seed} | ({"config_overrides": overrides} if overrides else {})))

    paths: dict[str, Path] = {}
    for i, ap in enumerate(preset.adapters):
        lcfg = LoraConfig(r=ap.rank, lora_alpha=ap.alpha, target_modules=list(ap.targets), lora_dropout=0.0)
        peft_model = get_peft_model(model, lcfg)
        _randomize_lora(peft_model, seed=preset.seed * 100 + i)
        paths[ap.name] = adapters_dir / ap.name
        peft_model.save_pretrained(paths[ap.name])
        model = peft_model.unload()
    return model_dir, paths


def _perturb_norms(model, seed: int) -> None:
    """Give every norm weight a random value: freshly initialised norms are all ones (or zeros for
    Gemma), which would let a wrong norm lowering pass parity unnoticed."""
    import torch

    gen = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def _randomize_lora(peft_model, seed: int) -> None:
    """PEFT initialises B to zero (a no-op adapter); draw both A and B so each adapter really
    changes the output, and by enough that a negative control is far above any tolerance."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
            elif "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3 / p.shape[1] ** 0.5)
