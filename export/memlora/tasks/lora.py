"""LoRA inside a model for export: an unfused LoRA linear, and exact in-place fusing."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..adapters import LoraAdapter, fuse_weight


class LoraLinear(nn.Module):
    """``base(x) + (x @ A^T) @ B^T`` with the scale already folded into B.

    ``ab`` is whatever the backend needs: graph inputs set per call (ONNX), or constant
    parameters baked into one adapter's program (ExecuTorch, Core ML). ``None`` means the base
    layer alone. Two small matmuls instead of a merged weight keep the base weights identical
    across adapters, which is what lets one base file be shared.
    """

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.ab: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.ab is not None:
            a, b = self.ab
            y = y + torch.matmul(torch.matmul(x, a.transpose(0, 1)), b.transpose(0, 1))
        return y


def inject_lora(model: nn.Module, modules: list[str]) -> dict[str, LoraLinear]:
    """Replace the named nn.Linear modules with LoraLinear wrappers (idempotent)."""
    out: dict[str, LoraLinear] = {}
    for path in modules:
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        current = getattr(parent, attr)
        if not isinstance(current, LoraLinear):
            current = LoraLinear(current)
            setattr(parent, attr, current)
        out[path] = current
    return out


def remove_lora(model: nn.Module) -> None:
    """Undo ``inject_lora``: put the plain base linears back."""
    for path, mod in list(model.named_modules()):
        if isinstance(mod, LoraLinear):
            parent_path, _, attr = path.rpartition(".")
            setattr(model.get_submodule(parent_path), attr, mod.base)


@contextlib.contextmanager
def fused(model: nn.Module, adapter: LoraAdapter) -> Iterator[nn.Module]:
    """Fuse ``adapter`` into ``model``'s weights for the duration of the block, then restore the
    exact original weights (saved copies, not a subtraction that would leave rounding error)."""
    saved: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for module, lw in adapter.weights.items():
                w = model.get_submodule(module).weight
                saved[module] = w.detach().clone()
                w.copy_(fuse_weight(w, lw, module, adapter.path))
        yield model
    finally:
        with torch.no_grad():
            for module, w in saved.items():
                model.get_submodule(module).weight.copy_(w)
