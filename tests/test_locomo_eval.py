"""LoCoMo harness: ONNX vs PyTorch task-level parity at fp32, scores, CLI, bad inputs."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from loop_fixtures import locomo_file, loop_bundle  # noqa: F401 (fixtures)
from memlora.cli import app
from memlora.core.errors import MemloraError
from memlora.eval.locomo import LocomoSettings, RunRecord, run_locomo, task_parity

cli = CliRunner()


def run(*args):
    return cli.invoke(app, [str(a) for a in args])


def test_onnx_matches_pytorch_task_level(loop_bundle, locomo_file):
    report = run_locomo(loop_bundle[0], locomo_file, LocomoSettings("onnx", compare="pytorch", max_new_tokens=12))
    par = report["parity"]
    assert par["all_identical"], par
    # every turn is one extract; the raw fallback makes every turn reach update; 3 questions (cat 5 skipped)
    assert [(par[op]["identical"], par[op]["total"]) for op in ("extract", "update", "answer")] == [(4, 4), (4, 4), (3, 3)]
    onnx, torch_ = report["results"]["onnx"], report["results"]["pytorch"]
    assert onnx["turns"] == 4 and onnx["questions"] == 3
    assert sorted(onnx["by_category"]) == ["1", "2", "4"]
    assert onnx["memories"] == torch_["memories"] == 4 and onnx["store_bytes"] > 0
    # random weights: nothing parses, so every turn is stored verbatim through the fallback
    assert onnx["turns_stored_from"] == {"raw-turn": 4} and onnx["events_applied"] == {"ADD": 4}
    assert onnx["ops"]["extract"]["calls"] == 4 and onnx["ops"]["answer"]["new_tokens_per_call"] <= 12
    assert (onnx["f1"], onnx["bleu1"]) == (torch_["f1"], torch_["bleu1"])
    assert all(ex["memories"] > 0 for ex in onnx["examples"])  # answers saw both speakers' memories
    assert report["settings"]["conversation_ids"] == ["conv-1"]


def test_task_parity_counts_unmatched_calls():
    a, b = RunRecord(), RunRecord()
    a.outputs.update(extract=["x", "y", "z"], update=["u"], answer=[])
    b.outputs.update(extract=["x", "Y"], update=["u"], answer=[])
    par = task_parity(a, b)
    assert (par["extract"]["identical"], par["extract"]["total"], par["extract"]["share"]) == (1, 3, 0.3333)
    assert par["extract"]["first_difference"] == {"index": 1, "backend": "y", "pytorch": "Y"}
    assert par["update"]["share"] == 1.0 and par["answer"]["share"] is None
    assert not par["all_identical"]


def test_cli_locomo_writes_json(tmp_path, loop_bundle, locomo_file):
    out, db = tmp_path / "r.json", tmp_path / "m.db"
    res = run("locomo", loop_bundle[0], "--data", locomo_file, "--conversations", "2", "--questions", "1",
              "--max-sessions", "1", "--max-turns", "1", "--max-new-tokens", "4", "--out", out, "--db", db)
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["settings"]["conversation_ids"] == ["conv-1", "conv-2"]
    assert report["results"]["onnx"]["turns"] == 2 and report["results"]["onnx"]["questions"] == 2
    assert "parity" not in report and "time per operation" in res.output and "scores per category" in res.output
    assert any(name in res.output for name in ("multi-hop", "temporal", "open-domain", "single-hop"))
    assert db.is_file()
    res = run("locomo", loop_bundle[0], "--data", locomo_file, "--db", db)
    assert res.exit_code == 2 and "--db file already exists" in res.output


@pytest.mark.parametrize("content, match", [(None, "LoCoMo file not found"), ("[1, 2]", "not a LoCoMo file"),
                                            ("{bad json", "not a LoCoMo file"), ("[]", "no conversations")])
def test_bad_data_is_one_line(tmp_path, loop_bundle, content, match):
    data = tmp_path / "data.json"
    if content is not None:
        data.write_text(content)
    res = run("locomo", loop_bundle[0], "--data", data)
    assert res.exit_code == 2 and match in res.output and "Traceback" not in res.output


def test_bad_options(loop_bundle, locomo_file):
    res = run("locomo", loop_bundle[0], "--data", locomo_file, "--backend", "executorch")
    assert res.exit_code == 2 and "re-export with --backend executorch" in res.output
    with pytest.raises(MemloraError, match="unknown --compare"):
        run_locomo(loop_bundle[0], locomo_file, LocomoSettings(compare="tflite"))
    with pytest.raises(MemloraError, match="--questions must be >= 1"):
        run_locomo(loop_bundle[0], locomo_file, LocomoSettings(questions=0))


@pytest.mark.slow  # an ExecuTorch export (~1 min alone); the ONNX test covers the same path
def test_executorch_matches_pytorch_task_level(tmp_path_factory, locomo_file):
    """ExecuTorch through get_backend("executorch"): a static KV cache of 256 truncates the long
    prompts from the left; the reference run takes the same limit, so outputs must still match."""
    pytest.importorskip("executorch")
    from memlora.backends import get_backend

    reason = get_backend("executorch").available()
    if reason:
        pytest.skip(reason)
    from memlora.core.config import BackendName
    from memlora.export import ExportOptions, run_export

    out = tmp_path_factory.mktemp("et-loop") / "bundle"
    manifest = run_export(ExportOptions(out=out, backends=[BackendName.EXECUTORCH], parity_tokens=8),
                          show_progress=False)
    context = manifest["context"]["length"]  # sized from the bundle's prompts (a short one is refused)
    report = run_locomo(out, locomo_file, LocomoSettings("executorch", compare="pytorch", max_new_tokens=8,
                                                max_turns=1, questions=2))
    assert report["results"]["executorch"]["max_seq_len"] == report["results"]["pytorch"]["max_seq_len"] == context
    assert report["parity"]["all_identical"], report["parity"]
    assert report["parity"]["answer"]["total"] == 2
