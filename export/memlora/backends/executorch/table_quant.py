"""The token table of an int8 / int4 ExecuTorch export in 8 bits: ExecuTorch's quantized gather.

torchao quantizes linears only, so a quantized export used to keep the embedding table in fp32
beside the quantized LM head (a tied table becomes two copies: the int4 head and the fp32 table,
545 of the qwen2.5-0.5b shape's MB). Here the table becomes int8 codes with one fp32 scale per
``group_size`` values of a row (symmetric; the scales in fp32: with fp16 scales the op's
reference computes the row in half precision), gathered by ``quantized_decomposed::embedding_byte``,
the op ExecuTorch's own LLM export uses for ``--embedding-quantize 8,<group>`` (its
``QuantizedGroupEmbedding``); XNNPACK has no gather, so it runs on the quantized kernels library,
which the runtime registers with ``import executorch.kernels.quantized`` (Android's LLM AAR links
it). 8 bits, not 4, because a 4-bit table moved greedy top-1 below the int4 tolerance on the tiny
presets in the ONNX export (issue 17); at 8 bits the gather's error is below the int4 linears'.
"""
from __future__ import annotations

import torch
from torch import nn


def register_ops() -> None:
    """Define ``quantized_decomposed::embedding_byte`` for tracing and its kernel for the runtime."""
    import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401  (defines the op)
    import executorch.kernels.quantized  # noqa: F401  (loads the kernels library)


class QuantizedEmbedding(nn.Module):
    """An ``nn.Embedding`` as int8 codes ``[vocab, hidden]`` and fp32 scales ``[vocab, hidden / group]``."""

    def __init__(self, weight: torch.Tensor, group_size: int):
        super().__init__()
        vocab, hidden = weight.shape
        group = group_size if hidden % group_size == 0 else hidden  # a ragged row: one scale per row
        w = weight.detach().float().reshape(vocab, hidden // group, group)
        scale = (w.abs().amax(-1) / 127).clamp(min=1e-12)
        codes = torch.round(w / scale.unsqueeze(-1)).clamp(-128, 127).to(torch.int8)
        self.register_buffer("weight", codes.reshape(vocab, hidden))
        self.register_buffer("scales", scale if hidden // group > 1 else scale.squeeze(-1))
        self.group_size = group

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized_decomposed.embedding_byte.dtype(
            self.weight, self.scales, None, -128, 127, tokens, dtype=torch.float32)

    def nbytes(self) -> int:
        return self.weight.numel() + self.scales.numel() * self.scales.element_size()


def quantize_table(wrapper: nn.Module, group_size: int) -> dict:
    """Replace the decoder's token table (``model.model.embed_tokens``) in place; returns what was done."""
    register_ops()
    body = wrapper.model.model
    table = body.embed_tokens
    if not isinstance(table, nn.Embedding):
        return dict(bits=None, reason=f"token table is a {type(table).__name__}, not nn.Embedding: kept")
    fp32 = table.weight.numel() * 4
    scale = getattr(table, "embed_scale", None)  # Gemma-style scaled embeddings multiply after the gather
    q = QuantizedEmbedding(table.weight, group_size)
    body.embed_tokens = q if scale is None else _Scaled(q, scale)
    return dict(bits=8, group_size=q.group_size, bytes=q.nbytes(), fp32_bytes=fp32, op="quantized_decomposed::embedding_byte")


class _Scaled(nn.Module):
    """A quantized table followed by the embedding scale its original module applied."""

    def __init__(self, inner: QuantizedEmbedding, scale):
        super().__init__()
        self.inner = inner
        self.register_buffer("embed_scale", torch.as_tensor(scale, dtype=torch.float32), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.inner(tokens) * self.embed_scale
