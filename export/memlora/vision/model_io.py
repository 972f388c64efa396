"""Check an SVLM folder and its adapters before any weight is read; load it for export."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..sources.adapters import LoraAdapter, read_adapter
from ..core.errors import MemloraError
from ..sources.model_io import check_safetensors
from .families import VisionFamily, get_vision_family
from .preprocess import read_processor_config


@dataclass
class VisionModelInfo:
    """A checked SVLM folder: config, family, processor config, files (no weights loaded)."""

    path: Path
    config: dict
    family: VisionFamily
    weight_files: list[Path]
    tokenizer_file: Path
    processor_config: dict
    preset: str | None = None

    @property
    def config_sha256(self) -> str:
        return hashlib.sha256((self.path / "config.json").read_bytes()).hexdigest()


def inspect_vlm_dir(path: str | Path) -> VisionModelInfo:
    """config.json of a known vision family, safetensors, tokenizer.json, preprocessor_config.json."""
    path = Path(path)
    cfg_file = path / "config.json"
    config = json.loads(cfg_file.read_text())
    family = get_vision_family(config.get("model_type", "<missing>"), str(cfg_file))
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise MemloraError("no weights (*.safetensors) found", path, "save the model with save_pretrained")
    for w in weights:
        check_safetensors(w)
    tok = path / "tokenizer.json"
    if not tok.is_file():
        raise MemloraError("no tokenizer.json", path, "save the tokenizer with a fast tokenizer's save_pretrained")
    processor = read_processor_config(path)
    preset_file = path / "memlora_preset.json"
    preset = json.loads(preset_file.read_text())["preset"] if preset_file.is_file() else None
    return VisionModelInfo(path, config, family, weights, tok, processor, preset)


def linear_shapes(info: VisionModelInfo) -> dict[str, tuple[int, int]]:
    """Every nn.Linear of the whole SVLM (vision tower included) from a meta-device skeleton."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(info.path)
    with torch.device("meta"):
        skeleton = AutoModelForImageTextToText.from_config(config)
    return {n: (m.in_features, m.out_features) for n, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear)}


def read_vision_adapters(info: VisionModelInfo, adapters: dict[str, Path]) -> dict[str, LoraAdapter]:
    """Validate each adapter like a text adapter, then refuse any that touches the vision tower
    or projector: the memory adapters (and vqa) attach to the language model only."""
    shapes = linear_shapes(info)
    base_class = (info.config.get("architectures") or [None])[0]
    prefix = info.family.language_model + "."
    out: dict[str, LoraAdapter] = {}
    for name, path in adapters.items():
        adapter = read_adapter(name, path, shapes, base_class)
        outside = sorted(m for m in adapter.weights if not m.startswith(prefix))
        if outside:
            vision = [m for m in outside if m.startswith(info.family.vision_modules)]
            what = "the vision tower" if vision else "modules outside the language model"
            raise MemloraError(
                f"adapter {name!r} targets {what} ({len(outside)} modules, e.g. {outside[0]}); MemLoRA adapters "
                "attach to the language model only", Path(path) / "adapter_config.json",
                f"retrain with target_modules limited to the language model, e.g. the regex "
                f"'{prefix.replace('.', chr(92) + '.')}layers\\.\\d+\\..*(q_proj|v_proj)'")
        out[name] = adapter
    return out


def load_vlm(info: VisionModelInfo):
    """The SVLM in float32, eval mode, eager attention (one path for every backend)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from ..sources.model_io import quiet_transformers

    quiet_transformers()
    return AutoModelForImageTextToText.from_pretrained(info.path, dtype=torch.float32,
                                                       attn_implementation="eager").eval()


def build_vision_task(info: VisionModelInfo, adapters: dict[str, LoraAdapter]):
    """Load the weights, resolve the preprocessing contract (tokens per image measured from the
    encoder itself), and return the task."""
    import torch

    from ..tasks.vision import VisionEncoder, VisionTask
    from .preprocess import build_contract

    model = load_vlm(info)
    task = VisionTask(model, info, None, adapters)
    provisional = build_contract(info.family, info.config, info.processor_config, info.tokenizer_file, 0)
    task.contract = provisional
    tile = provisional.tile
    with torch.no_grad():
        n = VisionEncoder(task)(torch.zeros(1, 3, tile, tile, dtype=torch.uint8)).shape[1]
    task.contract = build_contract(info.family, info.config, info.processor_config, info.tokenizer_file, n)
    return task
