"""llama.cpp peer rows: llama-bench JSON -> bench rows, the per-bit-width comparison, and the GGUF
conversion. A fake ``llama-bench`` (a script printing what the real one prints) stands in for the
binary, which is never built or required here."""
from __future__ import annotations

import json
import stat
import sys

import numpy as np
import pytest

from memlora.bench import llamacpp, peers

FAKE = r'''#!{python}
import json, sys
args = sys.argv[1:]
open({log!r}, "a").write(json.dumps(args) + "\n")
if args == ["--version"]:
    print("version: 9999 (abc1234)", file=sys.stderr); sys.exit(0)
get = lambda k: args[args.index(k) + 1]
t, n, d = int(get("-t")), int(get("-n")), int(get("-d"))
recs = []
for p in map(int, get("-p").split(",")):
    if p == 0 and n == 0:
        continue
    speed = {fast} if p == 0 else 400.0
    recs.append(dict(build_commit="abc1234", n_threads=t, n_prompt=p, n_gen=0 if p else n, n_depth=d,
                     type_k="f16", avg_ts=speed, samples_ts=[speed * 0.9, speed, speed * 1.1]))
print(json.dumps(recs))
'''


@pytest.fixture
def fake_bench(tmp_path, monkeypatch):
    """A llama-bench that answers tg at 20 tok/s and pp at 400; ``prepare`` hands it three files."""
    log = tmp_path / "calls.jsonl"
    binary = tmp_path / "bin" / "llama-bench"
    binary.parent.mkdir()
    binary.write_text(FAKE.format(python=sys.executable, log=str(log), fast=20.0))
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)

    def prepare(_binary, _model, work, _say):
        work.mkdir(parents=True, exist_ok=True)
        files = {k: work / f"{k}.gguf" for k in ("f32", "q4_0", "q4_0-pure")}
        for f in files.values():
            f.write_bytes(b"x" * 1000)
        return files

    monkeypatch.setattr(llamacpp, "prepare", prepare)
    monkeypatch.setattr(llamacpp, "gguf_bytes", lambda path, src: (10_000_000, 0, 0))
    return binary, log


SHAPE = dict(hidden=64, layers=2, vocab=256, kv_heads=2, head_dim=16, tied=True)


def _measure(binary, tmp_path):
    return llamacpp.measure(binary, tmp_path / "model", tmp_path / "gguf", threads=2, prompt_lens=[64, 256],
                            decode_prompt_len=64, decode_tokens=128, repeats=3, shape=SHAPE, gbps=10.0,
                            say=lambda _m: None)


def test_fake_llama_bench_becomes_rows(fake_bench, tmp_path):
    binary, log = fake_bench
    info, rows = _measure(binary, tmp_path)
    assert info["status"] == "ok" and info["version"] == "version: 9999 (abc1234)" and info["build_commit"] == "abc1234"
    calls = [json.loads(line) for line in log.read_text().splitlines()][1:]  # after --version
    assert all(c[c.index("-t") + 1] == "2" and c[c.index("-r") + 1] == "3" for c in calls)
    # Decode at the depth memlora's decode starts from; prefill at every prompt length.
    assert any(c[c.index("-n") + 1] == "128" and c[c.index("-d") + 1] == "64" for c in calls)
    dec = [r for r in rows if r["metric"] == "decode_tps"]
    assert {r["runner"] for r in dec} == {"llama.cpp/gguf/f32", "llama.cpp/gguf/q4_0", "llama.cpp/gguf/q4_0-pure"}
    r = dec[0]
    assert (r["value"], r["min"], r["max"], r["n"]) == (20.0, 18.0, 22.0, 3) and r["prompt_len"] == 64
    kv = 2 * 2 * 2 * 16 * (64 + 64) * 2  # layers x K,V x kv_heads x head_dim x mean position x f16
    assert r["weight_bytes_per_token"] == 10_000_000 + kv and r["roofline_fraction"] == pytest.approx(20 * (1e7 + kv) / 1e10)
    pre = sorted((r["prompt_len"], r["value"]) for r in rows if r["metric"] == "prefill_tps" and r["quant"] == "f32")
    assert pre == [(64, 400.0), (256, 400.0)]
    ttft = next(r for r in rows if r["metric"] == "ttft_ms" and r["prompt_len"] == 64 and r["quant"] == "f32")
    assert ttft["value"] == pytest.approx(1e3 * 64 / 400)


