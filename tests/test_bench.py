"""memlora bench: a seconds-long smoke run on the tiny default preset (ONNX + PyTorch eager).

Checks the shape of what is written (rows, ratios, RSS from each subprocess, table, plots, CLI),
never a speed: timings on a shared CI machine say nothing about the code.
"""
from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from memlora.bench.run import _plan, _spawn, run_bench, runnable
from memlora.bench.rows import file_bytes
from memlora.cli import app
from memlora.core.errors import MemloraError

ROW_FIELDS = {"runner", "backend", "adapter_mode", "quant", "adapter", "metric", "status"}
SMOKE = dict(prompt_lens=(8, 16), decode_tokens=4, repeats=2, warmup=1, switch_repeats=2, bandwidth_mb=16)


@pytest.fixture(scope="module")
def smoke(onnx_fp32_bundle, tmp_path_factory):
    root, _ = onnx_fp32_bundle
    out = tmp_path_factory.mktemp("bench")
    return run_bench(root, out, adapters=("extract", "update"), **SMOKE)


def ok_rows(result, metric: str, backend: str | None = None) -> list[dict]:
    return [r for r in result.rows if r["metric"] == metric and r["status"] == "ok"
            and (backend is None or r["backend"] == backend)]


def test_document_records_machine_versions_settings(smoke):
    doc = json.loads(smoke.json_path.read_text())
    assert doc["schema"] == "memlora-bench/1"
    assert doc["machine"]["cpu"] and doc["machine"]["usable_cpus"] >= 1
    assert {"memlora", "torch", "onnxruntime", "executorch", "coremltools"} <= set(doc["versions"])
    assert doc["settings"]["threads"] >= 1 and doc["settings"]["prompt_lens"] == [8, 16]
    assert doc["bandwidth"]["gbps"] > 0
    for row in doc["rows"]:
        assert ROW_FIELDS <= set(row), row
        if row["status"] == "ok" and row["metric"] not in ("disk_total_bytes", "disk_bytes"):
            assert row["value"] is not None and "unit" in row


def test_every_runner_measured_with_stats(smoke):
    runners = {r["runner"] for r in ok_rows(smoke, "decode_tps")}
    assert runners == {"pytorch/eager/none", "onnx/external/none", "onnx/fused/none"}
    for r in ok_rows(smoke, "decode_tps"):
        assert r["n"] == 2 and r["min"] <= r["value"] <= r["max"]
        assert r["adapter"] in ("extract", "update") and r["decode_tokens"] == 4
    lens = {(r["runner"], r["prompt_len"]) for r in ok_rows(smoke, "ttft_ms")}
    assert {n for _, n in lens} == {8, 16}


def test_ratios_to_eager_and_roofline(smoke):
    for metric in ("decode_tps", "prefill_tps", "ttft_ms", "load_s"):
        for r in ok_rows(smoke, metric, "onnx"):
            assert r["vs_pytorch"] > 0, r
    for r in ok_rows(smoke, "decode_tps"):
        assert r["weight_bytes_per_token"] > 0 and 0 < r["roofline_fraction"]
        assert r["roofline_tps"] > 0 and r["achieved_gbps"] > 0


def test_peak_rss_comes_from_each_subprocess(smoke):
    rss = {r["runner"]: r for r in ok_rows(smoke, "peak_rss_mb")}
    assert set(rss) == {"pytorch/eager/none", "onnx/external/none", "onnx/fused/none"}
    for r in rss.values():
        assert r["value"] > 0 and r["rss_runtime_mb"] > 0 and r["value"] >= r["rss_runtime_mb"]
    resident = ok_rows(smoke, "resident_peak_rss_mb")
    assert [r["runner"] for r in resident] == ["onnx/fused/none"] and resident[0]["value"] > 0
    assert 0 < resident[0]["model_rss_mb"] < resident[0]["value"]  # the runtime baseline is subtracted


