"""What one backend export produced, as recorded in the bundle manifest."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .config import AdapterMode, BackendName, Precision, Quant


@dataclass
class Artifact:
    """One exported artifact: backend x adapter mode x quant (x precision).

    ``files`` maps a role to a path relative to the bundle root, for example
    ``{"model": "onnx/external-none/base.onnx", "adapter:extract": "onnx/.../extract.onnx_adapter"}``
    (external mode) or ``{"model:extract": "onnx/fused-none/extract/extract.onnx", ...}`` (fused mode).
    ``precision`` is the compute precision the export really has (parity picks its level from it).
    """

    backend: BackendName
    adapter_mode: AdapterMode
    quant: Quant
    adapters: list[str]
    files: dict[str, str]
    max_seq_len: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    precision: Precision = Precision.FP32
    stock: dict[str, Any] | None = None  # how stock runtimes open it, and their check (memlora.stock)
    # Keys this version does not know (written by a newer memlora): kept and written back as they
    # were, so an older memlora can still read, re-check and re-save a newer bundle.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.backend = BackendName(self.backend)
        self.adapter_mode = AdapterMode(self.adapter_mode)
        self.quant = Quant(self.quant)
        self.precision = Precision(self.precision)

    @property
    def key(self) -> str:
        """A stable id for the artifact, e.g. ``onnx/external/int4``."""
        return f"{self.backend.value}/{self.adapter_mode.value}/{self.quant.value}"

    @property
    def external(self) -> bool:
        return self.adapter_mode is AdapterMode.EXTERNAL

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        for name in ("backend", "adapter_mode", "quant", "precision"):
            data[name] = getattr(self, name).value
        return {**data, **{k: v for k, v in extra.items() if k not in data}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Artifact":
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = {k: v for k, v in data.items() if k not in known}
        data = {k: v for k, v in data.items() if k in known}
        # Bundles written before the field existed kept Core ML's precision in meta.
        data.setdefault("precision", (data.get("meta") or {}).get("precision", Precision.FP32.value))
        return cls(**data, extra=extra)
