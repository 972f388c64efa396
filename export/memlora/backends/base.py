"""The backend contract. A backend is one class; a fourth backend means filling in one more.

* ``name``: its :class:`~memlora.core.config.BackendName`, the key in the registry.
* ``available() -> str | None``: ``None`` when it can export (or, run-only, run) here, else why not.
* ``runnable() -> str | None``: ``None`` when it can *predict* here (Core ML: only on macOS).
* ``export(task, spec, out) -> Artifact``: lower a task (``memlora.tasks``) to files under ``out``
  (the bundle root); :class:`~memlora.backends.export_job.ExportJob` names the folder, runs the
  external/fused loop, times it and builds the :class:`Artifact`.
* ``load(artifact, root, *, threads=None, max_seq_len=None, programs=Residency.AUTO) -> Runner``: open
  an export for inference; runners derive from :class:`~memlora.backends.runner_base.RunnerBase`.
  ``programs`` is ExecuTorch's (one program per adapter: how many stay loaded); the others hold
  every adapter in one session or model and ignore it.
* ``vision()``: the backend's vision-language module (``vision_module``: ``export(task, spec, out)``
  and ``load(artifact, root)`` for the three SVLM graphs of ``memlora.vision``).

Task logic (loading a model, wrapping it with a KV cache, LoRA) lives in ``memlora.tasks``; a
backend only lowers what it is given. A backend package's ``__init__`` imports no runtime and no
torch: export and run sides live in its ``export.py`` and ``runner.py``.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.artifact import Artifact
from ..core.config import BackendName, Residency
from ..core.errors import MemloraError
from ..core.runner import Runner

if TYPE_CHECKING:
    from ..core.config import ExportSpec
    from .export_job import ExportJob

__all__ = ["Artifact", "Backend", "Runner"]


class Backend:
    """One runtime: how to export to it and how to run what was exported."""

    name: BackendName
    #: run-only backends (the PyTorch reference) have no export side.
    exports: bool = True
    #: the backend has a compute-precision choice, recorded in the artifact and its folder name
    #: (``external-none-fp16``); the others always compute in fp32.
    precision_in_folder: bool = False
    #: the KV cache has a fixed capacity (the artifact records max_seq_len); ONNX grows its cache.
    static_cache: bool = True

    #: modules this backend needs, and the pip extra that installs them.
    requires: tuple[str, ...] = ()
    extra: str | None = None

    #: the module with this backend's vision-language side (``export``, ``load``, and optionally
    #: ``export_artifacts``), see ``memlora.vision``; None: text only.
    vision_module: str | None = None

    def folder_variant(self, spec) -> str:
        """A suffix for the artifact's folder when ``spec`` asks for a non-default variant of the
        same backend / mode / quant, so both fit one bundle (``""``: the default variant)."""
        return ""

    def vision(self):
        """The SVLM export/run module of this backend, or the one-line error saying it has none."""
        if not self.vision_module:
            raise MemloraError(f"backend {self.name.value} does not export vision-language models",
                               fix="use --backend onnx, executorch or coreml for an SVLM")
        return importlib.import_module(self.vision_module)

    def available(self) -> str | None:
        """``None`` when this backend works here, else the reason (a missing package)."""
        for module in self.requires:
            try:
                importlib.import_module(module)
            except ImportError as e:
                hint = f" (pip install memlora[{self.extra}])" if self.extra else ""
                return f"missing package {e.name}{hint}"
        return None

    def runnable(self) -> str | None:
        """``None`` when exports can be run (predicted) on this machine, else why not."""
        return self.available()

    def export(self, task, spec: "ExportSpec", out: Path) -> Artifact:
        """Lower ``task`` under ``out/<name>/<mode>-<quant>/``: the shared loop over adapters."""
        if not self.exports:
            raise MemloraError(f"{self.name.value} is a run-only backend, not an export target",
                               fix="choose --backend onnx, executorch or coreml")
        from .export_job import ExportJob

        job = ExportJob.begin(self, task, spec, Path(out))
        self.prepare(job)
        if job.external:
            self.export_external(job)
        else:
            for name in job.fused_adapters():
                self.export_fused(job, name)
        self.finish(job)
        return job.artifact()

    def export_external(self, job: "ExportJob") -> None:
        """Write the shared base and what each adapter adds (external mode)."""
        raise NotImplementedError

    def export_fused(self, job: "ExportJob", adapter: str) -> None:
        """Write one model with ``adapter`` fused into the weights (the task's model is fused now)."""
        raise NotImplementedError

    def prepare(self, job: "ExportJob") -> None:
        """Optional: checks and ``job.meta`` entries before the first file is written."""

    def finish(self, job: "ExportJob") -> None:
        """Optional: summary figures in ``job.meta`` once every file is written."""

    def load(self, artifact: Artifact, root: Path, *, threads: int | None = None,
             max_seq_len: int | None = None, programs: Residency = Residency.AUTO) -> Runner:
        """Open ``artifact`` (files under ``root``) as a :class:`Runner`."""
        raise NotImplementedError
