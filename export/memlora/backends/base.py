"""The small interface every backend module implements, and the runner protocol.

A backend module (``memlora/backends/<name>_backend.py``) exposes three functions:

* ``available() -> str | None``: ``None`` when the backend can export and run here, otherwise
  the reason it cannot (a missing package, the wrong platform).
* ``export(task, spec, out_dir) -> Artifact``: lower a task (see ``memlora.tasks``) to files
  under ``out_dir`` (the bundle root) and describe them.
* ``load(artifact, root) -> Runner``: open an exported artifact for inference.

Task logic (loading a model, wrapping it with a KV cache, fusing adapters) lives in
``memlora.tasks``; a backend only lowers what it is given.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass
class Artifact:
    """What one backend export produced, as recorded in the bundle manifest.

    ``files`` maps a role to a path relative to the bundle root, for example
    ``{"model": "onnx/external-fp32/base.onnx", "adapter:extract": "onnx/.../extract.onnx_adapter"}``
    (external mode) or ``{"model:extract": "onnx/fused-fp32/extract.onnx", ...}`` (fused mode).
    """

    backend: str
    adapter_mode: str
    quant: str
    adapters: list[str]
    files: dict[str, str]
    max_seq_len: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    stock: dict[str, Any] | None = None  # how stock runtimes open it, and their check (memlora.stock)

    @property
    def key(self) -> str:
        """A stable id for the artifact, e.g. ``onnx/external/int4``."""
        return f"{self.backend}/{self.adapter_mode}/{self.quant}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Artifact":
        return cls(**data)


@runtime_checkable
class Runner(Protocol):
    """A decoder with a KV cache, driven one prompt at a time.

    Every call returns float32 logits as NumPy arrays. ``set_adapter`` always drops the KV
    cache: a cache filled under one adapter is garbage under another.
    """

    adapters: Sequence[str]
    max_seq_len: int | None

    def set_adapter(self, name: str | None) -> None:
        """Activate adapter ``name`` (``None``: the bare base, external mode only); resets the cache."""

    def reset(self) -> None:
        """Forget the KV cache."""

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Append ``ids`` to the cache; return logits ``[len(ids), vocab]``."""

    def decode(self, token: int) -> np.ndarray:
        """Append one token; return logits ``[vocab]``."""

    def close(self) -> None:
        """Release runtime resources."""
