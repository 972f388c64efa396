"""The runner rules every backend shares: adapter names, the bare base, capacity, decode, close."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.artifact import Artifact
from ..core.errors import MemloraError


class RunnerBase:
    """A :class:`~memlora.core.runner.Runner` whose subclasses fill in four hooks.

    * ``_activate(name)``: make adapter ``name`` (``None``: the bare base) current.
    * ``_reset()``: forget the KV cache (optional; the position is rewound here).
    * ``_forward(ids)``: run ``ids`` at position ``self.pos``; return logits ``[len(ids), vocab]``.
    * ``_close()``: release runtime resources.

    Args:
        adapters: adapter names, in order (the first is active after :meth:`start`).
        external: adapters kept apart from one base (a bare base may exist), else fused.
        max_seq_len: KV-cache capacity in tokens; ``None`` for a cache that grows.
    """

    #: an external export can also run the base without any adapter.
    has_bare_base: bool = True
    #: CPU threads the runtime was given (``None``: the runtime's own choice, or not settable).
    threads: int | None = None

    def __init__(self, adapters: Sequence[str], *, external: bool, max_seq_len: int | None = None):
        self.adapters = list(adapters)
        self.external = external
        self.max_seq_len = max_seq_len
        self.active: str | None = None
        self.pos = 0

    def start(self) -> None:
        """Activate the first adapter (or the bare base when there is none)."""
        if self.adapters:
            self.set_adapter(self.adapters[0])
        elif self.external and self.has_bare_base:
            self.set_adapter(None)

    def set_adapter(self, name: str | None) -> None:
        """Activate ``name`` (``None``: the bare base, external mode only); drops the cache."""
        if name is None and not (self.external and self.has_bare_base):
            why = "a fused export" if not self.external else f"this {type(self).__name__}"
            raise MemloraError(f"{why} has no bare base model", fix="pick an adapter")
        if name is not None and name not in self.adapters:
            raise KeyError(f"unknown adapter {name!r}; have {self.adapters}")
        self._activate(name)
        self.active = name
        self.reset()

    def reset(self) -> None:
        """Forget the KV cache."""
        self.pos = 0
        self._reset()

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Append ``ids`` to the cache; return float32 logits ``[len(ids), vocab]``."""
        ids = [int(i) for i in ids]
        if not ids:
            raise MemloraError("empty prompt", fix="pass at least one token")
        if self.max_seq_len is not None and self.pos + len(ids) > self.max_seq_len:
            raise MemloraError(
                f"KV cache full: {self.pos} cached + {len(ids)} new tokens > max_seq_len {self.max_seq_len}",
                fix="reset() between prompts, shorten the prompt, or re-export with a larger --max-seq-len")
        logits = np.asarray(self._forward(ids), np.float32)
        self.pos += len(ids)
        return logits

    def decode(self, token: int) -> np.ndarray:
        """Append one token; return logits ``[vocab]``."""
        return self.prefill([token])[0]

    def close(self) -> None:
        """Release runtime resources."""
        self._close()

    def _activate(self, name: str | None) -> None:
        raise NotImplementedError

    def _reset(self) -> None:
        pass

    def _forward(self, ids: list[int]) -> np.ndarray:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class ArtifactRunner(RunnerBase):
    """A runner over an exported :class:`Artifact` whose files lie under ``root``."""

    def __init__(self, artifact: Artifact, root: Path, max_seq_len: int | None = None):
        super().__init__(artifact.adapters, external=artifact.external,
                         max_seq_len=max_seq_len if max_seq_len is not None else artifact.max_seq_len)
        self.artifact, self.root = artifact, Path(root)

    def file(self, role: str) -> Path:
        """The file behind ``role`` (``model``, ``adapter:NAME``, ...); one error when it is gone."""
        path = self.root / self.artifact.files[role]
        if not path.exists():
            raise MemloraError(f"exported {self.artifact.backend.value} file missing", path,
                               "re-run memlora export")
        return path

    def model_role(self, name: str) -> str:
        """The file role of adapter ``name``'s program: ``adapter:NAME`` (external) or ``model:NAME``."""
        return f"adapter:{name}" if self.external else f"model:{name}"
