"""Stock phone runtimes on the host: ExecuTorch's TextLLMRunner (Android LlmModule / iOS TextRunner)
and ONNX Runtime GenAI open memlora bundles with no file added or changed, and generate the PyTorch
reference's greedy tokens (conformance.json) for every adapter.

Two bundles, each exported once per module: ExecuTorch (one adapter, external + fused, fp32 + int4:
four lowerings) and ONNX (two adapters, so GenAI switches adapters; external + fused, fp32 + int4).
Parity against PyTorch is covered elsewhere, so it is skipped here; conformance.json still comes
from the PyTorch reference (fp32 artifacts must match it token for token; int4 ones must match
memlora's own runner on the same files). Negative controls: a program without the runner's metadata, and a GenAI
config naming a KV input the graph lacks, must fail the stock check with a message naming the fix.
"""
from __future__ import annotations

import json
import shutil

import pytest

from memlora.core.config import AdapterMode, BackendName, Quant
from memlora.core.errors import MemloraError

MODES = [AdapterMode.EXTERNAL, AdapterMode.FUSED]
QUANTS = [Quant.NONE, Quant.INT4]


def _export(tmp_path_factory, preset_dir, backend, adapters, name):
    from memlora.export import ExportOptions, run_export

    model_dir, dirs = preset_dir("tiny-qwen2")
    out = tmp_path_factory.mktemp("stock") / name
    manifest = run_export(ExportOptions(out=out, model=str(model_dir), adapters={n: dirs[n] for n in adapters},
                                        backends=[backend], adapter_modes=MODES, quants=QUANTS,
                                        check_parity=False), show_progress=False)
    return out, manifest


@pytest.fixture(scope="module")
def et_bundle(tmp_path_factory, preset_dir):
    pytest.importorskip("executorch")
    from memlora.backends import get_backend

    if get_backend("executorch").available():
        pytest.skip(get_backend("executorch").available())
    return _export(tmp_path_factory, preset_dir, BackendName.EXECUTORCH, ["answer"], "et")


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory, preset_dir):
    return _export(tmp_path_factory, preset_dir, BackendName.ONNX, ["extract", "answer"], "onnx")


_REPORTS: dict = {}


def _checked(root):
    """Run the stock check once per bundle (it rewrites the manifest) and return the report."""
    from memlora.stock.check import stock_check

    if root not in _REPORTS:
        _REPORTS[root] = stock_check(root)
    return _REPORTS[root]


def _assert_all_matched(root, report, runtime) -> int:
    """Every artifact ran in ``runtime`` and matched conformance.json; returns the adapter runs."""
    conformance = json.loads((root / "conformance.json").read_text())
    greedy = {g["adapter"]: g for g in conformance["greedy"]}
    seen = 0
    for art in report["artifacts"]:
        for check in art["stock"]["check"]:
            assert check["runtime"] == runtime
            assert check["run"] and check["passed"], (art["files"], check.get("failures") or check.get("error"))
            assert check["tokenizer_samples_checked"] == len(conformance["tokenizer"])
            for name, r in check["adapters"].items():
                assert r["tokens"] == len(greedy[name]["ids"]) == check["tokens_matched"][name]
                assert r["tokenizer_ids_equal"] and r["prompt_tokens"] == len(greedy[name]["prompt_ids"])
                seen += 1
    return seen


def test_executorch_text_llm_runner_runs_every_artifact(et_bundle):
    root, manifest = et_bundle
    report = _checked(root)
    assert report["stock_passed"] is True and not report["file_failures"]
    assert _assert_all_matched(root, report, "executorch-text-llm-runner") == 4  # 2 modes x 2 quants x 1 adapter
    on_disk = json.loads((root / "manifest.json").read_text())  # recorded in the manifest
    assert on_disk["stock_check"]["passed"] is True
    assert all(c["passed"] for a in on_disk["artifacts"] for c in a["stock"]["check"])
    for art in on_disk["artifacts"]:
        check = art["stock"]["check"][0]
        assert check["reference"].startswith("conformance.json") == (art["quant"] == "none")
        meta = check["adapters"]["answer"]["metadata"]
        ctx = manifest["context"]["length"]
        assert meta["get_max_seq_len"] == meta["get_max_context_len"] == ctx == art["max_seq_len"]
        assert meta["enable_dynamic_shape"] and meta["use_kv_cache"]
        assert meta["get_eos_ids"] == [2, 0]  # <|im_end|> (the turn end) and <|endoftext|>
        assert meta["get_n_layers"] == 2 and meta["get_vocab_size"] == 1024


