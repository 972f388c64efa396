"""Projections that read the same input, run as one matmul: q/k/v, and gate/up (ONNX decoder).

Every decoder family here computes q, k and v from one normed hidden state, and gate and up from
another. Exported as written that is five matmuls (plus three bias adds) where two suffice, and
at qwen2.5-0.5b's shapes k and v (N = 128) are too small to split over threads. Packed, a layer
runs one ``[in, q + k + v]`` matmul and a ``Split``, and one ``[in, 2 * ffn]`` matmul and a
``Split``: the same dot products, fewer and larger ops.

External LoRA packs the same way, one pair of graph inputs per :class:`LoraUnit`: for a group,
A^T ``[in, r_q + r_k + r_v]`` (the members' A^T side by side) and a block-diagonal B^T
``[R, out_q + out_k + out_v]`` (each member's scaled B^T in its own rank rows and output columns,
zeros elsewhere), added to the packed output before the split. Two matmuls and an Add a group,
instead of two matmuls and an Add a module. The zero blocks add exact zeros: each member's delta
is the same sum as unpacked. A member an adapter does not target has rank 0 in its block.

:func:`packed` applies this to a model for the length of a ``with`` block; members find the
packed output by the identity of their input tensor (the attention and MLP code pass one tensor
object to all members), so no model code is patched.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from .lora import LoraLinear, lora_inputs

GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


@dataclass(frozen=True)
class LoraUnit:
    """One pair of external LoRA inputs, ``lora.<name>.A`` / ``.B``: one module, or a packed group."""

    name: str
    members: tuple[str, ...]  # module paths, in pack order
    outs: tuple[int, ...]  # each member's out_features
    inp: int  # the shared in_features


def _linear(module: nn.Module) -> nn.Linear:
    return module.base if isinstance(module, LoraLinear) else module


def packable(model: nn.Module) -> list[tuple[str, ...]]:
    """Every group of :data:`GROUPS` the model has as plain linears of one input size and the same
    bias presence, as full module paths in pack order."""
    found = []
    for path, module in model.named_modules():
        for names in GROUPS:
            subs = [getattr(module, n, None) for n in names]
            if not all(isinstance(s, nn.Linear) and not isinstance(s, LoraLinear) for s in subs):
                continue
            if len({s.in_features for s in subs}) == 1 and len({s.bias is None for s in subs}) == 1:
                found.append(tuple(f"{path}.{n}" if path else n for n in names))
    return found


def lora_units(model: nn.Module, modules: list[str], groups: list[tuple[str, ...]]) -> list[LoraUnit]:
    """The LoRA inputs of a graph whose ``groups`` are packed: a group any adapter touches is one
    unit (all its members, targeted or not), every other targeted module its own."""
    targeted, units, seen = set(modules), [], set()
    for group in groups:
        if targeted & set(group):
            lins = [_linear(model.get_submodule(m)) for m in group]
            units.append(LoraUnit(_group_name(group), group, tuple(lin.out_features for lin in lins),
                                  lins[0].in_features))
            seen.update(group)
    for m in modules:
        if m not in seen:
            lin = _linear(model.get_submodule(m))
            units.append(LoraUnit(m, (m,), (lin.out_features,), lin.in_features))
    return sorted(units, key=lambda u: u.name)


def _group_name(group: tuple[str, ...]) -> str:
    parent = group[0].rpartition(".")[0]
    return f"{parent}.{'+'.join(m.rpartition('.')[2] for m in group)}"


def unit_tensors(unit: LoraUnit, adapter) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(A^T [in, R], B^T [R, sum(outs)])`` of ``adapter`` for one unit, block-diagonal for a
    group; None where the adapter targets none of its members (the graph's rank-0 default)."""
    parts = [(i, lora_inputs(adapter.weights[m])) for i, m in enumerate(unit.members) if m in adapter.weights]
    if not parts:
        return None
    a_t = torch.cat([a for _, (a, _) in parts], dim=1)
    b_t = torch.zeros(a_t.shape[1], sum(unit.outs), dtype=a_t.dtype)
    row = 0
    for i, (_, b) in parts:
        col = sum(unit.outs[:i])
        b_t[row:row + b.shape[0], col:col + b.shape[1]] = b
        row += b.shape[0]
    return a_t.contiguous(), b_t


class PackedLinears(nn.Module):
    """The members' weights stacked on the output axis; ``ab`` is the unit's LoRA for one call."""

    def __init__(self, linears: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.cat([lin.weight.detach() for lin in linears]), requires_grad=False)
        bias = [lin.bias for lin in linears]
        self.bias = None if bias[0] is None else nn.Parameter(torch.cat([b.detach() for b in bias]),
                                                               requires_grad=False)
        self.sizes = [lin.out_features for lin in linears]
        self.ab: tuple[torch.Tensor, torch.Tensor] | None = None
        self._x: torch.Tensor | None = None
        self._outs: tuple[torch.Tensor, ...] = ()

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every member's output for input ``x``, computed once per input tensor."""
        if self._x is not x:
            y = nn.functional.linear(x, self.weight, self.bias)
            if self.ab is not None:
                a_t, b_t = self.ab
                y = y + torch.matmul(torch.matmul(x, a_t), b_t)
            self._x, self._outs = x, torch.split(y, self.sizes, dim=-1)
        return self._outs

    def reset(self) -> None:
        """Forget the last input (called after every forward: no output outlives its call)."""
        self._x, self._outs = None, ()


class PackedMember(nn.Module):
    """Stands in for one member linear: its slice of the group's packed output."""

    def __init__(self, group: PackedLinears, index: int):
        super().__init__()
        object.__setattr__(self, "group", group)  # not a submodule: the parent owns the group
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.outputs(x)[self.index]


@contextlib.contextmanager
def packed(model: nn.Module, groups: list[tuple[str, ...]]) -> Iterator[dict[str, PackedLinears]]:
    """Within the block, each of ``groups`` runs packed (keyed by unit name); the original linears
    are put back afterwards, also on error."""
    saved, out = [], {}
    try:
        for group in groups:
            parent_path = group[0].rpartition(".")[0]
            parent = model.get_submodule(parent_path)
            names = [m.rpartition(".")[2] for m in group]
            linears = [getattr(parent, n) for n in names]
            pack = PackedLinears(linears)
            attr = "packed_" + "_".join(names)
            parent.add_module(attr, pack)
            saved.append((parent, attr, names, linears))
            for i, n in enumerate(names):
                setattr(parent, n, PackedMember(pack, i))
            out[_group_name(group)] = pack
        yield out
    finally:
        for parent, attr, names, linears in saved:
            delattr(parent, attr)
            for n, lin in zip(names, linears):
                setattr(parent, n, lin)
