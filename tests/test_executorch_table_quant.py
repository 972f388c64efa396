"""The int8 token table of quantized ExecuTorch exports (backends/executorch/table_quant.py): the
codes and scales gather what the fp32 table held to within half a step, through the op the
ExecuTorch runtime runs, and the wrapper's table is really replaced (the head keeps its own copy)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("executorch")

from memlora.backends.executorch.table_quant import QuantizedEmbedding, _Scaled, quantize_table, register_ops  # noqa: E402


def test_gather_is_within_half_a_step_of_the_fp32_row():
    register_ops()
    torch.manual_seed(0)
    w = torch.randn(300, 96) * torch.linspace(0.01, 3, 96)  # groups of very different ranges
    q = QuantizedEmbedding(w, group_size=32)
    ids = torch.tensor([[0, 7, 299, 7]])
    got = q(ids)
    want = w[ids]
    step = q.scales.float()[ids].repeat_interleave(32, dim=-1)  # each value's own group scale
    err = (got - want).abs()
    assert (err <= step / 2 * 1.0001 + 1e-7).all()
    assert err.max() > 0  # really quantized
    # Negative control: the wrong rows are far off.
    assert (q(torch.tensor([[1, 8, 298, 8]])) - want).abs().max() > 50 * err.max()
    assert q.weight.dtype == torch.int8 and q.scales.dtype == torch.float32 and q.scales.shape == (300, 3)
    assert q.nbytes() == 300 * 96 + 300 * 3 * 4


def test_ragged_rows_get_one_scale_each():
    register_ops()
    q = QuantizedEmbedding(torch.randn(10, 40), group_size=32)  # 40 is not a multiple of 32
    assert q.group_size == 40 and q.scales.shape == (10,)
    assert (q(torch.tensor([[3]])) - q.weight[3].float() * q.scales[3].float()).abs().max() < 1e-6


class _Body(nn.Module):
    def __init__(self, table):
        super().__init__()
        self.embed_tokens = table


class _Wrapper(nn.Module):
    def __init__(self, table):
        super().__init__()
        self.model = nn.Module()
        self.model.model = _Body(table)


def test_quantize_table_replaces_the_table_and_keeps_a_scale():
    table = nn.Embedding(64, 32)
    w = _Wrapper(table)
    info = quantize_table(w, 32)
    assert isinstance(w.model.model.embed_tokens, QuantizedEmbedding)
    assert info["bits"] == 8 and info["bytes"] < info["fp32_bytes"] / 3.5
    scaled = nn.Embedding(64, 32)
    scaled.register_buffer("embed_scale", torch.tensor(4.0), persistent=False)
    w2 = _Wrapper(scaled)
    quantize_table(w2, 32)
    got = w2.model.model.embed_tokens(torch.tensor([[5]]))
    assert isinstance(w2.model.model.embed_tokens, _Scaled)
    assert (got - 4.0 * scaled.weight[5]).abs().max() < 4.0 * scaled.weight.abs().max() / 127
