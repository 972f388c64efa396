"""Resolve what the user named (a folder or a preset; adapter folders) into checked inputs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .adapters import LoraAdapter, read_adapter
from ..core.errors import MemloraError
from .model_io import ModelInfo, inspect_model_dir, linear_shapes
from .presets import DEFAULT_PRESET, PRESETS, write_preset


@dataclass
class Sources:
    """A checked model folder plus validated adapters, and how to find them again later."""

    info: ModelInfo
    adapters: dict[str, LoraAdapter]
    adapter_dirs: dict[str, Path]
    record: dict  # what the manifest stores: {"preset": ...} or {"path": ...}


def parse_adapter_args(items: list[str] | None) -> dict[str, Path]:
    """``["extract=path/a", ...]`` -> {"extract": Path}; a clear error for a malformed item."""
    out: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise MemloraError(f"bad --adapter {item!r}", fix="write --adapter NAME=PATH, e.g. extract=./lora/extract")
        if not name.replace("_", "").replace("-", "").isalnum():
            raise MemloraError(f"adapter name {name!r} must be letters, digits, - or _", fix="rename it")
        if name in out:
            raise MemloraError(f"adapter {name!r} given twice", fix="give each adapter a unique name")
        out[name] = Path(path)
    return out


def resolve(model: str | None, adapters: dict[str, Path], workdir: Path, *, allow_pickle: bool = False,
            trust_remote_code: bool = False) -> Sources:
    """Check the model and adapters (no weights loaded). A preset name is written to ``workdir``.

    With no adapters given, a preset brings its own three; a folder must come with adapters.
    """
    model = model or DEFAULT_PRESET
    record: dict
    if model in PRESETS and not Path(model).exists():
        model_dir, preset_adapters = write_preset(model, workdir / model)
        record = {"preset": model}
        if not adapters:
            adapters = preset_adapters
            record["adapters"] = "preset"
    else:
        model_dir = Path(model)
        record = {"path": str(model_dir.resolve())}
    info = inspect_model_dir(model_dir, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    if not adapters:
        raise MemloraError("no adapters given", model_dir, "pass --adapter NAME=PATH (one per memory operation)")
    for name, path in adapters.items():
        if not Path(path).is_dir():
            raise MemloraError("adapter folder not found", path, f"fix the path in --adapter {name}=PATH")
    shapes = linear_shapes(info)
    base_class = (info.config.get("architectures") or [None])[0]
    loaded = {name: read_adapter(name, path, shapes, base_class) for name, path in adapters.items()}
    record["adapter_dirs"] = {n: str(Path(p).resolve()) for n, p in adapters.items()}
    return Sources(info, loaded, {n: Path(p) for n, p in adapters.items()}, record)


def reference_sources(manifest: dict, workdir: Path) -> tuple[Path, dict[str, Path]]:
    """Find the model and adapters a bundle was exported from, regenerating a preset if needed."""
    src = manifest["model"]["source"]
    if "preset" in src:
        model_dir, preset_adapters = write_preset(src["preset"], workdir / src["preset"])
        if src.get("adapters") == "preset":
            return model_dir, preset_adapters
    else:
        model_dir = Path(src["path"])
    dirs = {n: Path(p) for n, p in src["adapter_dirs"].items()}
    for p in [model_dir, *dirs.values()]:
        if not p.exists():
            raise MemloraError("the bundle's source model or adapter is gone", p,
                               "restore it at that path to re-check parity")
    return model_dir, dirs
