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
    assert doc["schema"] == "memlora-bench/2"
    assert doc["machine"]["cpu"] and doc["machine"]["usable_cpus"] >= 1
    assert {"memlora", "torch", "onnxruntime", "executorch", "coremltools"} <= set(doc["versions"])
    assert doc["settings"]["threads"] >= 1 and doc["settings"]["prompt_lens"] == [8, 16]
    assert doc["bandwidth"]["gbps"] > 0 and doc["bandwidth"]["threads"] == doc["settings"]["threads"]
    assert doc["model"]["shape"]["vocab"] == doc["model"]["vocab_size"]
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
        assert r["weight_bytes_per_token"] > 0 and r["kv_bytes"] > 0 and r["bytes_method"]
        assert r["roofline_tps"] > 0 and r["achieved_gbps"] > 0
        if r["roofline_fraction"] is None:  # the tiny model fits the cache: no DRAM roofline
            assert "cache" in r["roofline_note"]
        else:
            assert 0 < r["roofline_fraction"]
    onnx = {r["adapter"]: r for r in ok_rows(smoke, "decode_tps", "onnx") if r["adapter_mode"] == "fused"}
    assert all(r["gathered_table_bytes"] == 0 for r in onnx.values())  # tied: the table is the head, read in full
    for r in ok_rows(smoke, "decode_tps", "onnx"):  # eager ratios pair the same adapter
        eager = next(e for e in ok_rows(smoke, "decode_tps", "pytorch") if e["adapter"] == r["adapter"])
        assert r["vs_pytorch"] == pytest.approx(r["value"] / eager["value"])


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
    best = s["decode_vs_eager"]["none"]
    assert best["ratio"] > 0 and set(best["per_adapter"]) == {"extract", "update"}
    sw = [r for r in ok_rows(smoke, "switch_effective_ms")]
    calls = {r["runner"]: r["value"] for r in ok_rows(smoke, "switch_ms")}
    for r in sw:  # the switch cost includes the call, so it is never below it
        assert r["value"] >= calls[r["runner"]] * 0.999 and r["steady_step_ms"] > 0
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
    with pytest.raises(MemloraError, match="unknown adapter nope"):
        run_bench(onnx_fp32_bundle[0], tmp_path / "o", adapters=("nope",), **SMOKE)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, says", [
    (["--backend", "tflite"], "unknown backend tflite"),
    (["--quant", "int3"], "unknown --quant int3"),
    (["--adapter-mode", "baked"], "unknown --adapter-mode baked"),
    (["--backend", "coreml"], "no artifact of the bundle matches"),
    (["--llama-bench", "/nonexistent/llama-bench"], "no llama-bench binary"),
    (["--programs", "some"], "unknown --programs 'some'"),
])
def test_bench_bad_filters_fail_before_any_work(onnx_fp32_bundle, tmp_path, monkeypatch, args, says):
    import memlora.bench.env as bench_env

    monkeypatch.setattr(bench_env, "memory_bandwidth", lambda *a, **k: pytest.fail("bandwidth test ran"))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["bench", str(onnx_fp32_bundle[0]), "--out", str(out), *args])
    assert res.exit_code == 2 and "error:" in res.output and says in res.output and "fix:" in res.output, res.output
    assert "Traceback" not in res.output and not out.exists()


def test_bench_out_a_file_and_not_a_bundle(tmp_path):
    bundle_like = tmp_path / "plain"
    bundle_like.mkdir()
    (tmp_path / "file").write_text("x")
    for args, says in (([str(bundle_like), "--out", str(tmp_path / "o")], "neither a bundle"),
                       ([str(bundle_like), "--out", str(tmp_path / "file")], "--out is a file"),
                       ([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], "not a bundle folder"),
                       (["no-such-preset", "--out", str(tmp_path / "o")], "unknown preset")):
        res = CliRunner().invoke(app, ["bench", *args])
        assert res.exit_code == 2 and says in res.output and "--model" not in res.output, res.output
        assert "Traceback" not in res.output
    assert not (tmp_path / "o").exists() and (tmp_path / "file").read_text() == "x"


