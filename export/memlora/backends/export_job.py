"""The export side every backend shares: the folder, the adapter loop, timing, the Artifact, and
one way to report a failure (the innermost model-code frame and the root cause, in one line)."""
from __future__ import annotations

import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..core.artifact import Artifact
from ..core.config import AdapterMode, ExportSpec, Precision
from ..core.errors import ExportFailure

if TYPE_CHECKING:
    from .base import Backend

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\w+)')
_LABELS = {"onnx": "ONNX", "executorch": "ExecuTorch", "coreml": "Core ML", "pytorch": "PyTorch"}


@dataclass
class ExportJob:
    """One artifact being written: ``out`` is the bundle root, ``sub`` the artifact's folder in it."""

    backend: "Backend"
    task: object  # memlora.tasks.decoder.DecoderTask
    spec: ExportSpec
    out: Path
    sub: Path
    files: dict[str, str] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def begin(cls, backend: "Backend", task, spec: ExportSpec, out: Path) -> "ExportJob":
        folder = f"{spec.adapter_mode.value}-{spec.quant.value}"
        if backend.precision_in_folder:
            folder += f"-{spec.precision.value}"
        folder += backend.folder_variant(spec)
        job = cls(backend, task, spec, Path(out), Path(backend.name.value) / folder)
        (job.out / job.sub).mkdir(parents=True, exist_ok=True)
        return job

    @property
    def external(self) -> bool:
        return self.spec.adapter_mode is AdapterMode.EXTERNAL

    def add(self, role: str, filename: str) -> Path:
        """Record ``sub/filename`` under ``role``; return its absolute path (to write to)."""
        self.files[role] = str(self.sub / filename)
        return self.out / self.files[role]

    def path(self, role: str) -> Path:
        return self.out / self.files[role]

    def fused_adapters(self) -> Iterator[str]:
        """Each adapter name, with that adapter fused into the task's model while the caller works."""
        from ..tasks.lora import fused

        for name, adapter in self.task.adapters.items():
            with fused(self.task.model, adapter):
                yield name

    def fail(self, stage: str, exc: BaseException, fix: str) -> ExportFailure:
        """An :class:`ExportFailure` for ``exc`` raised while ``stage`` ran on this job's task."""
        return export_failure(self.backend.name.value, stage, exc, self.task.info.family.model_type,
                              self.task.info.path, fix)

    def artifact(self) -> Artifact:
        self.meta["export_seconds"] = round(time.perf_counter() - self.started, 2)
        static = self.spec.max_seq_len if self.backend.static_cache else None
        # Only a backend with a precision choice (Core ML) computes in anything but fp32.
        precision = self.spec.precision if self.backend.precision_in_folder else Precision.FP32
        return Artifact(self.backend.name, self.spec.adapter_mode, self.spec.quant, list(self.task.adapters),
                        self.files, static, self.meta, precision=precision)


def export_failure(backend: str, stage: str, exc: BaseException, family: str | None, path, fix: str) -> ExportFailure:
    """One line: ``<Backend> <stage> of family F failed at file.py:N in fn: Error: first line``.

    torch.export wraps the real error ("Unsupported: Observed exception"): the innermost
    exception that did not come from torch itself is reported, else the outer one.
    """
    chain = _chain(exc)
    root = next((e for e in reversed(chain) if not type(e).__module__.startswith("torch")), exc)
    first = next((ln.strip() for ln in str(root).strip().splitlines() if ln.strip()), "")[:300]
    where = _where(chain)
    what = f"family {family}" if family else "the model"
    return ExportFailure(
        f"{_LABELS.get(backend, backend)} {stage} of {what} failed{' at ' + where if where else ''}: "
        f"{type(root).__name__}{': ' + first if first else ''}", path, fix)


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _where(chain: list[BaseException]) -> str:
    """The innermost model-code frame, e.g. ``modeling_gemma2.py:142 in forward``: from the
    tracebacks, or from the "from user code" frames torch.export prints into its messages."""
    for exc in reversed(chain):  # the innermost exception first
        frames = [(f.filename, f.lineno, f.name) for f in traceback.extract_tb(exc.__traceback__)]
        frames += [(m[0], int(m[1]), m[2]) for m in _FRAME.findall(str(exc))]
        for filename, lineno, fn in reversed(frames):
            if "transformers/models" in filename or "memlora/tasks" in filename:
                return f"{Path(filename).name}:{lineno} in {fn}"
    return ""
