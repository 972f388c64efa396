"""The ONNX decoder's graph rewrites (backends/onnx/{rotary,attention,fusions}.py): each gives the
same logits as the graph as exported, through prefill, a continued prefill on a cache (the memory
loop's prefix reuse) and decode steps; negative controls; layers they must leave alone; the
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
def raw_qwen3(preset_dir, tmp_path_factory):
    """tiny-qwen3 (q/k RMSNorm between the projection and the rotary) exported with no rewrites,
    with its config and an adapter's tensors as feeds."""
    import onnx

    from memlora.core.config import OnnxConfig
    from memlora.export import ExportOptions, run_export
    import onnxruntime as ort

    model_dir, adapters = preset_dir("tiny-qwen3")
    out = tmp_path_factory.mktemp("unfused")
    manifest = run_export(ExportOptions(out=out, model=str(model_dir), adapters=adapters, check_parity=False,
                                        onnx=OnnxConfig(rewrites=False)), show_progress=False)
    art = artifact(manifest, "onnx", "external")
    assert art["meta"]["fused_ops"] == {} and "rotary_positions" not in art["meta"]
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


def _rewritten(graph, cfg, kind):
    """A copy of ``graph`` with one rewrite applied, and what it must have done."""
    import onnx

    from memlora.backends.onnx.attention import fuse_group_query_attention
    from memlora.backends.onnx.fusions import fuse_rms_norms, fuse_skip_norms
    from memlora.backends.onnx.rotary import fuse_rotary

    model = onnx.ModelProto()
    model.CopyFrom(graph)
    layers = cfg["num_hidden_layers"]
    if kind == "rotary":  # one per query and key
        assert fuse_rotary(model, cfg["head_dim"], 64) == 2 * layers
    elif kind == "gqa":
        assert fuse_group_query_attention(model, _shape(cfg)) == layers
    else:  # the residual Add joins the norm after it: both norms of every layer, and the final one
        assert fuse_rms_norms(model) > 0 and fuse_skip_norms(model) == 2 * layers
    return model


@pytest.mark.parametrize("kind,gone,new", [("rotary", "Neg", "RotaryEmbedding"),
                                           ("gqa", "Softmax", "GroupQueryAttention"),
                                           ("norms", "Pow", "SkipSimplifiedLayerNormalization")])
def test_rewrite_same_logits_as_exported_graph(raw_qwen3, kind, gone, new):
    """Prefill 9, then 4 more on that cache, then 3 decode steps: within 2e-5 of the exported graph."""
    graph, cfg, feeds = raw_qwen3
    chunks = [[5, 17, 3, 99, 42, 7, 8, 61, 30], [11, 12, 13, 14], [21], [22], [23]]
    model = _rewritten(graph, cfg, kind)
    ops = [n.op_type for n in model.graph.node]
    assert gone not in ops and new in ops
    diff = np.abs(_run(model, chunks, feeds) - _run(graph, chunks, feeds)).max()
    assert diff <= 2e-5, diff


@pytest.mark.parametrize("kind", ["rotary", "gqa"])
def test_rotary_tables_negative_control(raw_qwen3, kind):
    """The tables are what makes the rewrite right: with cos and sin swapped, the logits move by
    more than 1e-2."""
    graph, cfg, feeds = raw_qwen3
    model = _rewritten(graph, cfg, kind)
    for init in model.graph.initializer:  # memlora_*.cos0 <-> memlora_*.sin0
        if init.name.endswith((".cos0", ".sin0")):
            init.name = init.name[:-4] + ("sin0" if init.name.endswith("cos0") else "cos0")
    chunks = [[5, 17, 3], [4, 6], [9]]
    assert np.abs(_run(model, chunks, feeds) - _run(graph, chunks, feeds)).max() > 1e-2


def test_fusion_leaves_sliding_window_layers_alone(raw_qwen3):
    """A layer listed as sliding (not in ``full_layers``) keeps its exported ops; the others fuse,
    and the graph still matches."""
    import onnx

    from memlora.backends.onnx.attention import AttentionShape, fuse_group_query_attention

    graph, cfg, feeds = raw_qwen3
    shape = _shape(cfg)
    model = onnx.ModelProto()
    model.CopyFrom(graph)
    assert fuse_group_query_attention(model, AttentionShape(**{**shape.__dict__, "full_layers": frozenset({1})})) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("GroupQueryAttention") == 1 and ops.count("Softmax") == 1
    chunks = [[5, 17, 3], [4, 6], [9]]
    assert np.abs(_run(model, chunks, feeds) - _run(graph, chunks, feeds)).max() <= 2e-5


def test_bundle_graphs_rewritten_and_runner_stops_at_the_tables(onnx_fp32_bundle, onnx_quant_bundle):
    """Every text decoder of the default preset (tiny-qwen2) has its rotaries, norms and (quantized)
    q/k/v bias fused, no GroupQueryAttention unless asked for, records the table length, and the
    runner refuses a prompt past it with the one-line error, not an onnxruntime failure."""
    import onnx

    for root, manifest in (onnx_fp32_bundle, onnx_quant_bundle):
        layers = manifest["model"]["num_layers"]
        for art in manifest["artifacts"]:
            fused, quant = art["meta"]["fused_ops"], art["quant"]
            assert fused["rotary"] == 2 * layers and fused["skip_norm"] == 2 * layers, fused
            assert "attention" not in fused and fused.get("matmul_bias", 0) == (0 if quant == "none" else layers)
            assert art["meta"]["rotary_positions"] == manifest["context"]["length"]
            first = next(v for k, v in art["files"].items() if k.startswith("model"))
            ops = [n.op_type for n in onnx.load(root / first, load_external_data=False).graph.node]
            assert ops.count("RotaryEmbedding") == fused["rotary"] and "GroupQueryAttention" not in ops
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


def test_matmul_bias_fused_into_matmulnbits():
    """``Add(MatMulNBits(x), b)`` -> MatMulNBits with its bias input, same output; a bias that is
    not constant stays an Add."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from memlora.backends.onnx.fusions import fuse_matmul_bias

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"]),
             helper.make_node("MatMul", ["x", "w"], ["m2"]), helper.make_node("Add", ["m2", "z"], ["y2"])]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("x", [1, 3, 64]), ("z", [1, 3, 32]))]
    graph = helper.make_graph(nodes, "g", io, [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 32]) for n in ("y", "y2")], inits)
    q = MatMulNBitsQuantizer(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), bits=4, block_size=32,
                             is_symmetric=True, accuracy_level=4)
    q.process()
    model = q.model.model
    feeds = {"x": rng.standard_normal((1, 3, 64)).astype(np.float32), "z": rng.standard_normal((1, 3, 32)).astype(np.float32)}
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)  # noqa: E731
    before = run(model)
    assert fuse_matmul_bias(model) == 1
    assert [n.op_type for n in model.graph.node].count("Add") == 1
    after = run(model)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(after[1], before[1])
