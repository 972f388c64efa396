"""PEFT LoRA adapters: read, validate against a base before heavy work, fuse as a pure function."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import MemloraError

_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


@dataclass
class LoraWeights:
    """One adapted linear layer: ``delta_W = scale * B @ A`` with A ``[r, in]`` and B ``[out, r]``."""

    A: torch.Tensor
    B: torch.Tensor
    scale: float

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def delta(self) -> torch.Tensor:
        return self.scale * (self.B.double() @ self.A.double())

    def scaled_B(self) -> torch.Tensor:
        """B with the scale folded in, so runtimes need no per-adapter scalar."""
        return (self.B * self.scale).contiguous()


@dataclass
class LoraAdapter:
    """A validated PEFT LoRA adapter, keyed by module path in the base model."""

    name: str
    path: Path
    rank: int
    alpha: float
    targets: list[str]
    weights: dict[str, LoraWeights] = field(default_factory=dict)
    sha256: str = ""

    def summary(self) -> dict:
        return {"name": self.name, "rank": self.rank, "alpha": self.alpha, "targets": self.targets,
                "modules": len(self.weights), "source": str(self.path), "sha256": self.sha256}


def read_adapter(name: str, path: str | Path, linears: dict[str, tuple[int, int]],
                 base_class: str | None = None) -> LoraAdapter:
    """Read a PEFT folder and check it fits a base whose linear layers are ``linears``.

    Checks (all before the base weights are loaded): a LoRA adapter without DoRA, bias or
    modules_to_save; every adapted module exists in the base; A and B shapes match the base
    layer; rank and alpha positive; all weights finite; and, where PEFT recorded it, the base
    model class the adapter was trained on equals ``base_class``.
    """
    path = Path(path)
    cfg_file, w_file = path / "adapter_config.json", path / "adapter_model.safetensors"
    if not cfg_file.is_file():
        raise MemloraError("no adapter_config.json", path, "point --adapter NAME=PATH at a PEFT adapter folder")
    if not w_file.is_file():
        bin_file = path / "adapter_model.bin"
        fix = "re-save it with safetensors (PEFT save_pretrained default)" if bin_file.exists() else \
            "save the adapter with PEFT's save_pretrained"
        raise MemloraError("no adapter_model.safetensors", path, fix)
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise MemloraError(f"adapter_config.json is not valid JSON ({e.msg})", cfg_file, "restore the file") from None
    _check_config(cfg, cfg_file)
    trained_on = (cfg.get("auto_mapping") or {}).get("base_model_class")
    if base_class and trained_on and trained_on != base_class:
        raise MemloraError(f"adapter was trained on a {trained_on}, but the base model is a {base_class}", cfg_file,
                           "use the adapter trained for this base model")

    from safetensors.torch import load_file

    try:
        tensors = load_file(str(w_file))
    except Exception as e:  # damaged files raise several error types
        raise MemloraError(f"corrupt safetensors file ({type(e).__name__})", w_file, "re-save the adapter") from None

    pairs = _pairs(tensors, w_file)
    r0, alpha0 = int(cfg["r"]), float(cfg["lora_alpha"])
    adapter = LoraAdapter(name, path, r0, alpha0, sorted({k.rsplit(".", 1)[-1] for k in pairs}),
                          sha256=hashlib.sha256(w_file.read_bytes()).hexdigest())
    for module, ab in sorted(pairs.items()):
        adapter.weights[module] = _module_weights(module, ab, linears, cfg, cfg_file, w_file)
    if not adapter.weights:
        raise MemloraError("adapter holds no LoRA weights", w_file, "re-save the adapter")
    return adapter


def _pairs(tensors: dict, w_file: Path) -> dict[str, dict[str, torch.Tensor]]:
    """``{module: {"A": tensor, "B": tensor}}`` from a PEFT state dict; anything else is refused."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if not m:
            raise MemloraError(f"unexpected tensor {key!r} (not a LoRA A/B weight)", w_file,
                               "export a plain LoRA adapter (no modules_to_save, no embeddings)")
        pairs.setdefault(m["module"], {})[m["ab"]] = t.float()
    return pairs


