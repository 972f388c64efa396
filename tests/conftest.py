"""Shared fixtures: presets written once per session, ONNX bundles exported once per session."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Tests run against the source tree (export/), whether or not memlora is pip-installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Backend export fixtures, shared by the backend's own tests and the contract test (registered
# here once, so a session-scoped export is built once for every module that uses it).
from coreml_fixtures import coreml_export, reference  # noqa: E402,F401
from et_fixtures import et_case  # noqa: E402,F401


@pytest.fixture(scope="session")
def preset_dir(tmp_path_factory):
    """Factory: ``preset_dir(name) -> (model_dir, {adapter: dir})``, each preset written once."""
    from memlora.sources.presets import write_preset

    cache: dict[str, tuple[Path, dict[str, Path]]] = {}

    def make(name: str):
        if name not in cache:
            cache[name] = write_preset(name, tmp_path_factory.mktemp(name))
        return cache[name]

    return make


@pytest.fixture(scope="session")
def onnx_fp32_bundle(tmp_path_factory, preset_dir):
    """The README's main job: default preset, ONNX, external and fused, fp32, with parity."""
    from memlora.core.config import AdapterMode
    from memlora.export import ExportOptions, run_export

    model_dir, adapters = preset_dir("tiny-qwen2")
    out = tmp_path_factory.mktemp("bundles") / "fp32"
    manifest = run_export(ExportOptions(out=out, model=str(model_dir), adapters=adapters,
                                        adapter_modes=[AdapterMode.EXTERNAL, AdapterMode.FUSED]), show_progress=False)
    return out, manifest


@pytest.fixture(scope="session")
def onnx_quant_bundle(tmp_path_factory, preset_dir):
    """int8 and int4 (MatMulNBits), external and fused."""
    from memlora.core.config import AdapterMode, Quant
    from memlora.export import ExportOptions, run_export

    model_dir, adapters = preset_dir("tiny-qwen2")
    out = tmp_path_factory.mktemp("bundles") / "quant"
    manifest = run_export(ExportOptions(out=out, model=str(model_dir), adapters=adapters,
                                        adapter_modes=[AdapterMode.EXTERNAL, AdapterMode.FUSED],
                                        quants=[Quant.INT8, Quant.INT4]), show_progress=False)
    return out, manifest


def artifact(manifest: dict, backend: str, mode: str, quant: str = "none") -> dict:
    """The manifest entry of one artifact."""
    for a in manifest["artifacts"]:
        if (a["backend"], a["adapter_mode"], a["quant"]) == (backend, mode, quant):
            return a
    raise KeyError((backend, mode, quant))
