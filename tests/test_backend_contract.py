"""The backend contract, once for every backend that works here (replacing per-backend copies).

Each case reads as one chain: export (session fixtures shared with the backend's own tests), load
through the registry, switch adapters a -> b -> a, hit the KV-cache capacity, then check the
parity block the export recorded and its negative control.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import artifact as manifest_artifact

from memlora.backends import NAMES, availability, exportable, get_backend
from memlora.backends.base import Artifact, Backend
from memlora.core.errors import MemloraError
from memlora.core.runner import Runner

BACKENDS = ["onnx", "executorch", "coreml"]
IDS = [5, 17, 99, 230, 41, 7]


@pytest.fixture
def exported(request, onnx_fp32_bundle, preset_dir):
    """``(artifact, root, parity block)`` of the default preset's external fp32 export."""
    name = request.param
    reason = availability().get(name)
    if reason:
        pytest.skip(reason)
    if name == "onnx":
        root, manifest = onnx_fp32_bundle
        art = Artifact.from_json(manifest_artifact(manifest, "onnx", "external"))
        return art, root, art.parity
    if name == "executorch":
        case = request.getfixturevalue("et_case")("tiny-qwen2")
        return case.artifact, case.root, case.parity
    root, art = request.getfixturevalue("coreml_export")("tiny-qwen2")
    return art, root, _parity(art, root, request.getfixturevalue("reference"), preset_dir)


def _parity(art, root, reference, preset_dir) -> dict:
    from memlora.export import prompt_ids
    from memlora.parity import artifact_parity

    model_dir, _ = preset_dir("tiny-qwen2")
    return artifact_parity(get_backend("coreml"), art, root, reference("tiny-qwen2"),
                           prompt_ids(model_dir / "tokenizer.json"), n_tokens=8)


def test_one_list_of_names_and_every_backend_fills_the_contract():
    assert set(NAMES) == {*BACKENDS, "pytorch"} and exportable() == BACKENDS
    for name in NAMES:
        backend = get_backend(name)
        assert isinstance(backend, Backend) and backend.name.value == name
        assert backend.available() is None or isinstance(backend.available(), str)
    with pytest.raises(MemloraError, match="unknown backend 'tflite'"):
        get_backend("tflite")
    assert get_backend("coreml").runnable() is None or "macOS" in get_backend("coreml").runnable()


@pytest.mark.parametrize("exported", BACKENDS, indirect=True)
def test_contract(exported):
    art, root, parity = exported
    backend = get_backend(art.backend)
    runner = backend.load(art, root)
    try:
        assert isinstance(runner, Runner) and runner.adapters == ["extract", "update", "answer"]
        # a -> b -> a: a's logits come back exactly (the cache was dropped on the switch), b's differ.
        runner.set_adapter("extract")
        a1 = runner.prefill(IDS)
        a1_next = runner.decode(int(a1[-1].argmax()))
        runner.set_adapter("update")
        b = runner.prefill(IDS)
        runner.set_adapter("extract")
        a2 = runner.prefill(IDS)
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(a1_next, runner.decode(int(a2[-1].argmax())))
        # a row per id, or only the last id's where the program computes the head there (ExecuTorch)
        rows = len(IDS) if runner.returns_all_positions else 1
        assert a1.shape == (rows, a1_next.shape[0]) and a1.dtype == np.float32
        assert np.abs(a1 - b).max() > 1e-2
        with pytest.raises(KeyError, match="unknown adapter 'nope'"):
            runner.set_adapter("nope")
        with pytest.raises(MemloraError, match="empty prompt"):
            runner.prefill([])
    finally:
        runner.close()
    # Capacity: one message for every backend (a growing cache gets its limit from load).
    runner = backend.load(art, root, max_seq_len=8)
    try:
        runner.prefill(IDS)
        with pytest.raises(MemloraError, match="KV cache full: 6 cached \\+ 3 new tokens > max_seq_len 8"):
            runner.prefill([1, 2, 3])
        runner.reset()
        runner.prefill([1, 2, 3])
    finally:
        runner.close()
    # Parity against PyTorch + PEFT, and its negative control: the check could have failed.
    assert parity["passed"], parity
    for row in parity["adapters"]:
        control = row["negative_control"]
        assert control["max_abs_diff"] >= control["required"] > 0, row


@pytest.mark.parametrize("exported", BACKENDS, indirect=True)
def test_bare_base_only_where_the_contract_allows(exported):
    art, root, _ = exported
    runner = get_backend(art.backend).load(art, root)
    try:
        if runner.has_bare_base:  # external ONNX and Core ML keep a base that runs without LoRA
            runner.set_adapter("extract")
            a = runner.prefill(IDS)
            runner.set_adapter(None)
            assert np.abs(runner.prefill(IDS) - a).max() > 1e-2
        else:  # ExecuTorch: one program per adapter
            with pytest.raises(MemloraError, match="no bare base"):
                runner.set_adapter(None)
    finally:
        runner.close()


def test_fused_has_no_bare_base(onnx_fp32_bundle):
    root, manifest = onnx_fp32_bundle
    runner = get_backend("onnx").load(Artifact.from_json(manifest_artifact(manifest, "onnx", "fused")), root)
    try:
        with pytest.raises(MemloraError, match="a fused export has no bare base"):
            runner.set_adapter(None)
    finally:
        runner.close()


def test_pytorch_is_the_run_only_reference(onnx_fp32_bundle):
    root, _ = onnx_fp32_bundle
    backend = get_backend("pytorch")
    with pytest.raises(MemloraError, match="run-only"):
        backend.export(None, None, root)
    runner = backend.load(None, root, max_seq_len=8)
    try:
        assert runner.adapters == ["extract", "update", "answer"]
        runner.prefill(IDS)
        with pytest.raises(MemloraError, match="KV cache full"):
            runner.prefill([1, 2, 3])
    finally:
        runner.close()


@pytest.mark.parametrize("name,adapter,checks", [
    pytest.param("executorch", "answer", lambda a, out: a["max_seq_len"] >= 2048 and "delegation" in a["meta"],
                 marks=pytest.mark.slow),  # ~1 min alone; the contract test covers the same export
    ("coreml", "extract", lambda a, out: a["meta"]["functions"] == {"base": "base", "extract": "extract"}
     and (out / a["files"]["model"] / "Manifest.json").is_file()),
])
def test_cli_exports_beside_onnx(name, adapter, checks, preset_dir, tmp_path):
    """``memlora export --backend onnx,NAME``: both artifacts in one bundle, each with passing parity."""
    import json

    from typer.testing import CliRunner

    from memlora.cli import app

    reason = availability().get(name)
    if reason:
        pytest.skip(reason)
    model_dir, dirs = preset_dir("tiny-qwen2")
    out = tmp_path / "bundle"
    res = CliRunner().invoke(app, [
        "export", "--out", str(out), "--model", str(model_dir), "--adapter", f"{adapter}={dirs[adapter]}",
        "--backend", f"onnx,{name}", "--parity-tokens", "4", "--quiet"])  # context: sized from the prompts
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    by_backend = {a["backend"]: a for a in manifest["artifacts"]}
    assert set(by_backend) == {"onnx", name}
    for a in manifest["artifacts"]:
        assert a["parity"]["passed"], a["parity"]
        assert all((out / rel).exists() for rel in a["files"].values())
    assert checks(by_backend[name], out)
