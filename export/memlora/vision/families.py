"""Vision-language families, looked up by ``model_type`` like the text families.

Each entry names the language model inside the HF ``*ForConditionalGeneration`` (the only part a
memory adapter may touch), the image special tokens and how one image expands in the prompt.
Nothing else in memlora branches on a vision family's name.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import MemloraError
from ..core.families import FAMILIES, Family


@dataclass(frozen=True)
class VisionFamily:
    """What memlora needs to know about one SVLM family.

    Attributes:
        model_type: the ``model_type`` of the top-level config.json.
        config_class: transformers config class (for presets).
        text_model_type: key into ``memlora.families.FAMILIES`` for the language model.
        language_model: module path of the language-model body in the HF model.
        lm_head: module path of the output projection.
        vision_modules: module path prefixes of the vision tower and projector (adapters on these
            are refused).
        image_token: the placeholder repeated once per image embedding.
        image_token_key: where the top-level config stores its id.
        before / after: special tokens (or text) around the image tokens, in prompt order.
        image_processor_class: the HF (PIL) image processor whose config the folder ships.
        resample: the processor's resampling filter (apps resize to the tile with it).
        bidirectional_image: HF lets image tokens attend to each other within one image block.
        fixed_tile_encoder: HF's ``get_image_features`` filters padding images and bucketizes
            position ids (breaks ExecuTorch and Core ML); the encoder task computes the same
            thing for one full tile with precomputed position ids instead.
        pixel_values_ndim: HF's ``pixel_values`` rank (Idefics3/SmolVLM: ``[B, images, 3, S, S]``).
        real_sizes: published shapes, for benchmarks and docs: tile size, tokens per image.
    """

    model_type: str
    config_class: str
    text_model_type: str
    language_model: str
    lm_head: str
    vision_modules: tuple[str, ...]
    image_token: str
    image_token_key: str
    before: tuple[str, ...]
    after: tuple[str, ...]
    image_processor_class: str
    resample: str
    bidirectional_image: bool = False
    fixed_tile_encoder: bool = False
    pixel_values_ndim: int = 4
    real_sizes: str = ""

    @property
    def text(self) -> Family:
        return FAMILIES[self.text_model_type]

    @property
    def special_tokens(self) -> tuple[str, ...]:
        extra = [t for t in (self.image_token, *self.before, *self.after) if t.startswith("<")]
        return tuple(dict.fromkeys((*self.text.special_tokens, *extra)))


VISION_FAMILIES: dict[str, VisionFamily] = {f.model_type: f for f in (
    VisionFamily("smolvlm", "SmolVLMConfig", "llama", "model.text_model", "lm_head",
                 ("model.vision_model", "model.connector"), "<image>", "image_token_id",
                 ("<fake_token_around_image>", "<global-img>"), ("<fake_token_around_image>",),
                 "SmolVLMImageProcessorPil", "lanczos", fixed_tile_encoder=True, pixel_values_ndim=5,
                 real_sizes="SmolVLM-256M/500M: one 512 px tile = 64 tokens (pixel shuffle 4)"),
    VisionFamily("idefics3", "Idefics3Config", "llama", "model.text_model", "lm_head",
                 ("model.vision_model", "model.connector"), "<image>", "image_token_id",
                 ("<fake_token_around_image>", "<global-img>"), ("<fake_token_around_image>",),
                 "Idefics3ImageProcessorPil", "lanczos", fixed_tile_encoder=True, pixel_values_ndim=5, real_sizes="Idefics3-8B: 364 px tiles = 169 tokens"),
    VisionFamily("internvl", "InternVLConfig", "qwen2", "model.language_model", "lm_head",
                 ("model.vision_tower", "model.multi_modal_projector"), "<IMG_CONTEXT>", "image_token_id",
                 ("<img>",), ("</img>",), "GotOcr2ImageProcessorPil", "bicubic",
                 real_sizes="InternVL3-1B: one 448 px tile = 256 tokens (pixel shuffle 0.5)"),
    VisionFamily("gemma3", "Gemma3Config", "gemma3_text", "model.language_model", "lm_head",
                 ("model.vision_tower", "model.multi_modal_projector"), "<image_soft_token>",
                 "image_token_index", ("\n\n", "<start_of_image>"), ("<end_of_image>", "\n\n"),
                 "Gemma3ImageProcessorPil", "bilinear", bidirectional_image=True,
                 real_sizes="Gemma3-4B: one 896 px tile = 256 tokens"),
)}
ALIASES = {"smolvlm2": "smolvlm"}


def get_vision_family(model_type: str, source: str | None = None) -> VisionFamily:
    """The vision family for ``model_type``, or a one-line error listing what is supported."""
    try:
        return VISION_FAMILIES[ALIASES.get(model_type, model_type)]
    except KeyError:
        raise MemloraError(f"model_type {model_type!r} is not a supported vision-language family", path=source,
                           fix=f"use a model of one of: {', '.join(sorted(VISION_FAMILIES))}") from None


def is_vision(model_type: str | None) -> bool:
    return ALIASES.get(model_type, model_type) in VISION_FAMILIES
