"""ExecuTorch run side: the pybindings runtime (XNNPACK + portable + LLM custom ops)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.artifact import Artifact
from ...core.console import native_stderr_captured
from ...core.errors import MemloraError
from ..runner_base import ArtifactRunner
from . import FOUNDATION

# XNNPACK's cpuinfo prints five lines to fd 2 on the process's first forward (into a streamed chat
# answer); that call, and program loads, run with native stderr held (shown with --verbose).
_first_forward_done = [False]


def _import_runtime():
    """The pybindings runtime with the LLM custom ops registered (needed before loading)."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (registers llama::*)
    import executorch.kernels.quantized  # noqa: F401  (embedding_byte: the int8 token table of int4/int8 exports)
    from executorch.extension.pybindings import portable_lib

    return portable_lib


class ExecuTorchRunner(ArtifactRunner):
    """One program is loaded at a time: external mode loads ``<adapter>.pte`` with the shared
    ``foundation.ptd``; fused mode loads the adapter's self-contained ``.pte``. The K/V cache
    lives inside the program (in-place buffers); positions past the current one are never read,
    so resetting is rewinding the position to 0, and switching adapter also rewinds.

    Prefix reuse: a snapshot is the program itself, kept resident with its cache (the cache has no
    copy-out in the runtime); restoring it is switching to that program and rewinding the position.
    A program a snapshot holds is never written below the snapshot's length: such a write loads a
    fresh program first. (An app does the same with ``Module`` and its own positions.)
    """

    has_bare_base = False  # one program per adapter

    def __init__(self, artifact: Artifact, root: Path, max_seq_len: int | None = None, threads: int | None = None):
        if max_seq_len is not None and artifact.max_seq_len is not None and max_seq_len > artifact.max_seq_len:
            raise MemloraError(f"max_seq_len {max_seq_len} exceeds the exported cache ({artifact.max_seq_len})",
                               fix="re-export with a larger --max-seq-len")
        super().__init__(artifact, root, max_seq_len)
        self._rt = _import_runtime()
        threads = threads or artifact.meta.get("threads")
        if threads:  # the process-wide XNNPACK threadpool
            self._rt._unsafe_reset_threadpool(int(threads))
            self.threads = int(threads)
        self._data = self.file(FOUNDATION) if self.external else None
        self._module = None
        self._module_key: str | None = None
        self._pinned: dict[str | None, tuple[object, int]] = {}  # adapter -> (program, kept length)
        self.start()

    def _load_program(self, name: str | None):
        pte = self.file(self.model_role(name))
        kwargs = {"data_path": str(self._data)} if self._data is not None else {}
        with native_stderr_captured():
            return self._rt._load_for_executorch(str(pte), **kwargs)

    def _activate(self, name: str | None) -> None:
        if self._module_key == name:
            return
        self._module = None  # free the previous program first (unless a snapshot keeps it)
        pinned = self._pinned.get(name)
        self._module = pinned[0] if pinned is not None else self._load_program(name)
        self._module_key = name

    def _save(self):
        self._pinned[self.active] = (self._module, self.pos)
        return self._module

    def _load(self, state) -> None:
        self._module = state

    def drop_prefixes(self) -> None:
        super().drop_prefixes()
        self._pinned.clear()

    def _forward(self, ids: list[int]) -> np.ndarray:
        import torch  # the pybindings take torch tensors

        pinned = self._pinned.get(self._module_key)
        if pinned is not None and pinned[0] is self._module and self.pos < pinned[1]:
            self._module = self._load_program(self._module_key)  # keep the snapshot's cache intact
        cap = self.artifact.max_seq_len
        chunk = (cap or len(ids) + 1) - 1  # the program takes at most max_seq_len-1 at once
        rows, pos = [], self.pos
        for i in range(0, len(ids), chunk):
            part = ids[i:i + chunk]
            args = [torch.tensor([part], dtype=torch.long), torch.tensor([pos], dtype=torch.long)]
            if _first_forward_done[0]:
                out = self._module.forward(args)
            else:
                with native_stderr_captured():
                    out = self._module.forward(args)
                _first_forward_done[0] = True
            rows.append(out[0][0].float().numpy())
            pos += len(part)
        return np.concatenate(rows, axis=0)

    def _close(self) -> None:
        self._module = None
        self._module_key = None
        self._pinned.clear()
