"""Core ML (iOS): ``mlprogram`` for iOS 18 / macOS 15, the KV cache as Core ML state.

Conversion: ``torch.export`` of :class:`~memlora.tasks.coreml_decoder.CoreMLDecoder` with a
flexible token count and cache end, then ``ct.convert`` with two (fp16) or four (fp32, split
hi/lo cache) ``StateType``s. One function serves prefill and decode: ``input_ids`` and
``position_ids [1, T]``, ``causal_mask [1, 1, T, E]``; the write offset is ``E - T``.

external mode: one multifunction ``memlora.mlpackage`` with a function per adapter plus
``base``; LoRA stays unfused (constant low-rank matmuls), so the base weights are identical in
every function and ``save_multifunction`` stores them once.
fused mode: one ``<adapter>.mlpackage`` per adapter, LoRA merged into the weights.
Compression: ``int8`` linear symmetric per output channel, ``int4`` block-wise (block
``group_size``, iOS 18 ``constexpr_blockwise_shift_scale``); LoRA weights stay float.

Prediction needs macOS (``MLModel.predict`` with ``make_state()``); elsewhere the runner
evaluates the saved MIL program with memlora's NumPy evaluator (:mod:`memlora.backends.coreml.mil`), which
checks the conversion (graph, weights, compression, state updates), not Apple's kernels.
Export side: ``export.py``; run side: ``runner.py`` (no torch).
"""
from __future__ import annotations

import platform
from pathlib import Path

from ...core.config import BackendName, Residency
from ..base import Artifact, Backend

TARGET = "iOS18"  # Core ML state (the KV cache) and block-wise int4 need iOS 18 / macOS 15
BASE_FUNCTION = "base"
PACKAGE = "memlora.mlpackage"


def numerics_kind() -> str:
    """How this host checks a Core ML export: Apple's runtime, or the MIL program in NumPy."""
    return "coreml-predict" if platform.system() == "Darwin" else "mil-numpy"


def function_name(adapter: str) -> str:
    """A MIL function name for an adapter (adapter names may hold ``-``; function names may not)."""
    return adapter.replace("-", "_")


class CoreMLBackend(Backend):
    name = BackendName.COREML
    vision_module = "memlora.backends.coreml.vision"
    precision_in_folder = True

    # Conversion runs anywhere; prediction needs macOS (runnable), and the runner falls back to
    # the NumPy MIL evaluator elsewhere, so Linux is available too.
    requires = ("coremltools",)
    extra = "coreml"

    def runnable(self) -> str | None:
        """Apple's runtime predicts only on macOS (an emulator's speed is no figure)."""
        if platform.system() != "Darwin":
            return "Core ML prediction needs macOS; here parity runs through memlora's NumPy MIL evaluator"
        return self.available()

    def prepare(self, job) -> None:
        from .export import prepare

        prepare(job)

    def export_external(self, job) -> None:
        from .export import export_external

        export_external(job)

    def export_fused(self, job, adapter: str) -> None:
        from .export import export_fused

        export_fused(job, adapter)

    def finish(self, job) -> None:
        if not job.external:
            from .export import package_bytes

            job.meta["package_bytes"] = {n: package_bytes(job.out / p) for n, p in job.files.items()}

    def load(self, artifact: Artifact, root: Path, *, threads: int | None = None,
             max_seq_len: int | None = None, engine: str | None = None,
             programs: Residency = Residency.AUTO):
        from .runner import CoreMLRunner

        return CoreMLRunner(artifact, Path(root), engine, max_seq_len)


BACKEND = CoreMLBackend()
