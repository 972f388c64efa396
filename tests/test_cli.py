"""The CLI (typer CliRunner) and every bad input: one line naming the file and the fix, exit 2,
and no half-written bundle."""
from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from memlora.cli import app

cli = CliRunner()


def run(*args):
    return cli.invoke(app, [str(a) for a in args])


def no_leftovers(parent):
    return not [p for p in parent.iterdir() if ".tmp-" in p.name]


def test_help_lists_verbs():
    res = run("--help")
    assert res.exit_code == 0
    for verb in ("export", "parity", "preset", "presets", "backends"):
        assert verb in res.output


def test_backends_and_presets():
    res = run("backends")
    import platform

    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "onnx" in text and "yes" in text
    assert platform.system() == "Darwin" or "MIL evaluator" in text  # Core ML exports here, predicts on macOS
    res = run("presets")
    assert res.exit_code == 0 and "tiny-qwen2" in res.output and "gemma2-2b-shape" in res.output


def test_preset_command(tmp_path):
    res = run("preset", "tiny-gemma3", tmp_path / "p")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p/model/config.json").is_file()
    assert (tmp_path / "p/adapters/answer/adapter_config.json").is_file()
    res = run("preset", "tiny-gpt", tmp_path / "q")
    assert res.exit_code == 2 and "unknown preset 'tiny-gpt'" in res.output


def test_export_default_then_parity(tmp_path):
    """The README's main job through the CLI, then `memlora parity` re-checks it."""
    out = tmp_path / "bundle"
    res = run("export", "--out", out, "--quiet", "--parity-tokens", "8")
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["source"]["preset"] == "tiny-qwen2"
    assert [a["name"] for a in manifest["adapters"]] == ["extract", "update", "answer"]
    assert manifest["artifacts"][0]["parity"]["passed"]
    assert "pass" in res.output  # the summary table
    res = run("parity", out, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["passed"] and report["file_failures"] == []
    # Tamper with an adapter: parity fails (exit 1) and names the file.
    rel = manifest["artifacts"][0]["files"]["adapter:answer"]
    blob = bytearray((out / rel).read_bytes())
    blob[-3] ^= 0x55
    (out / rel).write_bytes(bytes(blob))
    res = run("parity", out)
    assert res.exit_code == 1
    assert "answer.onnx_adapter" in res.output


def test_existing_out_needs_force(tmp_path, preset_dir):
    model_dir, adapters = preset_dir("tiny-qwen2")
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = run("export", "--out", out, "--model", model_dir, "--adapter", f"a={adapters['answer']}", "--quiet")
    assert res.exit_code == 2
    assert "not empty" in res.output and "--force" in res.output
    assert (out / "keep.txt").read_text() == "mine"


def _bad(tmp_path, preset_dir, *args):
    res = run("export", "--out", tmp_path / "out", "--quiet", *args)
    assert res.exit_code == 2, res.output
    assert not (tmp_path / "out").exists() and no_leftovers(tmp_path)
    # One line, starting "error:", naming what is wrong and the fix; no traceback.
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "fix:" in lines[0], res.output
    return res.output.replace("\n", " ")


def test_unsupported_onnx_head_bits(tmp_path, preset_dir):
    out = _bad(tmp_path, preset_dir, "--quant", "int4", "--onnx-head-bits", "5")
    assert "--onnx-head-bits 5 is not supported" in out and "use 4 or 8" in out


def test_missing_model_folder(tmp_path, preset_dir):
    out = _bad(tmp_path, preset_dir, "--model", tmp_path / "nope")
    assert "model folder not found" in out and "nope" in out


def test_corrupt_safetensors(tmp_path, preset_dir):
    model_dir, adapters = preset_dir("tiny-qwen2")
    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    (bad / "model.safetensors").write_bytes(b"\x00\x01garbage" * 10)
    out = _bad(tmp_path, preset_dir, "--model", bad, "--adapter", f"x={adapters['answer']}")
    assert "corrupt safetensors" in out and "model.safetensors" in out


def test_pickle_weights_refused(tmp_path, preset_dir):
    model_dir, adapters = preset_dir("tiny-qwen2")
    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    (bad / "model.safetensors").rename(bad / "pytorch_model.bin")
    out = _bad(tmp_path, preset_dir, "--model", bad, "--adapter", f"x={adapters['answer']}")
    assert "pickle" in out and "--allow-pickle" in out


def _broken_config(tmp_path, preset_dir, **changes):
    """Export a copy of the default model whose config.json has ``changes``; return the error."""
    model_dir, adapters = preset_dir("tiny-qwen2")
    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg.update(changes)
    (bad / "config.json").write_text(json.dumps(cfg))
    return _bad(tmp_path, preset_dir, "--model", bad, "--adapter", f"x={adapters['answer']}")


def test_unknown_family(tmp_path, preset_dir):
    out = _broken_config(tmp_path, preset_dir, model_type="gpt2")
    assert "'gpt2' is not a supported family" in out and "config.json" in out


def test_remote_code_refused(tmp_path, preset_dir):
    out = _broken_config(tmp_path, preset_dir, auto_map={"AutoModelForCausalLM": "modeling_x.X"})
    assert "--trust-remote-code" in out


def test_adapter_for_other_base(tmp_path, preset_dir):
    model_dir, _ = preset_dir("tiny-qwen2")
    _, llama_adapters = preset_dir("tiny-llama")
    out = _bad(tmp_path, preset_dir, "--model", model_dir, "--adapter", f"extract={llama_adapters['extract']}")
    assert "LlamaForCausalLM" in out and "adapter_config.json" in out


def test_missing_adapter_folder(tmp_path, preset_dir):
    model_dir, _ = preset_dir("tiny-qwen2")
    out = _bad(tmp_path, preset_dir, "--model", model_dir, "--adapter", f"extract={tmp_path / 'gone'}")
    assert "adapter folder not found" in out


@pytest.mark.parametrize("args,match", [(["--adapter", "novalue"], "NAME=PATH"),
                                        (["--quant", "int3"], "unknown --quant 'int3'"),
                                        (["--backend", "tflite"], "unknown backend 'tflite'"),
                                        (["--adapter-mode", "merged"], "unknown --adapter-mode")])
def test_bad_flags(tmp_path, preset_dir, args, match):
    assert match in _bad(tmp_path, preset_dir, *args)


def test_unwritable_out(tmp_path, preset_dir):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    res = run("export", "--out", blocker / "bundle", "--quiet")
    assert res.exit_code == 2 and "a parent of the output is a file" in res.output.replace("\n", " ")


def test_failure_mid_export_leaves_nothing(tmp_path, preset_dir, monkeypatch):
    """An error after files were written (here: inside the backend) removes the temp bundle."""
    from memlora.backends.onnx import export as onnx_backend
    from memlora.core.errors import ExportFailure

    def boom(*a, **k):
        raise ExportFailure("simulated lowering failure", fix="none")

    monkeypatch.setattr(onnx_backend, "write_onnx_adapter", boom)
    model_dir, adapters = preset_dir("tiny-qwen2")
    out = _bad(tmp_path, preset_dir, "--model", model_dir, "--adapter", f"x={adapters['update']}", "--no-parity")
    assert "simulated lowering failure" in out
