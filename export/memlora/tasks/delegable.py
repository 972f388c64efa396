"""Module swaps that let XNNPACK take whole layers: RMSNorm as a linear op, tanh-GELU written out.
Each swap is checked numerically against the module it replaces (no family names involved)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class LinearRMSNorm(nn.Module):
    """RMSNorm with the mean of squares as a linear op (``x*x @ 1/D``): XNNPACK delegates it,
    where ``mean(-1)`` on a 3D/4D tensor stays outside and splits the graph at every norm.

    ``scale`` is the effective weight (Llama/Qwen: ``w``; Gemma: ``1 + w``)."""

    def __init__(self, scale: torch.Tensor, eps: float):
        super().__init__()
        dim = scale.shape[-1]
        self.eps = float(eps)
        self.register_buffer("scale", scale.detach().float().clone(), persistent=False)
        self.register_buffer("mean_w", torch.full((1, dim), 1.0 / dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ms = nn.functional.linear(x * x, self.mean_w)
        return x * torch.rsqrt(ms + self.eps) * self.scale


def _as_linear_rms_norm(norm: nn.Module) -> LinearRMSNorm | None:
    """A LinearRMSNorm equal to ``norm`` (an HF RMSNorm of any family), or None when ``norm``
    matches neither ``w * x/rms`` nor ``(1 + w) * x/rms`` (then it is left alone)."""
    weight = getattr(norm, "weight", None)
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1 or eps is None:
        return None
    x = torch.randn(3, weight.shape[0], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = norm(x)
        for scale in (weight, 1.0 + weight):
            cand = LinearRMSNorm(scale, eps)
            if torch.allclose(cand(x), want, rtol=1e-5, atol=1e-5):
                return cand
    return None


class TanhGELU(nn.Module):
    """GELU with the tanh approximation written out (mul/add/tanh). XNNPACK's GELU ignores
    ``approximate="tanh"`` (measured: 4.7e-4 off), which Gemma's MLPs use."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * (x + 0.044715 * (x * x * x))))


def _tanh_gelu_sites(module: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """``(parent, attribute, activation)`` of every parameter-free activation module computing
    tanh-approximate GELU (checked numerically, so no family names are involved)."""
    x = torch.linspace(-6, 6, 241)
    want = nn.functional.gelu(x, approximate="tanh")
    sites = []
    for path, mod in list(module.named_modules()):
        if not path or isinstance(mod, TanhGELU) or any(True for _ in mod.parameters()) or list(mod.children()):
            continue
        if not type(mod).__module__.startswith(("transformers.activations", "torch.nn.modules.activation")):
            continue
        try:
            with torch.no_grad():
                same = torch.allclose(mod(x), want, rtol=0, atol=1e-6)
        except Exception:  # not a unary activation
            continue
        if same:
            parent_path, _, attr = path.rpartition(".")
            sites.append((module.get_submodule(parent_path), attr, mod))
    return sites


def delegable_activations(module: nn.Module) -> int:
    """Swap tanh-approximate GELU activation modules for TanhGELU; returns how many."""
    sites = _tanh_gelu_sites(module)
    for parent, attr, _ in sites:
        setattr(parent, attr, TanhGELU())
    return len(sites)


@contextlib.contextmanager
def tanh_gelu_written_out(module: nn.Module) -> Iterator[int]:
    """TanhGELU in place of tanh-GELU modules for the block (yields how many), then the originals
    back. coremltools converts ``gelu(approximate="tanh")`` to MIL ``gelu`` mode EXACT (measured:
    4.7e-4 off on values up to 9), so Core ML conversions of Gemma/SigLIP need it written out."""
    sites = _tanh_gelu_sites(module)
    try:
        for parent, attr, _ in sites:
            setattr(parent, attr, TanhGELU())
        yield len(sites)
    finally:
        for parent, attr, mod in sites:
            setattr(parent, attr, mod)


def delegable_norms(module: nn.Module) -> int:
    """Swap every ``*RMSNorm`` under ``module`` for an equal LinearRMSNorm (for XNNPACK);
    returns how many were swapped. Norms that match no known formula are kept."""
    count = 0
    for path, mod in list(module.named_modules()):
        if type(mod).__name__.endswith("RMSNorm") and not isinstance(mod, LinearRMSNorm):
            new = _as_linear_rms_norm(mod)
            if new is not None:
                parent_path, _, attr = path.rpartition(".")
                setattr(module.get_submodule(parent_path), attr, new)
                count += 1
    return count
