"""The preprocessing contract of an exported SVLM and its NumPy reference.

memlora's contract (written to ``vision/preprocess.json`` beside the HF processor config, verbatim):
the app converts the image to RGB, resizes it to one ``tile x tile`` square with the processor's
resampling filter, and feeds the bytes as ``uint8 [1, 3, tile, tile]`` (channels first). Rescale
(``rescale_factor``) and normalisation (``image_mean`` / ``image_std``) are inside the vision
graph. The prompt gets ``before + [image_token] * tokens_per_image + after`` where the image goes.
The reference here refuses what the contract does not cover (another size, another mode), so an
app bug surfaces as an error, not as silently wrong answers.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.errors import MemloraError

PREPROCESS_FILE = "preprocessor_config.json"
FORMAT = "memlora-vision-preprocess"


@dataclass(frozen=True)
class Contract:
    """What an app must do to an image and a prompt, resolved for one SVLM (one tile)."""

    family: str
    tile: int
    resample: str
    rescale_factor: float
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    image_token: str
    image_token_id: int
    tokens_per_image: int
    before: tuple[str, ...]
    after: tuple[str, ...]
    before_ids: tuple[int, ...]
    after_ids: tuple[int, ...]
    bidirectional_image: bool
    input_dtype: str = "uint8"
    layout: str = "NCHW"
    pad_value: int = 0

    def to_json(self, processor_config: dict) -> dict:
        rules = {
            "mode": "convert to RGB (3 channels, no alpha) before anything else",
            "resize": f"resize to exactly {self.tile}x{self.tile} px with {self.resample} resampling "
                      "(aspect ratio not kept: one tile, no splitting, no padding)",
            "input": f"{self.input_dtype} [1, 3, {self.tile}, {self.tile}], channels first, values 0..255",
            "in_graph": "x * rescale_factor, then (x - image_mean) / image_std per channel",
            "prompt": "where the image goes: before_ids + [image_token_id] * tokens_per_image + after_ids",
            "attention": ("image tokens attend to each other within one image block (bidirectional)"
                          if self.bidirectional_image else "causal everywhere"),
        }
        return {"format": FORMAT, "version": 1, "contract": asdict(self), "rules": rules,
                "hf_processor_config": processor_config}

    def expansion_ids(self) -> list[int]:
        return [*self.before_ids, *([self.image_token_id] * self.tokens_per_image), *self.after_ids]


def read_processor_config(model_dir: Path) -> dict:
    """The folder's ``preprocessor_config.json``, or the one-line error that says how to add it."""
    path = Path(model_dir) / PREPROCESS_FILE
    if not path.is_file():
        raise MemloraError(f"vision-language model folder has no {PREPROCESS_FILE}", model_dir,
                           "save the processor next to the model (AutoProcessor.save_pretrained(folder))")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MemloraError(f"{PREPROCESS_FILE} is not valid JSON ({e.msg})", path, "restore the file") from None


def _tile(vision_config: dict) -> int:
    size = vision_config.get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise MemloraError(f"non-square vision tile {size}", fix="use a model with a square image_size")
        size = size[0]
    return int(size)


def build_contract(family, config: dict, processor: dict, tokenizer_file: Path, tokens_per_image: int) -> Contract:
    """Resolve the contract from the model config, the processor config and the tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    image_token_id = config.get(family.image_token_key)
    if image_token_id is None or tok.id_to_token(int(image_token_id)) != family.image_token:
        raise MemloraError(f"config {family.image_token_key}={image_token_id} is not the {family.image_token} token "
                           "of tokenizer.json", Path(tokenizer_file).parent, "save the model with its own tokenizer")

    def ids(parts: Sequence[str]) -> tuple[int, ...]:
        out: list[int] = []
        for p in parts:
            tid = tok.token_to_id(p)
            out.extend([tid] if tid is not None else tok.encode(p, add_special_tokens=False).ids)
        return tuple(out)

    mean = tuple(float(v) for v in processor.get("image_mean", (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in processor.get("image_std", (0.5, 0.5, 0.5)))
    if processor.get("do_normalize", True) is False:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    rescale = float(processor.get("rescale_factor", 1 / 255)) if processor.get("do_rescale", True) else 1.0
    return Contract(family.model_type, _tile(config.get("vision_config", {})), family.resample, rescale, mean, std,
                    family.image_token, int(image_token_id), int(tokens_per_image), tuple(family.before),
                    tuple(family.after), ids(family.before), ids(family.after), family.bidirectional_image)


def contract_from_json(data: dict) -> Contract:
    c = dict(data["contract"])
    for k in ("image_mean", "image_std", "before", "after", "before_ids", "after_ids"):
        c[k] = tuple(c[k])
    return Contract(**c)


# ---------------------------------------------------------------------------------------------
# NumPy reference (what the apps reproduce)


def check_image(image: np.ndarray, contract: Contract, where: str = "image") -> np.ndarray:
    """Validate an ``H x W x 3`` uint8 RGB image of exactly one tile; return it."""
    a = np.asarray(image)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (1, 4)):
        mode = "grayscale" if a.ndim == 2 or a.shape[-1] == 1 else "RGBA"
        raise MemloraError(f"{where} is {mode}, the vision encoder takes RGB", fix="convert the image to RGB first")
    if a.ndim != 3 or a.shape[-1] != 3:
        raise MemloraError(f"{where} has shape {a.shape}, expected (H, W, 3)", fix="pass an H x W x 3 RGB array")
    if a.dtype != np.uint8:
        raise MemloraError(f"{where} has dtype {a.dtype}, expected uint8", fix="pass 0..255 bytes (np.uint8)")
    if a.shape[:2] != (contract.tile, contract.tile):
        raise MemloraError(
            f"{where} is {a.shape[1]}x{a.shape[0]} px, the vision encoder takes {contract.tile}x{contract.tile}",
            fix=f"resize to {contract.tile}x{contract.tile} with {contract.resample} resampling (vision/preprocess.json)")
    return a


def pixels(image: np.ndarray, contract: Contract) -> np.ndarray:
    """The vision graph's input: ``uint8 [1, 3, tile, tile]``."""
    return np.ascontiguousarray(check_image(image, contract).transpose(2, 0, 1)[None])


def normalise(pix: np.ndarray, contract: Contract) -> np.ndarray:
    """What the graph computes first (float32), for checking an app's own normalisation."""
    mean = np.asarray(contract.image_mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(contract.image_std, np.float32).reshape(1, 3, 1, 1)
    return ((pix.astype(np.float32) * np.float32(contract.rescale_factor)) - mean) / std


def expand_prompt(before_ids: Sequence[int], after_ids: Sequence[int], contract: Contract) -> list[int]:
    """``before_ids + image expansion + after_ids``: the ids of a prompt with one image."""
    return [*before_ids, *contract.expansion_ids(), *after_ids]


def image_blocks(ids: Sequence[int], contract: Contract) -> list[int]:
    """Per position, the index of its image block (runs of the image token), -1 for text."""
    out, block, prev = [], -1, False
    for t in ids:
        cur = t == contract.image_token_id
        if cur and not prev:
            block += 1
        out.append(block if cur else -1)
        prev = cur
    return out
