"""ExecuTorch test fixtures: each (preset, mode, quant, adapters) exported and parity-checked once
per session. ``et_case`` is registered in conftest.py; import ``EtCase`` and the constants from here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

# Small enough to export fast, large enough for both prompts (<= 30 tokens) plus the greedy tokens,
# and for the chunked-prefill test (a prompt of max_seq_len tokens splits into two calls).
MAX_SEQ_LEN = 64
PARITY_TOKENS = 8  # decode steps per prompt: every step after the first runs the one-token program


@dataclass
class EtCase:
    root: Path
    artifact: object  # memlora.backends.base.Artifact
    parity: dict
    src: object  # memlora.sources.Sources
    prompts: list[list[int]]

    def runner(self):
        from memlora.backends import get_backend

        return get_backend("executorch").load(self.artifact, self.root)


@pytest.fixture(scope="session")
def et_case(tmp_path_factory, preset_dir):
    """Factory: ``et_case(preset, mode="external", quant="none", adapters=None) -> EtCase``."""
    pytest.importorskip("executorch")
    from memlora.backends import get_backend
    from memlora.backends.pytorch import reference_runner
    from memlora.core.config import ExportSpec
    from memlora.export import prompt_ids
    from memlora.parity import check_parity
    from memlora.sources.resolve import resolve
    from memlora.tasks.decoder import build_decoder_task

    reason = get_backend("executorch").available()
    if reason:
        pytest.skip(reason)
    cache: dict[tuple, EtCase] = {}
    refs: dict[tuple, object] = {}

    def make(preset: str, mode: str = "external", quant: str = "none", adapters: tuple[str, ...] | None = None):
        key = (preset, mode, quant, adapters)
        if key in cache:
            return cache[key]
        model_dir, dirs = preset_dir(preset)
        dirs = {n: p for n, p in dirs.items() if adapters is None or n in adapters}
        work = tmp_path_factory.mktemp("et-src")
        src = resolve(str(model_dir), dirs, work)
        task = build_decoder_task(src.info, src.adapters)
        out = tmp_path_factory.mktemp("et-out")
        spec = ExportSpec("executorch", mode, quant, max_seq_len=MAX_SEQ_LEN)
        art = get_backend("executorch").export(task, spec, out)
        ref_key = (preset, tuple(dirs))
        if ref_key not in refs:
            refs[ref_key] = reference_runner(src.info.path, src.adapter_dirs, src.info.family.attn_implementation)
        prompts = prompt_ids(src.info.tokenizer_file)
        runner = get_backend("executorch").load(art, out)
        try:
            parity = check_parity(runner, refs[ref_key], prompts, backend="executorch", quant=quant,
                                  n_tokens=PARITY_TOKENS)
        finally:
            runner.close()
        cache[key] = EtCase(out, art, parity, src, prompts)
        return cache[key]

    return make
