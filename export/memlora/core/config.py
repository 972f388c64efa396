"""Typed export configuration: enums and one validated spec, no option bags."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .errors import MemloraError


class BackendName(str, Enum):
    ONNX = "onnx"
    EXECUTORCH = "executorch"
    COREML = "coreml"
    PYTORCH = "pytorch"  # the eager reference; never exported


class AdapterMode(str, Enum):
    FUSED = "fused"        # one model per adapter, LoRA merged into the weights
    EXTERNAL = "external"  # one shared base, LoRA A/B kept apart and swapped at run time


class Quant(str, Enum):
    NONE = "none"
    INT8 = "int8"
    INT4 = "int4"


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"


class Residency(str, Enum):
    """How many adapter programs an ExecuTorch runner keeps loaded (a run-time choice).

    A freshly loaded program re-packs every base weight into XNNPACK's layout on its first step
    (seconds at 0.5B); the pip runtime has XNNPACK's shared weight cache compiled out, so only
    keeping programs loaded makes a switch cheap. Each resident program holds its own packed copy.
    """

    AUTO = "auto"  # external: every adapter's program when they fit in memory, else ONE; fused: ONE
    ALL = "all"    # every adapter's program loaded and warmed at start: a switch selects one
    ONE = "one"    # one program at a time: a switch loads the next (the smallest RSS)

    @classmethod
    def parse(cls, value: "Residency | str") -> "Residency":
        """``value`` as a Residency; an unknown name is the one-line error naming the choices."""
        try:
            return cls(value)
        except ValueError:
            raise MemloraError(f"unknown --programs {value!r}", fix="use auto, all or one") from None


@dataclass(frozen=True)
class OnnxConfig:
    """ONNX block: the opset the exporter targets; whether int4 also quantizes the embedding table.

    ``quantize_table``: GatherBlockQuantized (int4, block ``group_size``) for the token table. Off by
    default: on the tiny presets it moves greedy top-1 below the int4 tolerance on near ties (KL
    stays ~0.01), so it is the user's call.
    ``head_bits``: the LM head's bits in an int4 export (int8 exports: 8). 8 by default, as
    llama.cpp's q4_0 keeps its output tensor at q6_K; 4 reads ~60 MB less a token at 0.5B.
    ``fuse_attention`` (``--onnx-gqa``): each causal layer's attention as one onnxruntime
    ``GroupQueryAttention`` (``memlora.backends.onnx.attention``). Off by default: on this CPU at
    0.5B it decoded 9% faster at 64 cached tokens but 12% slower at 1,024 (its kernel re-packs the
    keys per query head and copies the cache per query head), and the memory loop decodes after
    1.5k-token prompts.
    ``rewrites``: the graph rewrites after the export (``backends/onnx/{fusions,rotary,attention}``);
    off only to compare against the graph as the exporter wrote it.
    """

    opset: int = 18
    quantize_table: bool = False
    head_bits: int = 8
    fuse_attention: bool = False
    rewrites: bool = True

    def __post_init__(self) -> None:
        if self.opset < 18:
            raise MemloraError(f"opset {self.opset} is too old", fix="use --onnx-opset 18 or newer")
        if self.head_bits not in (4, 8):
            raise MemloraError(f"--onnx-head-bits {self.head_bits} is not supported", fix="use 4 or 8")


@dataclass(frozen=True)
class CoreMLConfig:
    """Core ML block: the minimum deployment target (iOS 18 / macOS 15 or newer: KV cache as state)."""

    deployment_target: str = "iOS18"


@dataclass(frozen=True)
class ExecuTorchConfig:
    """ExecuTorch block: CPU threads of the runtime's threadpool when running (``None``: its default)."""

    threads: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise MemloraError(f"--executorch-threads {self.threads} is invalid", fix="use 1 or more")


@dataclass(frozen=True)
class ExportSpec:
    """How to lower one task with one backend.

    Attributes:
        backend: target runtime.
        adapter_mode: fused or external adapters.
        quant: weight quantization of the base (LoRA weights stay in float).
        precision: compute precision where the backend has a choice (Core ML).
        group_size: block size for int4 weights.
        max_seq_len: KV-cache capacity for static-cache backends (prompt + generated tokens).
        onnx, coreml, executorch: per-backend settings (each backend reads its own block).
    """

    backend: BackendName
    adapter_mode: AdapterMode = AdapterMode.EXTERNAL
    quant: Quant = Quant.NONE
    precision: Precision = Precision.FP32
    group_size: int = 32
    max_seq_len: int = 512
    onnx: OnnxConfig = field(default_factory=OnnxConfig)
    coreml: CoreMLConfig = field(default_factory=CoreMLConfig)
    executorch: ExecuTorchConfig = field(default_factory=ExecuTorchConfig)

    def __post_init__(self) -> None:
        # Coerce plain strings (from the CLI or a manifest) to enums, failing with a clear message.
        for name, enum in (("backend", BackendName), ("adapter_mode", AdapterMode),
                           ("quant", Quant), ("precision", Precision)):
            value = getattr(self, name)
            if not isinstance(value, enum):
                try:
                    object.__setattr__(self, name, enum(value))
                except ValueError:
                    choices = ", ".join(e.value for e in enum)
                    raise MemloraError(f"unknown {name} {value!r}", fix=f"use one of: {choices}") from None
        if self.backend is BackendName.PYTORCH:
            raise MemloraError("pytorch is the reference runtime, not an export target",
                               fix="choose --backend onnx, executorch or coreml")
        if self.group_size <= 0 or self.group_size % 8:
            raise MemloraError(f"group size {self.group_size} is invalid", fix="use a positive multiple of 8, e.g. 32")
        if not 16 <= self.max_seq_len <= 131072:
            raise MemloraError(f"max_seq_len {self.max_seq_len} is out of range", fix="use 16..131072")


def parse_choices(enum: type[Enum], text: str, label: str) -> list:
    """Parse a comma-separated list of enum values (``int8,int4``), dropping repeats.

    ``label`` names the option in the error, e.g. ``--quant`` -> "unknown --quant 'int3'".
    """
    out: list = []
    values = ", ".join(e.value for e in enum)
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            choice = enum(part)
        except ValueError:
            raise MemloraError(f"unknown {label} {part!r}", fix=f"use {values} (comma-separated)") from None
        if choice not in out:
            out.append(choice)
    if not out:
        raise MemloraError(f"no {label} given", fix=f"use {values}")
    return out


def parse_backends(text: str) -> list[BackendName]:
    """Parse a comma-separated backend list such as ``onnx,executorch`` (export targets only)."""
    out = parse_choices(BackendName, text, "backend")
    if BackendName.PYTORCH in out:
        raise MemloraError("pytorch is not an export backend", fix="use onnx, executorch or coreml")
    return out