def test_executorch_runtime_block_says_what_to_ship(et_bundle):
    root, manifest = et_bundle
    for art in manifest["artifacts"]:
        (block,) = art["stock"]["runtimes"]
        job = block["per_adapter"]["answer"]
        assert (root / job["program"]).is_file() and (root / job["tokenizer"]).is_file()
        assert (root / job["tokenizer"]).with_name("tokenizer_config.json").is_file()
        assert block["num_bos"] == 0 and block["eos_ids"] == [2, 0]
        assert block["context_length"] == manifest["context"]["length"]
        assert block["custom_ops"] == ["llama::update_cache", "llama::custom_sdpa"]
        if art["adapter_mode"] == "external":
            assert job["data_files"] == [art["files"]["foundation"]]
            assert "not supported" in block["ios"] and block["constructors"]["ios"] is None
            assert "foundation.ptd" in block["constructors"]["android"]
        else:
            assert job["data_files"] == [] and block["constructors"]["ios"].startswith("TextRunner(")


def test_genai_runs_every_artifact_and_switches_adapters(onnx_bundle):
    root, manifest = onnx_bundle
    report = _checked(root)
    assert report["stock_passed"] is True, [c.get("failures") for a in report["artifacts"] for c in a["stock"]["check"]]
    assert _assert_all_matched(root, report, "onnxruntime-genai") == 8  # 2 modes x 2 quants x 2 adapters
    conformance = {g["adapter"]: g for g in json.loads((root / "conformance.json").read_text())["greedy"]}
    for art in report["artifacts"]:
        check = art["stock"]["check"][0]
        for name, r in check["adapters"].items():
            if art["quant"] == "none":  # fp32: the PyTorch reference's tokens themselves
                assert r["ids"] == conformance[name]["ids"] and check["reference"].startswith("conformance.json")
            else:  # int4: memlora's onnxruntime runner on the same files (int4 may differ from fp32)
                assert "runner on the same files" in check["reference"] and name in check["conformance_agreement"]


def test_genai_folders_are_self_contained(onnx_bundle):
    from memlora.stock.genai_config import check_genai_config

    root, manifest = onnx_bundle
    folders = set()
    for art in manifest["artifacts"]:
        (block,) = art["stock"]["runtimes"]
        for name, job in block["per_adapter"].items():
            folder = root / job["model_folder"]
            folders.add(folder)
            for f in ("genai_config.json", "tokenizer.json", "tokenizer_config.json"):
                assert (folder / f).is_file(), folder / f
            cfg = json.loads((folder / "genai_config.json").read_text())["model"]
            assert cfg["context_length"] == manifest["context"]["length"] and cfg["eos_token_id"] == [2, 0]
            assert check_genai_config(folder) == []
            if art["adapter_mode"] == "external":
                assert (root / job["adapter_file"]).suffix == ".onnx_adapter"
    assert len(folders) == 2 + 2 * 2  # one external folder per quant, one fused folder per adapter per quant


