"""The three ways LoRA enters an exported graph, in one place.

* **as inputs** (ONNX external): :func:`inject_lora` wraps the targeted linears in
  :class:`LoraLinear`, and the wrapper's ``ab`` is set per call from graph inputs.
* **baked** (ExecuTorch external, Core ML external): one adapter's A/B become constants of its own
  program, either as named buffers (:func:`bake_adapter`, which ExecuTorch's foundation tagger
  tells apart from base weights by the ``lora_`` in their names) or as plain tensors
  (:func:`attach_constants`, lifted by ``torch.export`` as ``c_*`` constants for Core ML).
* **fused** (every backend's fused mode): :func:`fused` merges one adapter into the weights exactly
  (float64, one rounding) for the duration of a block.

Unfused, LoRA is two small matmuls with the scale folded into B, so the base weights stay
identical across adapters, which is what lets one base file be shared.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..sources.adapters import LoraAdapter, fuse_weight


class LoraLinear(nn.Module):
    """``base(x) + (x @ A^T) @ B^T`` with the scale already folded into B.

    ``ab`` holds ``(A^T [in, r], B^T [r, out])``, already transposed: as graph inputs (ONNX) a
    transpose in the graph would run on every step (onnxruntime cannot fold it into an input
    that an adapter overrides: 336 Transpose nodes a step at qwen2.5-0.5b), so the adapter files
    carry the matmul-ready layout. Set per call from graph inputs (ONNX), or constants of one
    adapter's program (Core ML). ``None`` means the base layer alone. Two small matmuls instead
    of a merged weight keep the base weights identical across adapters, which is what lets one
    base file be shared.
    """

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.ab: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.ab is not None:
            a_t, b_t = self.ab
            y = y + torch.matmul(torch.matmul(x, a_t), b_t)
        return y


def lora_inputs(lw) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A^T [in, r], B_scaled^T [r, out])``: one module's LoRA in the layout ``LoraLinear.ab``,
    the ONNX graph inputs and the ``.onnx_adapter`` tensors share."""
    return lw.A.t().contiguous(), lw.scaled_B().t().contiguous()


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


class BakedLoraLinear(LoraLinear):
    """``LoraLinear`` whose A and B are buffers baked into one adapter's program.

    Registered buffers (not a tuple attribute) so ``torch.export`` lifts them as named
    constants, which the foundation tagger recognises by the ``lora_`` in their names.
    """

    def __init__(self, base, a, b):
        super().__init__(base)
        self.register_buffer("lora_A", a.detach().clone().contiguous())
        self.register_buffer("lora_B", b.detach().clone().contiguous())

    def forward(self, x):
        import torch.nn.functional as F

        return self.base(x) + F.linear(F.linear(x, self.lora_A), self.lora_B)


def bake_adapter(model, adapter) -> None:
    """Wrap every module ``adapter`` targets in a BakedLoraLinear (B pre-scaled)."""
    for path, lw in adapter.weights.items():
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        setattr(parent, attr, BakedLoraLinear(getattr(parent, attr), lw.A.float(), lw.scaled_B().float()))


def attach_constants(model: nn.Module, adapter: LoraAdapter) -> dict[str, LoraLinear]:
    """Wrap the modules ``adapter`` targets and give each its ``(A^T, B_scaled^T)`` as plain tensors."""
    wrapped = inject_lora(model, sorted(adapter.weights))
    for module, lw in adapter.weights.items():
        wrapped[module].ab = lora_inputs(lw)
    return wrapped


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
