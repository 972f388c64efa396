"""The ONNX decoder's attention as one GroupQueryAttention per layer (backends/onnx/attention.py):
same logits as the graph as exported, through prefill, a continued prefill on a cache (the memory
loop's prefix reuse) and decode steps; a negative control; families it must leave alone; the
runner's refusal past the rotary tables."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import artifact

from memlora.backends import get_backend
from memlora.backends.base import Artifact
from memlora.core.errors import MemloraError


def _run(model, chunks, adapter_feeds):
    """Logits of the last position after each chunk, feeding each run's present back as past."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    past = {i.name: np.zeros([1, i.shape[1], 0, i.shape[3]], np.float32)
            for i in session.get_inputs() if i.name.startswith("past.")}
    pos, out = 0, []
    for ids in chunks:
        feeds = {"input_ids": np.array([ids], np.int64), **past, **adapter_feeds,
                 "position_ids": np.arange(pos, pos + len(ids), dtype=np.int64)[None]}
        values = session.run(names, feeds)
        past = {"past." + n.split(".", 1)[1]: v for n, v in zip(names[1:], values[1:])}
        pos += len(ids)
        out.append(values[0][0, -1])
    return np.stack(out)


@pytest.fixture(scope="module")
def unfused_qwen3(preset_dir, tmp_path_factory):
    """tiny-qwen3 (q/k RMSNorm between the projection and the rotary) exported with the attention
    left as the exporter wrote it, with its config and an adapter's tensors as feeds."""
    import onnx

    from memlora.core.config import OnnxConfig
    from memlora.export import ExportOptions, run_export
    import onnxruntime as ort

    model_dir, adapters = preset_dir("tiny-qwen3")
    out = tmp_path_factory.mktemp("unfused")
    manifest = run_export(ExportOptions(out=out, model=str(model_dir), adapters=adapters, check_parity=False,
                                        onnx=OnnxConfig(fuse_attention=False)), show_progress=False)
    art = artifact(manifest, "onnx", "external")
    assert art["meta"]["attention_fused"] == 0 and "rotary_positions" not in art["meta"]
    graph = onnx.load(out / art["files"]["model"])
    adapter = ort.AdapterFormat.read_adapter(str(out / art["files"]["adapter:extract"]))
    # Copies: the arrays are views of the adapter's buffers, which go with it.
    feeds = {name: value.numpy().copy() for name, value in adapter.get_parameters().items()}
    assert max(np.abs(v).max() for v in feeds.values()) > 0.1
    return graph, json.loads((model_dir / "config.json").read_text()), feeds


def _shape(cfg, positions=64):
    from memlora.backends.onnx.attention import AttentionShape

    return AttentionShape(cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"],
                          frozenset(range(cfg["num_hidden_layers"])), positions)


def test_fused_attention_same_logits_as_exported_graph(unfused_qwen3):
    """Prefill 9, then 4 more on that cache, then 3 decode steps: within 2e-5 of the exported
    graph. Swapping the cos and sin tables (a wrong rotary) moves them by > 1e-2."""
    import onnx

    from memlora.backends.onnx.attention import fuse_group_query_attention

    graph, cfg, feeds = unfused_qwen3
    chunks = [[5, 17, 3, 99, 42, 7, 8, 61, 30], [11, 12, 13, 14], [21], [22], [23]]
    reference = _run(graph, chunks, feeds)
    fused = onnx.ModelProto()
    fused.CopyFrom(graph)
    assert fuse_group_query_attention(fused, _shape(cfg)) == cfg["num_hidden_layers"]
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("GroupQueryAttention") == cfg["num_hidden_layers"]
    assert "Softmax" not in ops and "Neg" not in ops  # the rotary and the scores are inside it
    got = _run(fused, chunks, feeds)
    assert np.abs(got - reference).max() <= 2e-5, np.abs(got - reference).max()

    swapped = onnx.ModelProto()
    swapped.CopyFrom(fused)
    for init in swapped.graph.initializer:  # memlora_gqa.cos0 <-> memlora_gqa.sin0
        if init.name.endswith(".cos0") or init.name.endswith(".sin0"):
            init.name = init.name.replace("cos0", "tmp").replace("sin0", "cos0").replace("tmp", "sin0")
    assert np.abs(_run(swapped, chunks, feeds) - reference).max() > 1e-2


def test_fusion_leaves_sliding_window_layers_alone(unfused_qwen3):
    """A layer listed as sliding (not in ``full_layers``) keeps its exported ops; the others fuse,
    and the graph still matches."""
    import onnx

    from memlora.backends.onnx.attention import AttentionShape, fuse_group_query_attention

    graph, cfg, feeds = unfused_qwen3
    shape = _shape(cfg)
    model = onnx.ModelProto()
    model.CopyFrom(graph)
    assert fuse_group_query_attention(model, AttentionShape(**{**shape.__dict__, "full_layers": frozenset({1})})) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("GroupQueryAttention") == 1 and ops.count("Softmax") == 1
    chunks = [[5, 17, 3], [4, 6], [9]]
    assert np.abs(_run(model, chunks, feeds) - _run(graph, chunks, feeds)).max() <= 2e-5


def test_bundle_graphs_fused_and_runner_stops_at_the_tables(onnx_fp32_bundle, onnx_quant_bundle):
    """Every text decoder of the default preset fuses all its layers, records the table length,
    and the runner refuses a prompt past it with the one-line error, not an onnxruntime failure."""
    import onnx

    for root, manifest in (onnx_fp32_bundle, onnx_quant_bundle):
        for art in manifest["artifacts"]:
            meta = art["meta"]
            assert meta["attention_fused"] == manifest["model"]["num_layers"], (art["adapter_mode"], art["quant"])
            assert meta["rotary_positions"] == manifest["context"]["length"]
            first = next(v for k, v in art["files"].items() if k.startswith("model"))
            ops = [n.op_type for n in onnx.load(root / first, load_external_data=False).graph.node]
            assert ops.count("GroupQueryAttention") == meta["attention_fused"]
    root, manifest = onnx_fp32_bundle
    art = Artifact.from_json(artifact(manifest, "onnx", "external"))
    runner = get_backend("onnx").load(art, root)
    runner.set_adapter("extract")
    limit = art.meta["rotary_positions"]
    assert runner.max_seq_len == limit
    runner.prefill([3] * (limit - 1))
    runner.decode(4)  # the last row of the tables
    with pytest.raises(MemloraError, match="KV cache full"):
        runner.decode(5)