def test_a_failing_llama_bench_is_a_reason(fake_bench, tmp_path):
    binary, _ = fake_bench
    binary.write_text("#!/bin/sh\necho 'error: model broken' >&2\nexit 3\n")
    info, rows = _measure(binary, tmp_path)
    assert info["status"] == "error" and "model broken" in info["reason"] and rows == []


def test_without_a_binary_the_peer_is_not_measured(tmp_path, monkeypatch):
    monkeypatch.delenv("LLAMA_BENCH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert llamacpp.find_binary(None) is None and llamacpp.find_binary(tmp_path / "nope") is None
    info, rows = _measure(None, tmp_path)
    assert info["status"] == "not measured" and rows == []
    lines = peers.section({"peers": {"llama.cpp": info}, "summary": {}})
    assert any("not measured" in line for line in lines)


def _memlora(runner: str, quant: str, tps: dict[str, float]) -> list[dict]:
    backend, mode, _ = runner.split("/")
    return [dict(runner=runner, backend=backend, adapter_mode=mode, quant=quant, adapter=a, status="ok",
                 metric="decode_tps", value=v) for a, v in tps.items()]


def test_ratio_per_bit_width_and_targets(fake_bench, tmp_path):
    binary, _ = fake_bench
    info, rows = _measure(binary, tmp_path)  # llama.cpp: 20 tok/s for every type
    rows += _memlora("onnx/external/int4", "int4", dict(extract=19.0, update=21.0, answer=23.0))  # median 21
    rows += _memlora("executorch/external/int4", "int4", dict(extract=30.0))
    rows += _memlora("onnx/external/none", "none", dict(extract=10.0))
    got = peers.compare(rows)
    q4 = got["int4/q4_0"]
    assert q4["per_runner"]["onnx/external/int4"]["ratio"] == pytest.approx(21 / 20)
    assert q4["best"] == "executorch/external/int4" and q4["best_ratio"] == pytest.approx(1.5)
    assert q4["met"] is True  # every int4 runner >= 1.0x q4_0
    pure = got["int4/q4_0-pure"]
    assert pure["met"] is True and pure["target"] == 1.2  # best 1.5x >= 1.2x
    assert got["none/f32"]["met"] is False and got["none/f32"]["best_ratio"] == pytest.approx(0.5)
    assert "int8/q8_0" not in got  # no q8_0 file and no int8 runner: no pairing invented
    lines = peers.section({"peers": {"llama.cpp": info}, "summary": {"vs_llamacpp": got}})
    text = "\n".join(lines)
    assert "| int4 | q4_0 | 20.0 |" in text and "executorch/external/int4 (best) | 30.0 | 1.50x" in text
    assert "**no**" in text  # fp32 below llama.cpp f32 is shown, not hidden


def test_one_slow_int4_runner_fails_the_every_target(fake_bench, tmp_path):
    binary, _ = fake_bench
    _, rows = _measure(binary, tmp_path)
    rows += _memlora("executorch/external/int4", "int4", dict(extract=40.0))
    rows += _memlora("onnx/fused/int4", "int4", dict(extract=15.0))
    q4 = peers.compare(rows)["int4/q4_0"]
    assert q4["best_ratio"] == pytest.approx(2.0) and q4["worst_ratio"] == pytest.approx(0.75) and q4["met"] is False


@pytest.mark.parametrize("preset", ["tiny-qwen2", "tiny-llama"])
def test_gguf_conversion_keeps_the_weights(preset_dir, tmp_path, preset):
    """The f32 GGUF holds every tensor of the HF folder under llama.cpp's names (tied head left
    out), llama q/k rows permuted as llama.cpp's own converter does, and a placeholder vocab."""
    pytest.importorskip("gguf", reason="the optional gguf package (memlora[llamacpp]) is not installed")
    import gguf
    import torch
    from safetensors.torch import load_file

    from memlora.bench.gguf_convert import _permute, convert

    model_dir, _ = preset_dir(preset)
    out = convert(model_dir, tmp_path / "m.gguf")
    cfg = json.loads((model_dir / "config.json").read_text())
    reader = gguf.GGUFReader(str(out))
    got = {t.name: np.asarray(t.data) for t in reader.tensors}
    hf = {k: v.to(torch.float32).numpy() for shard in model_dir.glob("*.safetensors") for k, v in load_file(shard).items()}
    assert len(got) == len(hf) - (1 if "lm_head.weight" in hf and cfg.get("tie_word_embeddings", True) else 0)
    np.testing.assert_array_equal(got["token_embd.weight"], hf["model.embed_tokens.weight"])
    np.testing.assert_array_equal(got["blk.1.ffn_down.weight"], hf["model.layers.1.mlp.down_proj.weight"])
    q = hf["model.layers.0.self_attn.q_proj.weight"]
    want_q = _permute(q, cfg["num_attention_heads"]) if preset == "tiny-llama" else q
    np.testing.assert_array_equal(got["blk.0.attn_q.weight"], want_q)
    if preset == "tiny-llama":
        assert not np.array_equal(want_q, q)  # the permutation really moves rows
    fields = {f.name: f for f in reader.fields.values()}
    arch = "llama" if preset == "tiny-llama" else "qwen2"
    assert fields[f"{arch}.vocab_size"].parts[-1][0] == cfg["vocab_size"]
    assert bytes(fields["tokenizer.ggml.model"].parts[-1]).decode() == "none"


def test_rounds_take_the_median_ratio_of_same_round_pairs(fake_bench, tmp_path):
    """Three rounds on a drifting host: the ONNX runner is 1.1x llama.cpp in two rounds and 0.9x
    in the slow one, so the 'every int4 >= 1.0x q4_0' target is met by the median; a runner at
    0.9x in two rounds fails it (the negative control). The table shows every round."""
    from memlora.bench import rounds

    binary, _ = fake_bench
    _, peer_rows = _measure(binary, tmp_path)  # llama.cpp: 20 tok/s for every type

    def round_(onnx_tps: float) -> dict:
        rows = peer_rows + _memlora("onnx/external/int4", "int4", dict(extract=onnx_tps))
        return {2: peers.compare(rows)}

    combined = rounds.combine([round_(22.0), round_(18.0), round_(22.0)])
    q4 = combined[2]["int4/q4_0"]
    assert q4["rounds"] == 3 and q4["deciding_ratio"] == pytest.approx([1.1, 0.9, 1.1])
    assert q4["per_runner"]["onnx/external/int4"]["median_ratio"] == pytest.approx(1.1) and q4["met"] is True
    assert rounds.combine([round_(18.0), round_(22.0), round_(18.0)])[2]["int4/q4_0"]["met"] is False
    text = rounds.markdown(combined, "tiny")
    assert "| 2 | int4 | q4_0 | 20.0 / 20.0 / 20.0 | onnx/external/int4 | 22.0 / 18.0 / 22.0 | 1.10 / 0.90 / 1.10 | 1.10x" in text


def test_suite_rounds_write_the_median_table(fake_bench, onnx_fp32_bundle, tmp_path, monkeypatch):
    """run_suite --rounds 2 on a reused bundle: two full benches (memlora and llama.cpp each
    round, kept apart in round-N folders), then rounds.md / rounds.json with both rounds' ratios."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import run_suite

    binary, log = fake_bench
    root, _ = onnx_fp32_bundle
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    (work / "bundle-tiny-qwen2").symlink_to(root)
    monkeypatch.setitem(run_suite.SETTINGS, "tiny", dict(prompt_lens=(16,), decode_tokens=4, repeats=1, warmup=0,
                                                         adapters=("extract",), threads=1))
    doc = run_suite.run_preset("tiny-qwen2", out, work, ["onnx"], True, lambda _m: None, threads=[1],
                               llama_bench=binary, rounds=2)
    assert sorted(doc["runs"]) == ["1/1", "2/1"]
    assert (out / "tiny-qwen2" / "round-1" / "bench.json").is_file() and (out / "tiny-qwen2" / "round-2" / "bench.json").is_file()
    f32 = doc["rounds"][1]["none/f32"]
    assert f32["rounds"] == 2 and len(f32["peer_tps"]) == 2 and f32["median_peer_tps"] == pytest.approx(20.0)
    assert all(len(p["ratio"]) == 2 for p in f32["per_runner"].values())
    assert "over 2 rounds" in (out / "tiny-qwen2" / "rounds.md").read_text()
    assert json.loads((out / "tiny-qwen2" / "rounds.json").read_text())["1"]["none/f32"]["rounds"] == 2
    assert sum('"-t"' in line for line in log.read_text().splitlines()) >= 2  # llama.cpp timed in each round
