"""PyTorch eager with PEFT: the run-only reference every export is checked against.

``reference_runner`` is the one public way to build it; ``BACKEND.load`` rebuilds a bundle's
source model and adapters (regenerating a preset) from its manifest.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ...core.config import BackendName, Residency
from ..base import Artifact, Backend


class PyTorchBackend(Backend):
    name = BackendName.PYTORCH
    exports = False

    requires = ("peft", "torch", "transformers")
    extra = None

    def load(self, artifact: Artifact | None, root: Path, *, threads: int | None = None,
             max_seq_len: int | None = None, programs: Residency = Residency.AUTO):
        """The reference of the bundle at ``root`` (``artifact`` is ignored: PyTorch runs the source)."""
        from ...core.bundle import read_manifest

        return reference_from_manifest(read_manifest(Path(root)), threads=threads, max_seq_len=max_seq_len)


def reference_runner(model_dir: str | Path, adapter_dirs: dict, attn_implementation: str = "eager", *,
                     threads: int | None = None, max_seq_len: int | None = None):
    """PyTorch eager + PEFT over a model folder and PEFT adapter folders."""
    from .runner import TorchRunner

    return TorchRunner(model_dir, adapter_dirs, attn_implementation, threads=threads, max_seq_len=max_seq_len)


def reference_from_manifest(manifest: dict, *, threads: int | None = None, max_seq_len: int | None = None):
    """The reference of a bundle's source: sources rebuilt in a temp folder the runner owns."""
    from ...core.families import get_family
    from ...sources.resolve import reference_sources

    tmp = tempfile.TemporaryDirectory(prefix="memlora-ref-")
    model_dir, adapter_dirs = reference_sources(manifest, Path(tmp.name))
    family = get_family(manifest["model"]["family"])
    runner = reference_runner(model_dir, adapter_dirs, family.attn_implementation, threads=threads,
                              max_seq_len=max_seq_len)
    runner.keep(tmp)
    return runner


BACKEND = PyTorchBackend()
