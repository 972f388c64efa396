"""Seeded SVLM presets: tiny vision-language models written as real HF folders, no downloads.

A preset writes ``model/`` (config.json, safetensors, tokenizer.json with the family's image
special tokens, and the image processor's ``preprocessor_config.json``) and four PEFT adapters
(``extract``, ``update``, ``answer``, ``vqa``) on the **language model only**, with random,
non-zero A and B. It also writes ``bad_adapters/vision_tower``: suffix targets (``q_proj``,
``v_proj``) that also hit the vision tower, which ``memlora export`` must refuse.
Same name and seed, same bytes.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import MemloraError
from ..core.families import ATTN, MLP
from ..sources.presets import AdapterPreset, _randomize_lora
from .families import VISION_FAMILIES

VQA_ADAPTERS = (
    AdapterPreset("extract", 8, 16, ATTN + MLP),
    AdapterPreset("update", 4, 8, ATTN),
    AdapterPreset("answer", 16, 16, ("q_proj", "v_proj", "down_proj")),
    AdapterPreset("vqa", 8, 16, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj")),
)
BAD_VISION_ADAPTER = AdapterPreset("vision_tower", 4, 8, ("q_proj", "v_proj"))

_TEXT = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=2048, initializer_range=0.08)
_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=64,
               patch_size=8)
TINY_TILE = 64  # px; 8x8 patches of 8 px, pooled 2x2 -> 16 tokens per image in every family


@dataclass(frozen=True)
class VisionPreset:
    """A named SVLM to write: family, top-level config (text/vision sub-dicts), tile, seed."""

    name: str
    model_type: str
    config: dict
    tile: int
    processor: dict
    seed: int = 0
    real_size: bool = False
    tokenizer_vocab: int = 1024
    description: str = ""


def _tiny(model_type: str) -> dict:
    if model_type == "smolvlm":
        return dict(vision_config=dict(_VISION), text_config=dict(_TEXT, model_type="llama", tie_word_embeddings=False),
                    scale_factor=2)
    if model_type == "internvl":
        return dict(vision_config=dict(_VISION, image_size=[64, 64], patch_size=[8, 8]),
                    text_config=dict(_TEXT, model_type="qwen2", tie_word_embeddings=True), downsample_ratio=0.5)
    return dict(vision_config=dict(_VISION), mm_tokens_per_image=16,
                text_config=dict(_TEXT, head_dim=16, sliding_window=4096, query_pre_attn_scalar=16))


_HALF = [0.5, 0.5, 0.5]
_IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])

VISION_PRESETS: dict[str, VisionPreset] = {p.name: p for p in (
    VisionPreset("tiny-smolvlm", "smolvlm", _tiny("smolvlm"), TINY_TILE, dict(
        do_image_splitting=False, size={"longest_edge": TINY_TILE}, max_image_size={"longest_edge": TINY_TILE},
        image_mean=_HALF, image_std=_HALF), seed=21, description="SmolVLM: 2-layer Llama + 2-layer SigLIP, 64 px"),
    VisionPreset("tiny-internvl", "internvl", _tiny("internvl"), TINY_TILE, dict(
        size={"height": TINY_TILE, "width": TINY_TILE}, crop_to_patches=False, image_mean=_IMAGENET[0],
        image_std=_IMAGENET[1]), seed=22, description="InternVL3: 2-layer Qwen2 + 2-layer InternViT, 64 px"),
    VisionPreset("tiny-gemma3-vl", "gemma3", _tiny("gemma3"), TINY_TILE, dict(
        size={"height": TINY_TILE, "width": TINY_TILE}, image_mean=_HALF, image_std=_HALF), seed=23,
        description="Gemma3: 2-layer Gemma3 text + 2-layer SigLIP, 64 px, bidirectional image blocks"),
    # Published shapes with random weights (benchmarks): latency does not depend on weight values.
    VisionPreset("smolvlm-256m-shape", "smolvlm", dict(
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=512, patch_size=16),
        text_config=dict(model_type="llama", vocab_size=49280, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                         rope_theta=100000.0, max_position_embeddings=8192, tie_word_embeddings=True),
        scale_factor=4), 512, dict(do_image_splitting=False, size={"longest_edge": 512},
                                   max_image_size={"longest_edge": 512}, image_mean=_HALF, image_std=_HALF),
        seed=30, real_size=True, description="SmolVLM-256M shape (64 tokens per 512 px tile), random weights"),
    VisionPreset("smolvlm-500m-shape", "smolvlm", dict(
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=512, patch_size=16),
        text_config=dict(model_type="llama", vocab_size=49280, hidden_size=960, intermediate_size=2560,
                         num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5, head_dim=64,
                         rope_theta=100000.0, max_position_embeddings=8192, tie_word_embeddings=True),
        scale_factor=4), 512, dict(do_image_splitting=False, size={"longest_edge": 512},
                                   max_image_size={"longest_edge": 512}, image_mean=_HALF, image_std=_HALF),
        seed=31, real_size=True, description="SmolVLM-500M shape, random weights"),
    VisionPreset("internvl3-1b-shape", "internvl", dict(
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=[448, 448], patch_size=[14, 14]),
        text_config=dict(model_type="qwen2", vocab_size=151674, hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         rope_theta=1000000.0, max_position_embeddings=32768, tie_word_embeddings=True),
        downsample_ratio=0.5), 448, dict(size={"height": 448, "width": 448}, crop_to_patches=False,
                                         image_mean=_IMAGENET[0], image_std=_IMAGENET[1]),
        seed=32, real_size=True, description="InternVL3-1B shape (256 tokens per 448 px tile), random weights"),
)}


def get_vision_preset(name: str) -> VisionPreset:
    try:
        return VISION_PRESETS[name]
    except KeyError:
        raise MemloraError(f"unknown vision preset {name!r}", fix=f"use one of: {', '.join(VISION_PRESETS)}") from None


def language_model_targets(language_model: str, suffixes: tuple[str, ...]) -> str:
    """A PEFT ``target_modules`` regex that matches ``suffixes`` inside the language model only
    (plain suffixes would also hit the vision tower's ``q_proj``/``v_proj``...)."""
    return rf"{re.escape(language_model)}\.layers\.\d+\.(self_attn|mlp)\.({'|'.join(suffixes)})"


def write_vision_preset(name: str, out: str | Path) -> tuple[Path, dict[str, Path]]:
    """Write preset ``name`` to ``out``: ``model/``, ``adapters/<4 names>``, ``bad_adapters/vision_tower``.

    Returns the model folder and a mapping adapter name -> PEFT folder (the four good ones).
    """
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, PreTrainedTokenizerFast

    from ..sources.model_io import quiet_transformers
    from ..sources.tokenizer_train import train_bpe

    quiet_transformers()
    preset = get_vision_preset(name)
    fam = VISION_FAMILIES[preset.model_type]
    text = fam.text
    out = Path(out)
    model_dir = out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)

    tok = train_bpe(preset.tokenizer_vocab, fam.special_tokens)
    ids = {t: tok.token_to_id(t) for t in fam.special_tokens}
    cfg = json.loads(json.dumps(preset.config))
    cfg["text_config"].update(bos_token_id=ids[text.bos], eos_token_id=ids[text.eos], pad_token_id=ids[text.pad])
    cfg[fam.image_token_key] = ids[fam.image_token]
    if preset.model_type == "gemma3":
        cfg.update(boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"])
    config = getattr(transformers, fam.config_class)(**cfg)

    torch.manual_seed(preset.seed)
    model = AutoModelForImageTextToText.from_config(config, attn_implementation="eager").eval()
    _randomize_constants(model, preset.seed)
    model.save_pretrained(model_dir)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=text.bos, eos_token=text.eos,
                            pad_token=text.pad).save_pretrained(model_dir)
    processor = getattr(transformers, fam.image_processor_class)(**preset.processor)
    processor.save_pretrained(model_dir)
    (model_dir / "memlora_preset.json").write_text(json.dumps({"preset": name, "seed": preset.seed}))

    paths: dict[str, Path] = {}
    plan = [(ap, out / "adapters" / ap.name, language_model_targets(fam.language_model, ap.targets))
            for ap in VQA_ADAPTERS]
    plan.append((BAD_VISION_ADAPTER, out / "bad_adapters" / BAD_VISION_ADAPTER.name, list(BAD_VISION_ADAPTER.targets)))
    for i, (ap, path, targets) in enumerate(plan):
        lcfg = LoraConfig(r=ap.rank, lora_alpha=ap.alpha, target_modules=targets, lora_dropout=0.0)
        peft_model = get_peft_model(model, lcfg)
        _randomize_lora(peft_model, seed=preset.seed * 100 + i)
        peft_model.save_pretrained(path)
        model = peft_model.unload()
        if path.parent.name == "adapters":
            paths[ap.name] = path
    return model_dir, paths


def _randomize_constants(model, seed: int) -> None:
    """Give every constant-valued parameter (norms at one, Gemma3's all-zero projector, zero
    biases) a random value: a layer of zeros or ones lets a wrong lowering pass parity."""
    import torch

    gen = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.numel() > 1 and float(p.std()) == 0.0:
                scale = 0.1 if float(p.abs().max()) > 0 else 0.05
                p.add_(torch.randn(p.shape, generator=gen) * scale)
