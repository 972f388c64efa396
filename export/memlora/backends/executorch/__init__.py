"""ExecuTorch (Android): a static-KV-cache decoder lowered to XNNPACK, one ``.pte`` per adapter.

external mode (program-data separation): the base weights go to ONE ``foundation.ptd`` shared by
every adapter; each adapter is a small ``<adapter>.pte`` holding its graph and its own LoRA A/B
(separate low-rank matmuls, kept float). The ``.ptd`` each adapter's lowering produces is checked
to be byte-identical before it is written once. The Python runtime passes one data file per
program; Android's ``LlmModule(modelPath, tokenizerPath, temperature, dataFiles)`` takes a list.
fused mode: one self-contained ``<adapter>.pte`` per adapter, LoRA merged into the weights.
Quantization: torchao 8da4w (``int4``: int8 dynamic activations, int4 weights in groups of
``group_size``) or 8da8w (``int8``) on the base linears only; weight-only torchao configs lowered
to XNNPACK gave wrong outputs here, so they are not offered.
Attention: ExecuTorch's LLM custom ops (``llama::update_cache`` + ``llama::custom_sdpa``) where
a layer allows, plain math where it does not (Gemma2's logit soft-capping); see
``memlora.tasks.static_decoder``. Export side: ``export.py``; run side: ``runner.py``.
"""
from __future__ import annotations

from pathlib import Path

from ...core.config import BackendName, Residency
from ..base import Artifact, Backend

FOUNDATION = "foundation"  # tag of the shared weights -> foundation.ptd


class ExecuTorchBackend(Backend):
    name = BackendName.EXECUTORCH
    vision_module = "memlora.backends.executorch.vision"

    requires = ("executorch.backends.xnnpack.partition.xnnpack_partitioner",
                "executorch.extension.pybindings.portable_lib", "torchao")
    extra = "executorch"

    def prepare(self, job) -> None:
        from .report import warn_memory

        job.meta.update(memory=warn_memory(job.task, job.spec), runtime="xnnpack", per_adapter={})
        if job.spec.executorch.threads:
            job.meta["threads"] = job.spec.executorch.threads  # the runner's default threadpool size

    def export_external(self, job) -> None:
        from .export import build_wrapper, export_one

        wrapper, info = build_wrapper(job)  # once: each adapter is baked into it and taken out again
        for name, adapter in job.task.adapters.items():
            export_one(job, name, wrapper, info, adapter)

    def export_fused(self, job, adapter: str) -> None:
        from .export import build_wrapper, export_one

        export_one(job, adapter, *build_wrapper(job))  # the task's model is fused now: wrap it now

    def finish(self, job) -> None:
        from .export import summarize

        summarize(job)

    def load(self, artifact: Artifact, root: Path, *, threads: int | None = None,
             max_seq_len: int | None = None, programs: Residency = Residency.AUTO):
        """``programs``: how many adapter programs stay loaded (see :class:`Residency`)."""
        from .runner import ExecuTorchRunner

        return ExecuTorchRunner(artifact, Path(root), max_seq_len, threads, programs)


BACKEND = ExecuTorchBackend()