def test_pte_without_runner_metadata_fails_the_stock_check(tmp_path):
    """Negative control: a program lowered without the constant methods is refused, by name."""
    pytest.importorskip("executorch")
    import torch
    from executorch.exir import to_edge_transform_and_lower

    from memlora.stock.check import check_block

    class Plain(torch.nn.Module):
        def forward(self, tokens, input_pos):
            return torch.zeros(1, tokens.shape[1], 8) + input_pos.float()

    ep = torch.export.export(Plain(), (torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, dtype=torch.long)))
    (tmp_path / "plain.pte").write_bytes(to_edge_transform_and_lower(ep).to_executorch().buffer)
    from memlora.sources.presets import write_preset

    model_dir, _ = write_preset("tiny-qwen2", tmp_path / "preset")
    shutil.copy(model_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    block = {"runtime": "executorch-text-llm-runner", "eos_ids": [2, 0],
             "per_adapter": {"answer": {"program": "plain.pte", "data_files": [], "tokenizer": "tokenizer.json"}}}
    conformance = {"greedy": [{"adapter": "answer", "case": {"op": "answer"}, "prompt_ids": [1, 2], "ids": [3]}],
                   "prompts": [{"case": {"op": "answer"}, "text": "hi"}], "tokenizer": []}
    result = check_block(tmp_path, block, conformance)
    assert result["run"] and result["passed"] is False
    assert any("no get_max_seq_len constant method" in f and "re-export" in f for f in result["failures"]), result


def test_genai_config_with_a_wrong_kv_name_fails_the_stock_check(onnx_bundle, tmp_path):
    """Negative control: a config whose past key names are not the graph's is caught, by field."""
    from memlora.stock.check import check_block

    root, manifest = onnx_bundle
    art = next(a for a in manifest["artifacts"] if a["adapter_mode"] == "external" and a["quant"] == "none")
    (block,) = art["stock"]["runtimes"]
    folder = block["per_adapter"]["extract"]["model_folder"]
    shutil.copytree(root / folder, tmp_path / folder)
    shutil.copy(root / "conformance.json", tmp_path / "conformance.json")
    cfg_file = tmp_path / folder / "genai_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["model"]["decoder"]["inputs"]["past_key_names"] = "past_key_values.%d.key"
    cfg_file.write_text(json.dumps(cfg))
    conformance = json.loads((root / "conformance.json").read_text())
    result = check_block(tmp_path, block, conformance)
    assert result["passed"] is False
    assert any("past_key_names 'past_key_values.%d.key' names no input" in f for f in result["failures"]), result


def test_missing_runtime_is_not_run_never_passed(onnx_bundle, monkeypatch):
    from memlora.stock import check

    root, manifest = onnx_bundle
    monkeypatch.setitem(check.RUNTIME_MODULES, "onnxruntime-genai", ("no_such_genai_module", "pip install it"))
    report = check.stock_check(root, write=False)
    assert report["stock_passed"] is None
    for art in report["artifacts"]:
        (c,) = art["stock"]["check"]
        assert c["run"] is False and c["passed"] is None and "no_such_genai_module" in c["reason"]


def test_cli_parity_stock(onnx_bundle):
    from typer.testing import CliRunner

    from memlora.cli import app

    root, _ = onnx_bundle
    result = CliRunner().invoke(app, ["parity", "--stock", str(root)])
    assert result.exit_code == 0, result.output
    assert "onnxruntime-genai" in result.output and "pass" in result.output and "FAIL" not in result.output


def test_context_sized_from_the_bundles_prompts(preset_dir, tmp_path):
    from memlora.export import ExportOptions, run_export
    from memlora.stock.context import PHONE_DEFAULT, context_need

    model_dir, dirs = preset_dir("tiny-qwen2")
    need = context_need(model_dir / "tokenizer.json", "chatml")
    assert need.longest_op == "update" and need.longest > 1500  # a tiny vocabulary makes long prompts
    assert need.default >= max(PHONE_DEFAULT, need.recommended) and need.default % 256 == 0
    with pytest.raises(MemloraError) as err:  # refused up front, with the numbers, before any weight loads
        run_export(ExportOptions(out=tmp_path / "b", model=str(model_dir), adapters=dirs, max_seq_len=512),
                   show_progress=False)
    msg = err.value.one_line()
    assert "512" in msg and str(need.longest) in msg and str(need.minimum) in msg and "--max-seq-len" in msg
    assert not (tmp_path / "b").exists()


def test_chat_template_renders_what_memlora_renders():
    pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from memlora.memory.chat import CHAT_FORMATS, render_chat
    from memlora.stock.tokenizer_config import chat_template

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)  # as transformers renders
    chats = [[{"role": "system", "content": "Be 'brief'\n"}, {"role": "user", "content": "hi"}],
             [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]]
    for name, fmt in CHAT_FORMATS.items():
        template = env.from_string(chat_template(fmt))
        for msgs in chats:
            for gen in (True, False):
                assert template.render(messages=msgs, add_generation_prompt=gen) == render_chat(name, msgs, gen), name
