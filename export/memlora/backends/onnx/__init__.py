"""ONNX / onnxruntime: dynamo export with explicit past key-values, LoRA as named graph inputs.

external mode: one ``base.onnx`` whose LoRA A/B are graph inputs with zero-rank default
initializers (so the base runs alone), plus one ``<adapter>.onnx_adapter`` per adapter,
activated per run with ``RunOptions.add_active_adapter``. Both carry the matmul-ready layout,
A^T ``[in, r]`` and scaled B^T ``[r, out]`` (``memlora.tasks.lora.lora_inputs``), one pair per
LoRA unit: a module, or a packed q/k/v or gate/up group (``memlora.tasks.packed``).
fused mode: one ``<adapter>.onnx`` per adapter, LoRA merged into the weights.
Quantization: MatMulNBits (8 or 4 bits, symmetric, block ``group_size``, accuracy_level 4) on
the base weights only (an 8-bit LM head in blocks of 128: ``quantize.HEAD8_BLOCK``); LoRA matmuls take their B from graph inputs, so they stay float and
adapters of any rank still load. Graph rewrites after the export: ``fusions.py`` (RMSNorm,
residual + RMSNorm, MatMulNBits bias), ``rotary.py`` (``RotaryEmbedding``), ``attention.py``
(``--onnx-gqa``: each causal layer's attention as one ``GroupQueryAttention``). Export side:
``export.py`` (torch); run side: ``runner.py`` (onnxruntime only).
"""
from __future__ import annotations

from pathlib import Path

from ...core.config import BackendName, Residency
from ..base import Artifact, Backend


class OnnxBackend(Backend):
    name = BackendName.ONNX
    vision_module = "memlora.backends.onnx.vision"
    static_cache = False

    requires = ("onnx", "onnxruntime", "onnxscript")
    extra = "onnx"

    def folder_variant(self, spec) -> str:
        """``-head4-table4`` for an int4 export with a 4-bit head and table (the default: none)."""
        from .quantize import quant_meta

        variant = quant_meta(spec).get("variant")
        return f"-{variant.replace('+', '-')}" if variant else ""

    def export_external(self, job) -> None:
        from .export import export_external

        export_external(job)

    def export_fused(self, job, adapter: str) -> None:
        from .export import export_fused

        export_fused(job, adapter)

    def load(self, artifact: Artifact, root: Path, *, threads: int | None = None,
             max_seq_len: int | None = None, programs: Residency = Residency.AUTO):
        from .runner import OnnxRunner

        return OnnxRunner(artifact, Path(root), threads, max_seq_len)


BACKEND = OnnxBackend()
