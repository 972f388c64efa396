"""The runner rules every backend shares: adapter names, the bare base, capacity, decode, close."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.artifact import Artifact
from ..core.errors import MemloraError


@dataclass(frozen=True)
class KVSnapshot:
    """The KV cache of ``tokens`` under ``adapter``, as a backend keeps it (``state``)."""

    adapter: str | None
    tokens: tuple[int, ...]
    state: Any


class RunnerBase:
    """A :class:`~memlora.core.runner.Runner` whose subclasses fill in four hooks.

    * ``_activate(name)``: make adapter ``name`` (``None``: the bare base) current.
    * ``_reset()``: forget the KV cache (optional; the position is rewound here).
    * ``_forward(ids)``: run ``ids`` at position ``self.pos``; return logits ``[len(ids), vocab]``,
      or ``[1, vocab]`` (the last position's) where ``returns_all_positions`` is False.
    * ``_close()``: release runtime resources.

    And three for prefix KV reuse (:meth:`prefill_with_prefix`):

    * ``_rewind(n)``: keep the first ``n`` cached positions. A static cache whose mask is built
      from positions needs nothing (entries past the position are never read), the default.
    * ``_save()``: the current cache as a value that later writes cannot change.
    * ``_load(state)``: make a saved cache current (after ``_activate`` of its adapter); the
      saved value must stay intact, since it is loaded again on every turn.

    Args:
        adapters: adapter names, in order (the first is active after :meth:`start`).
        external: adapters kept apart from one base (a bare base may exist), else fused.
        max_seq_len: KV-cache capacity in tokens; ``None`` for a cache that grows.
    """

    #: an external export can also run the base without any adapter.
    has_bare_base: bool = True
    #: ``prefill`` returns a row per id; False: only the last id's row (``[1, vocab]``), as a
    #: program that computes the LM head on the last position only (ExecuTorch) gives it.
    returns_all_positions: bool = True
    #: CPU threads the runtime was given (``None``: the runtime's own choice, or not settable).
    threads: int | None = None

    def __init__(self, adapters: Sequence[str], *, external: bool, max_seq_len: int | None = None):
        self.adapters = list(adapters)
        self.external = external
        self.max_seq_len = max_seq_len
        self.active: str | None = None
        self.pos = 0
        self.tokens: list[int] = []
        """The ids in the KV cache, position by position."""
        self._prefixes: dict[str | None, KVSnapshot] = {}
        self.prefix_stats = {"hits": 0, "misses": 0, "reused_tokens": 0}

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
        self.tokens = []
        self._reset()

    def rewind(self, n: int) -> None:
        """Keep the first ``n`` cached positions and forget the rest (``0 <= n <= pos``)."""
        if not 0 <= n <= self.pos:
            raise MemloraError(f"cannot rewind to {n}: the cache holds {self.pos} positions",
                               fix="rewind to a position between 0 and the current one")
        if n == 0:
            self.reset()
            return
        self._rewind(n)
        self.pos = n
        del self.tokens[n:]

    def snapshot(self) -> KVSnapshot:
        """The current KV cache (adapter, ids, state), for :meth:`restore`."""
        return KVSnapshot(self.active, tuple(self.tokens), self._save())

    def restore(self, snap: KVSnapshot) -> None:
        """Make ``snap`` the current cache, with its adapter active."""
        if snap.adapter != self.active:
            self.set_adapter(snap.adapter)
        self._load(snap.state)
        self.pos = len(snap.tokens)
        self.tokens = list(snap.tokens)

    def prefill_with_prefix(self, ids: Sequence[int], prefix_len: int) -> tuple[np.ndarray, int]:
        """Prefill ``ids`` from a clean cache, reusing the kept KV of ``ids[:prefix_len]``.

        One prefix is kept per adapter: the first call with an adapter prefills ``ids[:prefix_len]``
        and keeps its cache; later calls whose ``ids`` start with the same prefix under the same
        adapter restore it and prefill only the rest. A different prefix (the template changed)
        replaces the kept one; a prefix is never used under another adapter. Returns the logits of
        the positions after the prefix (``[len(ids) - prefix_len, vocab]``; ``[1, vocab]``, the
        last one, where ``returns_all_positions`` is False) and how many ids were reused from a
        kept cache (``prefix_len`` on a hit, 0 when the prefix was prefilled now).
        """
        ids = [int(i) for i in ids]
        prefix_len = min(int(prefix_len), len(ids) - 1)  # at least one token yields the logits
        if prefix_len <= 0:
            self.reset()
            return self.prefill(ids), 0
        head = tuple(ids[:prefix_len])
        snap = self._prefixes.get(self.active)
        reused = 0
        if snap is not None and snap.tokens == head:
            self.restore(snap)
            reused = prefix_len
            self.prefix_stats["hits"] += 1
            self.prefix_stats["reused_tokens"] += prefix_len
        else:
            self.reset()
            self.prefill(head)
            self._prefixes[self.active] = self.snapshot()
            self.prefix_stats["misses"] += 1
        return self.prefill(ids[prefix_len:]), reused

    def drop_prefixes(self) -> None:
        """Forget every kept prefix."""
        self._prefixes.clear()

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Append ``ids`` to the cache; return float32 logits ``[len(ids), vocab]`` (``[1, vocab]``,
        the last position's, where ``returns_all_positions`` is False)."""
        return self._append([int(i) for i in ids], self._forward)

    def prefill_last(self, ids: Sequence[int]) -> np.ndarray:
        """:meth:`prefill`, returning the last position's logits ``[vocab]`` only; a runner may skip
        the others (PyTorch: a 1.5k-token prompt's full logits are ~0.9 GB at a 152k vocabulary)."""
        return self._append([int(i) for i in ids], self._forward_last)[-1]

    def _append(self, ids: list[int], forward) -> np.ndarray:
        if not ids:
            raise MemloraError("empty prompt", fix="pass at least one token")
        if self.max_seq_len is not None and self.pos + len(ids) > self.max_seq_len:
            raise MemloraError(
                f"KV cache full: {self.pos} cached + {len(ids)} new tokens > max_seq_len {self.max_seq_len}",
                fix="reset() between prompts, shorten the prompt, or re-export with a larger --max-seq-len")
        logits = np.asarray(forward(ids), np.float32)
        self.pos += len(ids)
        self.tokens.extend(ids)
        return logits

    def decode(self, token: int) -> np.ndarray:
        """Append one token; return logits ``[vocab]``."""
        return self.prefill([token])[0]

    def close(self) -> None:
        """Release runtime resources."""
        self._prefixes.clear()
        self._close()

    def _activate(self, name: str | None) -> None:
        raise NotImplementedError

    def _reset(self) -> None:
        pass

    def _forward(self, ids: list[int]) -> np.ndarray:
        raise NotImplementedError

    def _forward_last(self, ids: list[int]) -> np.ndarray:
        """``_forward`` where only the last row is needed (``[1, vocab]``); override to skip the rest."""
        return np.asarray(self._forward(ids))[-1:]

    def _close(self) -> None:
        pass

    def _rewind(self, n: int) -> None:
        pass

    def _save(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} cannot keep a KV snapshot")

    def _load(self, state: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot restore a KV snapshot")


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