def test_external_against_fused_switch_and_disk(smoke):
    overhead = ok_rows(smoke, "decode_overhead_vs_fused")
    assert {r["adapter"] for r in overhead} == {"extract", "update"}
    assert {r["runner"] for r in ok_rows(smoke, "switch_ms")} >= {"onnx/external/none", "pytorch/eager/none"}
    total = {r["runner"]: r for r in ok_rows(smoke, "disk_total_bytes")}
    assert total["onnx/external/none"]["shared_bytes"] > 0 and total["onnx/fused/none"]["shared_bytes"] == 0
    s = smoke.summary
    assert s["decode_vs_eager"]["none"]["ratio"] > 0
    mem = s["memory"]["onnx/none"]
    assert mem["disk_ratio_fused_all"] == pytest.approx(3.0, rel=0.01)
    assert mem["rss_ratio_external"] > 0 and mem["rss_ratio_fused_resident"] > 0
    assert set(s["external_overhead"]) == {"onnx/external/none"}


def test_markdown_and_plots_written(smoke):
    md = smoke.md_path.read_text()
    assert "| runner | adapter | load s | TTFT ms @8 | TTFT ms @16 |" in md
    assert "onnx/external/none | extract" in md and "## Goals" in md and "GB/s" in md
    assert sorted(p.name for p in smoke.plots) == ["decode_tps.png", "peak_rss.png", "ttft.png"]
    for p in smoke.plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_rerender_from_json_alone(smoke, tmp_path):
    from memlora.bench.report import rerender

    copy = tmp_path / "bench.json"
    copy.write_text(smoke.json_path.read_text())
    written = rerender(copy)
    assert [p.name for p in written] == ["bench.md", "decode_tps.png", "peak_rss.png", "ttft.png"]
    assert (tmp_path / "bench.md").read_text() == smoke.md_path.read_text()


def test_clipping_to_cache_capacity_is_recorded():
    _, plan = _plan({"max_seq_len": 128}, (64, 256, 1024), 128)
    assert plan["prompt_lens"] == [64, 127]
    assert plan["decode_tokens"] == 126 and plan["decode_prompt_len"] == 1
    assert _plan({"max_seq_len": None}, (64, 1024), 128)[1]["prompt_lens"] == [64, 1024]


def test_core_ml_is_never_timed_off_macos():
    reason = runnable("coreml")
    if sys.platform != "darwin":
        assert reason and "macOS" in reason


def test_file_bytes_counts_side_data_and_packages():
    manifest = {"files": [{"path": "x/base.onnx", "bytes": 10}, {"path": "x/base.onnx.data", "bytes": 100},
                          {"path": "x/a.onnx_adapter", "bytes": 3}, {"path": "m.mlpackage/Data/w.bin", "bytes": 7}]}
    art = {"adapters": ["a"], "files": {"model": "x/base.onnx", "adapter:a": "x/a.onnx_adapter"}}
    assert file_bytes(manifest, art) == (110, {"a": 3})
    assert file_bytes(manifest, {"adapters": ["a"], "files": {"model:a": "m.mlpackage"}}) == (0, {"a": 7})


def test_worker_failure_is_a_reason_not_a_number(tmp_path):
    art = {"backend": "onnx", "adapter_mode": "fused", "quant": "none", "adapters": ["a"],
           "files": {"model:a": "missing.onnx"}, "max_seq_len": None, "meta": {}, "parity": None}
    res = _spawn(dict(kind="artifact", root=str(tmp_path), artifact=art, adapters=["a"], threads=1, vocab_size=16,
                      prompt_lens=[4], decode_prompt_len=4, decode_tokens=2, repeats=1, warmup=0, switch_repeats=0),
                 timeout_s=120)
    assert "missing" in res["error"] and "load_s" not in res


def test_bad_adapter_is_a_clear_error(onnx_fp32_bundle, tmp_path):
    with pytest.raises(MemloraError, match="unknown adapter or backend nope"):
        run_bench(onnx_fp32_bundle[0], tmp_path, adapters=("nope",), **SMOKE)


def test_cli_bench(onnx_fp32_bundle, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["bench", str(onnx_fp32_bundle[0]), "--out", str(out), "--backend", "onnx",
                                      "--adapter-mode", "external", "--adapter", "answer", "--prompt-lens", "8", "--decode-tokens", "2",
                                      "--repeats", "1", "--warmup", "0", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "onnx/external/none" in result.output and (out / "bench.json").is_file() and (out / "bench.md").is_file()
    assert not list(out.glob("*.png"))
    bad = CliRunner().invoke(app, ["bench", str(onnx_fp32_bundle[0]), "--out", str(out), "--prompt-lens", "x"])
    assert bad.exit_code == 2
