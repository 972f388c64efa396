"""Fixtures for the runtime, LoCoMo, conformance and embedder tests (imported by those modules).

Session bundles are built once per test session even though several modules import these
fixtures (pytest makes one fixture per importing module): the builders cache on this module.
The LoCoMo file is written by the test: a made-up conversation in the flat ``locomo10.zip``
layout, never the real (CC BY-NC) data.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

_CACHE: dict[str, object] = {}

CONVERSATION = {
    "speaker_a": "Caroline",
    "speaker_b": "Melanie",
    "session_1_date_time": "1:56 pm on 8 May, 2023",
    "session_1": [
        {"speaker": "Caroline", "dia_id": "D1:1", "text": "I went to a LGBTQ support group yesterday."},
        {"speaker": "Melanie", "dia_id": "D1:2", "text": "That's great! I painted a sunrise 🌅 last week.",
         "img_url": ["https://example.invalid/sunrise.jpg"], "blip_caption": "a painting of a sunrise"},
    ],
    "session_2_date_time": "1:14 pm on 25 May, 2023",
    "session_2": [
        {"speaker": "Melanie", "dia_id": "D2:1", "text": "We went camping with the kids."},
        {"speaker": "Caroline", "dia_id": "D2:2", "text": "I'm researching adoption agencies."},
    ],
    "qa": [
        {"question": "When did Caroline go to the LGBTQ support group?", "answer": "7 May 2023",
         "evidence": ["D1:1"], "category": 2},
        {"question": "What did Melanie paint?", "answer": "a sunrise", "evidence": ["D1:2"], "category": 1},
        {"question": "What is Caroline researching?", "answer": "adoption agencies", "evidence": ["D2:2"],
         "category": 4},
        {"question": "What did Caroline paint?", "adversarial_answer": "a sunrise", "evidence": ["D1:2"],
         "category": 5},
    ],
}


def write_locomo_fixture(path: Path, copies: int = 2) -> Path:
    """A LoCoMo-format zip of ``copies`` small conversations (conv-1, conv-2, ...)."""
    path = Path(path)
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(1, copies + 1):
            zf.writestr(f"locomo/conv-{i}.json", json.dumps(CONVERSATION))
    return path


@pytest.fixture(scope="session")
def locomo_file(tmp_path_factory) -> Path:
    if "locomo" not in _CACHE:
        _CACHE["locomo"] = write_locomo_fixture(tmp_path_factory.mktemp("locomo") / "locomo-mini.zip")
    return _CACHE["locomo"]


@pytest.fixture(scope="session")
def loop_bundle(tmp_path_factory) -> tuple[Path, dict]:
    """The default preset (tiny-qwen2), ONNX external fp32, with the tiny embedder.

    (The conftest's ``onnx_fp32_bundle``, external + fused, serves the conformance tests.)"""
    if "bundle" not in _CACHE:
        from memlora.export import ExportOptions, run_export

        out = tmp_path_factory.mktemp("loop-bundle") / "bundle"
        manifest = run_export(ExportOptions(out=out, embedder="tiny"), show_progress=False)
        _CACHE["bundle"] = (out, manifest)
    return _CACHE["bundle"]


def bundle_without(src: Path, dst: Path, *names: str) -> Path:
    """Copy a bundle leaving out the top-level entries ``names`` (e.g. ``prompts``)."""
    import shutil

    shutil.copytree(src, dst, ignore=lambda d, entries: [e for e in entries if Path(d) == src and e in names])
    return dst