def _module_weights(module: str, ab: dict, linears: dict, cfg: dict, cfg_file: Path, w_file: Path) -> LoraWeights:
    """One module's checked A/B and its scale (rank and alpha patterns, rsLoRA)."""
    r0, alpha0 = int(cfg["r"]), float(cfg["lora_alpha"])
    if module not in linears:
        raise MemloraError(f"adapter targets {module!r}, which the base model does not have", w_file,
                           "use the adapter trained for this base model")
    if set(ab) != {"A", "B"}:
        raise MemloraError(f"module {module!r} has only lora_{''.join(ab)}", w_file, "re-save the adapter")
    A, B = ab["A"], ab["B"]
    fan_in, fan_out = linears[module]
    r = A.shape[0]
    if A.shape != (r, fan_in) or B.shape != (fan_out, r):
        raise MemloraError(
            f"shape mismatch at {module}: A {tuple(A.shape)}, B {tuple(B.shape)} vs base layer "
            f"{fan_in}->{fan_out}", w_file, "this adapter was made for another base model; use a matching one")
    if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
        raise MemloraError(f"NaN or Inf in {module}", w_file, "retrain or re-save the adapter")
    rank = _pattern(cfg.get("rank_pattern") or {}, module, r0)
    alpha = float(_pattern(cfg.get("alpha_pattern") or {}, module, alpha0))
    if rank != r:
        raise MemloraError(f"{module}: rank {r} in weights but {rank} in config", cfg_file, "re-save the adapter")
    scale = alpha / (r ** 0.5 if cfg.get("use_rslora") else r)
    return LoraWeights(A, B, scale)


def _check_config(cfg: dict, cfg_file: Path) -> None:
    if cfg.get("peft_type") != "LORA":
        raise MemloraError(f"peft_type {cfg.get('peft_type')!r} is not LORA", cfg_file, "use a LoRA adapter")
    unsupported = [k for k in ("use_dora", "fan_in_fan_out", "modules_to_save", "layer_replication",
                               "trainable_token_indices") if cfg.get(k)]
    if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
        unsupported.append("bias")
    if unsupported:
        raise MemloraError(f"unsupported adapter options: {', '.join(unsupported)}", cfg_file,
                           "train a plain LoRA adapter (no DoRA, bias or extra trainable modules)")
    if int(cfg.get("r", 0)) <= 0 or float(cfg.get("lora_alpha", 0)) <= 0:
        raise MemloraError(f"rank {cfg.get('r')} / alpha {cfg.get('lora_alpha')} must be positive", cfg_file,
                           "fix r and lora_alpha in adapter_config.json")


def _pattern(patterns: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern: the key matches the module path or its tail."""
    for key, value in patterns.items():
        if module == key or module.endswith("." + key) or re.fullmatch(key, module):
            return value
    return default


def fuse_weight(weight: torch.Tensor, lw: LoraWeights, where: str, source: Path) -> torch.Tensor:
    """``W + scale * B @ A`` formed in float64 and cast back (one rounding), refusing NaN/Inf."""
    fused = (weight.double() + lw.delta()).to(weight.dtype)
    if not torch.isfinite(fused).all():
        raise MemloraError(f"fusing produced NaN/Inf at {where}", source, "check the adapter's scale and weights")
    return fused


def fuse_state_dict(state: dict[str, torch.Tensor], adapter: LoraAdapter) -> dict[str, torch.Tensor]:
    """Return a new state dict with every adapted layer fused (a pure function; input untouched)."""
    out = dict(state)
    for module, lw in adapter.weights.items():
        key = f"{module}.weight"
        if key not in state:
            raise MemloraError(f"base has no weight {key}", adapter.path, "use the adapter trained for this base")
        out[key] = fuse_weight(state[key], lw, module, adapter.path)
    return out
