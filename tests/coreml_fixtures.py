"""Core ML test fixtures: the PyTorch reference per preset and each Core ML export built once per
session. The fixtures are registered in conftest.py; import the constants from here."""
from __future__ import annotations

import pytest

from memlora.backends import get_backend
from memlora.core.config import ExportSpec

SEQ = 64
TOKENS = 16
ADAPTERS = ["extract", "update", "answer"]


@pytest.fixture(scope="session")
def reference(preset_dir):
    """Factory: ``reference(preset) -> TorchRunner`` with the preset's three adapters, built once."""
    from memlora.backends.pytorch import reference_runner
    from memlora.core.families import FAMILIES
    from memlora.sources.presets import get_preset

    cache = {}

    def make(preset: str):
        if preset not in cache:
            model_dir, adapters = preset_dir(preset)
            family = FAMILIES[get_preset(preset).model_type]
            cache[preset] = reference_runner(model_dir, adapters, family.attn_implementation)
        return cache[preset]

    return make


@pytest.fixture(scope="session")
def coreml_export(preset_dir, tmp_path_factory):
    """Factory: ``coreml_export(preset, mode, quant, precision, adapters) -> (root, Artifact)``,
    each combination exported once per session."""
    pytest.importorskip("coremltools")
    from memlora.sources.resolve import resolve
    from memlora.tasks.decoder import build_decoder_task

    cache = {}

    def make(preset: str, mode: str = "external", quant: str = "none", precision: str = "fp32",
             adapters: tuple[str, ...] = tuple(ADAPTERS)):
        key = (preset, mode, quant, precision, adapters)
        if key not in cache:
            model_dir, adapter_dirs = preset_dir(preset)
            src = resolve(str(model_dir), {a: adapter_dirs[a] for a in adapters}, tmp_path_factory.mktemp("src"))
            task = build_decoder_task(src.info, src.adapters)
            root = tmp_path_factory.mktemp("coreml")
            spec = ExportSpec("coreml", mode, quant, precision, group_size=32, max_seq_len=SEQ)
            cache[key] = (root, get_backend("coreml").export(task, spec, root))
        return cache[key]

    return make