def test_roofline_counts_one_row_of_a_gathered_table(tmp_path):
    """An untied table read only by Gather counts one row; a tied one (also the head) counts in full."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from memlora.bench.roofline import bytes_per_token, kv_bytes, model_shape, onnx_gathered

    emb = numpy_helper.from_array(np.zeros((100, 8), np.float32), "emb")
    head = numpy_helper.from_array(np.zeros((8, 100), np.float32), "head")
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["x"]), helper.make_node("MatMul", ["x", "head"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 100])], [emb, head])
    onnx.save(helper.make_model(graph), tmp_path / "untied.onnx")
    assert onnx_gathered(str(tmp_path / "untied.onnx")) == (3200, 32)
    tied = [nodes[0], helper.make_node("Transpose", ["emb"], ["t"], perm=[1, 0]),
            helper.make_node("MatMul", ["x", "t"], ["y"])]
    graph = helper.make_graph(tied, "g", graph.input, graph.output, [emb])
    onnx.save(helper.make_model(graph), tmp_path / "tied.onnx")
    assert onnx_gathered(str(tmp_path / "tied.onnx")) == (0, 0)
    shape = model_shape(dict(hidden_size=8, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=3,
                             vocab_size=100, tie_word_embeddings=False))
    assert kv_bytes(shape, 10) == 3 * 2 * 1 * 4 * 10 * 4
    art = {"files": {"model": "untied.onnx"}, "adapters": ["a"]}
    b = bytes_per_token("onnx", tmp_path, art, "a", shape, 6400, 10)
    assert b["bytes_per_token"] == 6400 - 3200 + 32 + kv_bytes(shape, 10)
    et = bytes_per_token("executorch", None, {"quant": "int4"}, "a", shape, 10_000, 10)
    assert et["gathered_table_bytes"] == 100 * 8 * 4
    tied = dict(shape, tied=True)
    assert bytes_per_token("executorch", None, {"quant": "none"}, "a", tied, 10_000, 10)["gathered_table_bytes"] == 0
    assert bytes_per_token("executorch", None, {"quant": "int4"}, "a", tied, 10_000, 10)["gathered_table_bytes"] == 3200


def test_roofline_takes_out_the_second_copy_of_a_tied_fp32_table():
    """ExecuTorch fused fp32 stores a tied table twice (the delegated head's blob and the gathered
    nn.Embedding); one copy is read per token in full, the other one row. External mode's
    foundation.ptd holds it once, and there nothing is taken out."""
    from memlora.bench.roofline import bytes_per_token, model_shape, weights_bytes

    shape = model_shape(dict(hidden_size=896, intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2,
                             num_hidden_layers=24, vocab_size=151936, tie_word_embeddings=True))
    single = weights_bytes(shape)
    assert abs(single - 1_976_000_000) < 3_000_000  # qwen2.5-0.5b: 494M parameters, fp32, table once
    table = 151936 * 896 * 4
    once = bytes_per_token("executorch", None, {"quant": "none"}, "extract", shape, 1_995_483_776, 100)
    assert once["gathered_table_bytes"] == 0  # foundation.ptd + an 18 MB adapter program: one copy
    twice = bytes_per_token("executorch", None, {"quant": "none"}, "extract", shape, 2_522_275_328, 100)
    assert twice["gathered_table_bytes"] == table and twice["table_row_bytes"] == 896 * 4
    assert twice["matmul_bytes"] == 2_522_275_328 - table
    no_width = {k: v for k, v in shape.items() if k != "intermediate"}  # a config without the MLP width
    assert bytes_per_token("executorch", None, {"quant": "none"}, "x", no_width, 2_522_275_328, 100)["gathered_table_bytes"] == 0


def test_roofline_share_is_none_in_cache_and_flagged_above_roof():
    from memlora.bench.rows import _roof

    shape = dict(hidden=8, layers=1, vocab=10, kv_heads=1, head_dim=8, tied=True)
    common = dict(gbps=1.0, shape=shape, backend="pytorch", adapter="a", context=4)
    assert _roof(10.0, 1000, dict(common, llc=1 << 20))["roofline_fraction"] is None
    high = _roof(1e9, 1000, dict(common, llc=None))
    assert high["roofline_fraction"] > 1 and "above" in high["roofline_note"]


def test_summary_pairs_each_adapter_with_its_own_eager_figure():
    from memlora.bench.rows import _add_ratios, summarize

    def row(runner, adapter, v):
        b, m, q = runner.split("/")
        return dict(runner=runner, backend=b, adapter_mode=m, quant=q, adapter=adapter, metric="decode_tps",
                    status="ok", value=v, parity=None)

    rows = [row("pytorch/eager/none", "a", 100.0), row("pytorch/eager/none", "b", 10.0),
            row("onnx/external/none", "a", 200.0), row("onnx/external/none", "b", 20.0)]
    _add_ratios(rows)
    s = summarize(rows)
    assert s["decode_vs_eager"]["none"]["ratio"] == pytest.approx(2.0)  # not 200 / 10 or 110 / 55
    assert s["eager_decode_spread"]["max_over_min"] == pytest.approx(10.0)


def test_read_bandwidth_is_one_recorded_figure():
    from memlora.bench.env import memory_bandwidth

    bw = memory_bandwidth(8, repeats=2, threads=2)
    assert bw["threads"] == 2 and bw["bytes_read"] == 8 << 20 and bw["gbps"] > 0 and "read" in bw["method"]


def test_cli_bench(onnx_fp32_bundle, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["bench", str(onnx_fp32_bundle[0]), "--out", str(out), "--backend", "onnx",
                                      "--adapter-mode", "external", "--adapter", "answer", "--prompt-lens", "8", "--decode-tokens", "2",
                                      "--repeats", "1", "--warmup", "0", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "onnx/external/none" in result.output and (out / "bench.json").is_file() and (out / "bench.md").is_file()
    assert "peak RSS MiB" in result.output  # the table is not cut to 80 columns in a pipe
    assert not list(out.glob("*.png"))
    bad = CliRunner().invoke(app, ["bench", str(onnx_fp32_bundle[0]), "--out", str(out), "--prompt-lens", "x"])
    assert bad.exit_code == 2


def test_executorch_worker_gets_one_openmp_thread(monkeypatch):
    """XNNPACK has its own pool of --threads; OpenMP beside it stays at 1 (issue 17: it only spins)."""
    import memlora.bench.run as bench_run

    seen = {}

    class Stop(Exception):
        pass

    def fake_popen(cmd, env, **kw):
        seen["env"] = env
        raise Stop

    monkeypatch.setattr(bench_run.subprocess, "Popen", fake_popen)
    for backend, want in (("executorch", "1"), ("onnx", "2")):
        with pytest.raises(Stop):
            _spawn(dict(kind="artifact", artifact={"backend": backend}, threads=2), timeout_s=1)
        assert seen["env"]["OMP_NUM_THREADS"] == want


def test_loop_turn_breakdown_and_identical_outputs(onnx_fp32_bundle):
    """`memlora bench --loop`: one memory-loop turn per backend and quant in its own process, with
    and without prefix reuse; each operation's wall time is split into prefill, decode and the rest."""
    from memlora.bench.loop import OPS, measure, section
    from memlora.core.bundle import read_manifest

    root, _ = onnx_fp32_bundle
    got = measure(read_manifest(root), root, 1, lambda _m: None)
    assert [(r["backend"], r["quant"], r["status"]) for r in got] == [("onnx", "none", "ok")], got
    r = got[0]
    assert r["identical_outputs"] is True
    for mode in ("full_prefill", "prefix_reuse"):
        assert len(r[mode]["turns"]) == 3
        for turn in r[mode]["turns"]:
            for op in OPS:
                parts = turn[f"{op}_prefill_ms"] + turn[f"{op}_decode_ms"] + turn[f"{op}_other_ms"]
                assert parts == pytest.approx(turn[f"{op}_ms"], abs=0.5) and turn[f"{op}_prefill_ms"] > 0
    assert r["prefix_reuse"]["stats"]["extract"]["reused_tokens"] > 0 == r["full_prefill"]["stats"]["extract"]["reused_tokens"]
    text = "\n".join(section(got))
    assert "onnx/external/none" in text and "| yes |" in text


