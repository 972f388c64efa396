"""``manifest.json`` as a typed record: read, checked and written in one place (``core.bundle``)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .artifact import Artifact

FORMAT = "memlora-bundle"
FORMAT_VERSION = 1


@dataclass
class Manifest:
    """What a bundle holds. ``files`` (every file with bytes and sha256) is filled in on write.

    Attributes:
        model: family, chat format, source, config sha256 and shape figures.
        tokenizer: path of ``tokenizer.json`` in the bundle.
        adapters: name, rank, alpha and targets of each adapter.
        artifacts: one :class:`Artifact` per backend x adapter mode x quant.
        prompts, conformance, embedder: the bundle extras (see ``memlora.extras``).
        extra: keys this memlora does not know, kept as they were.
    """

    model: dict[str, Any]
    tokenizer: str = "tokenizer.json"
    adapters: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    memlora_version: str | None = None
    created: str | None = None
    prompts: str | None = None
    conformance: str | None = None
    embedder: dict[str, Any] | None = None
    exporter: dict[str, Any] | None = None  # package versions that wrote it (apps check their runtime's)
    files: list[dict[str, Any]] = field(default_factory=list)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    # Key order of manifest.json as earlier versions wrote it.
    _ORDER = ("memlora_version", "created", "model", "tokenizer", "adapters", "artifacts", "prompts",
              "conformance", "embedder", "exporter", "format", "format_version", "files")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self._ORDER:
            value = getattr(self, key)
            if value is None and key in ("prompts", "conformance", "embedder", "exporter", "memlora_version", "created"):
                continue
            out[key] = [a.to_json() for a in value] if key == "artifacts" else value
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["artifacts"] = [a if isinstance(a, Artifact) else Artifact.from_json(a)
                               for a in data.get("artifacts", [])]
        return cls(**kwargs, extra={k: v for k, v in data.items() if k not in known})
