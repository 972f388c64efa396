"""Load a Hugging Face causal-LM folder, checking everything cheap before any weight is read."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import MemloraError
from ..core.families import Family, get_family


@dataclass
class ModelInfo:
    """A checked model folder: its config, family and files (no weights loaded yet)."""

    path: Path
    config: dict
    family: Family
    weight_files: list[Path]
    tokenizer_file: Path
    preset: str | None = None

    @property
    def config_sha256(self) -> str:
        return hashlib.sha256((self.path / "config.json").read_bytes()).hexdigest()


def inspect_model_dir(path: str | Path, *, allow_pickle: bool = False, trust_remote_code: bool = False) -> ModelInfo:
    """Check a model folder: config.json, a known family, safetensors weights, tokenizer.json.

    Raises MemloraError naming the file at fault and the fix.
    """
    path = Path(path)
    if not path.is_dir():
        raise MemloraError("model folder not found", path, "pass --model a Hugging Face folder or a preset name")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise MemloraError("no config.json", path, "point --model at a folder written by save_pretrained")
    try:
        config = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MemloraError(f"config.json is not valid JSON ({e.msg if hasattr(e, 'msg') else e})", cfg_file,
                           "restore the file from the original model") from None
    if "auto_map" in config and not trust_remote_code:
        raise MemloraError("the model needs custom code (auto_map in config.json)", cfg_file,
                           "review the code, then pass --trust-remote-code")
    family = get_family(config.get("model_type", "<missing>"), str(cfg_file))

    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickles = sorted(path.glob("*.bin")) + sorted(path.glob("*.pt"))
        if not pickles:
            raise MemloraError("no weights (*.safetensors) found", path, "save the model with save_pretrained")
        if not allow_pickle:
            raise MemloraError("weights are pickle files, which can run code when loaded", pickles[0],
                               "convert them to safetensors, or pass --allow-pickle if you trust the source")
        weights = pickles
    else:
        for w in weights:
            check_safetensors(w)
    tok = path / "tokenizer.json"
    if not tok.is_file():
        raise MemloraError("no tokenizer.json", path, "save the tokenizer with a fast tokenizer's save_pretrained")
    preset_file = path / "memlora_preset.json"
    preset = json.loads(preset_file.read_text())["preset"] if preset_file.is_file() else None
    return ModelInfo(path, config, family, weights, tok, preset)


def check_safetensors(file: Path) -> list[str]:
    """Read a safetensors header (cheap) and return its tensor names; a clear error if corrupt."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            return list(f.keys())
    except Exception as e:  # safetensors raises several types for a damaged header
        raise MemloraError(f"corrupt safetensors file ({type(e).__name__}: {str(e)[:80]})", file,
                           "re-download or re-save the file") from None


def linear_shapes(info: ModelInfo) -> dict[str, tuple[int, int]]:
    """Map every nn.Linear path to (in_features, out_features), using a meta-device skeleton:
    no weights are allocated, so adapters can be validated before the heavy load."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(info.path)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return {n: (m.in_features, m.out_features) for n, m in skeleton.named_modules()
            if isinstance(m, torch.nn.Linear)}


def quiet_transformers() -> None:
    """No per-shard progress bars or advisory logs from transformers: memlora draws its own."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def load_model(info: ModelInfo):
    """Load the model in float32 for export and reference, eval mode, family attention path."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            info.path, dtype=torch.float32, attn_implementation=info.family.attn_implementation,
            use_safetensors=info.weight_files[0].suffix == ".safetensors")
    except OSError as e:
        raise MemloraError(f"could not load weights ({str(e)[:120]})", info.path, "check the weight files") from None
    return model.eval()