def test_table_with_a_peer_that_has_no_per_runner_rows():
    """A llama.cpp row set has decode / ttft rows under adapter 'none' and no load or RSS rows; the
    table must render it (it once added a key to the index while iterating it)."""
    from memlora.bench.report import table

    def r(runner, adapter, metric, value, **kw):
        return dict(runner=runner, adapter=adapter, metric=metric, value=value, min=value, max=value, status="ok", **kw)

    doc = {"settings": {"prompt_lens": [8]}, "rows": [
        r("onnx/external/none", None, "load_s", 1.0), r("onnx/external/none", None, "peak_rss_mb", 10.0),
        r("onnx/external/none", "a", "decode_tps", 5.0), r("llama.cpp/gguf/q4_0", "none", "decode_tps", 7.0),
        r("llama.cpp/gguf/q4_0", "none", "ttft_ms", 3.0, requested_prompt_len=8)]}
    cols, cells = table(doc)
    assert [c[:2] for c in cells] == [["onnx/external/none", "a"], ["llama.cpp/gguf/q4_0", "none"]]
    assert cells[1][cols.index("peak RSS MiB")] == "-" and cells[1][cols.index("TTFT ms @8")] == "3.0"


def test_bandwidth_keeps_the_faster_reading_and_both_samples():
    """The roofline divides by the faster of the start and end readings (a slow reading would push
    shares past 100%); both stay in the record."""
    from memlora.bench.env import faster as _faster

    slow, fast = dict(gbps=10.0, method="m", threads=1), dict(gbps=15.5, method="m", threads=1)
    assert _faster(slow, fast) == dict(fast, samples_gbps=[10.0, 15.5])
    assert _faster(fast, slow)["gbps"] == 15.5 and _faster(fast, slow)["samples_gbps"] == [15.5, 10.0]
