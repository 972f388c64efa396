"""The ONNX decoder's rewrites for onnxruntime's decode step: grouped attention without repeat_kv,
RMSNorm as one SimplifiedLayerNormalization, and the int4 LM head's bits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import artifact

from memlora.core.errors import MemloraError

FAMILIES = ["tiny-qwen2", "tiny-llama", "tiny-qwen3", "tiny-gemma2", "tiny-gemma3"]


def _model(preset_dir, name):
    from transformers import AutoModelForCausalLM

    model_dir, _ = preset_dir(name)
    return AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()


@pytest.mark.parametrize("name", FAMILIES)
def test_grouped_attention_equals_eager(preset_dir, name, monkeypatch):
    """Same logits as eager (with a KV cache and a mask), eager restored after the block; the
    negative control pairs query heads with the wrong kv head and must differ."""
    from transformers import DynamicCache

    import memlora.tasks.grouped_attention as ga

    model = _model(preset_dir, name)
    assert model.config.num_attention_heads > model.config.num_key_value_heads  # grouped for real
    ids = torch.randint(0, model.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(1))

    def run():
        cache = DynamicCache()
        first = model(ids[:, :16], past_key_values=cache, use_cache=True).logits
        return torch.cat([first, model(ids[:, 16:], past_key_values=cache, use_cache=True).logits], 1)

    with torch.no_grad():
        ref = run()
        with ga.grouped_attention_for(model):
            assert model.config._attn_implementation == ga.NAME
            out = run()
        assert model.config._attn_implementation == "eager"
        assert float((out - ref).abs().max()) <= 1e-5

        original = ga.grouped_attention

        def wrong(module, query, key, value, *a, **k):  # kv heads swapped: the check can fail
            return original(module, query, key.flip(1), value.flip(1), *a, **k)

        monkeypatch.setattr(ga, "grouped_attention", wrong)
        with ga.grouped_attention_for(model):
            bad = run()
        monkeypatch.undo()
        ga.register()
    assert float((bad - ref).abs().max()) > 1e-2


def test_exported_graph_reads_the_cache_without_copies(onnx_fp32_bundle):
    """No Expand in the graph touches a present key/value (repeat_kv is gone), every RMSNorm is one
    (Skip)SimplifiedLayerNormalization (2 layers x 2 + final = 5 for tiny-qwen2); the fp32 parity tests
    hold these graphs to 1e-4 of PyTorch."""
    import onnx

    root, manifest = onnx_fp32_bundle
    model = onnx.load(root / artifact(manifest, "onnx", "external")["files"]["model"], load_external_data=False)
    producer = {o: n for n in model.graph.node for o in n.output}

    def upstream(name, depth=4):
        node = producer.get(name)
        if node is None or depth == 0:
            return {name}
        return {name}.union(*(upstream(i, depth - 1) for i in node.input))

    for node in model.graph.node:
        if node.op_type == "Expand":
            assert not any(n.startswith("present.") for n in upstream(node.input[0])), node.name
    ops = [n.op_type for n in model.graph.node]
    # the first one alone, the other four joined with the residual Add before them
    assert ops.count("SimplifiedLayerNormalization") == 1 and ops.count("SkipSimplifiedLayerNormalization") == 4
    assert "Pow" not in ops and "Reciprocal" not in ops


def _rms_graph(exponent=2.0, extra_consumer=False):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(exponent, np.float32), "two"),
             numpy_helper.from_array(np.array([-1], np.int64), "axes"),
             numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "w")]
    nodes = [helper.make_node("Pow", ["x", "two"], ["p"]),
             helper.make_node("ReduceMean", ["p", "axes"], ["m"], keepdims=1),
             helper.make_node("Add", ["m", "eps"], ["a"]),
             helper.make_node("Sqrt", ["a"], ["s"]),
             helper.make_node("Reciprocal", ["s"], ["r"]),
             helper.make_node("Mul", ["x", "r"], ["n"]),
             helper.make_node("Mul", ["w", "n"], ["y"], name="final")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16])]
    if extra_consumer:  # the statistics are used elsewhere: fusing would drop them
        outputs.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 3, 1]))
    graph = helper.make_graph(nodes, "rms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_rms_norm_fused_to_one_op_with_the_same_output():
    import onnxruntime as ort

    from memlora.backends.onnx.fusions import fuse_rms_norms

    x = np.random.default_rng(1).standard_normal((1, 3, 16)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString()).run(["y"], {"x": x})[0]  # noqa: E731
    ref = run(_rms_graph())
    model = _rms_graph()
    assert fuse_rms_norms(model) == 1
    assert [n.op_type for n in model.graph.node] == ["SimplifiedLayerNormalization"]
    np.testing.assert_allclose(run(model), ref, rtol=1e-5, atol=1e-6)
    # Not an RMSNorm (x^3), or a statistic read elsewhere: left alone.
    for other in (_rms_graph(exponent=3.0), _rms_graph(extra_consumer=True)):
        assert fuse_rms_norms(other) == 0 and len(other.graph.node) == 7


def test_head_bits_refused_unless_4_or_8():
    """(The bits a head gets are checked in test_onnx_backend's tied-head test.)"""
    from memlora.core.config import OnnxConfig

    with pytest.raises(MemloraError, match="head-bits"):
        OnnxConfig(head_bits=5)


def test_quant_meta_names_non_default_variants():
    """The manifest records the head's and table's bits; only non-default ones get a variant label
    (bench rows name such an artifact onnx/external/int4+head4+table4, so both fit one table)."""
    from memlora.backends.onnx.quantize import quant_meta
    from memlora.core.config import ExportSpec, OnnxConfig

    assert quant_meta(ExportSpec("onnx", "external", "none")) == {}
    assert quant_meta(ExportSpec("onnx", "external", "int8", onnx=OnnxConfig(head_bits=4))) == \
        dict(head_bits=8, head_block=128, table_bits=None)  # int8 keeps an 8-bit head whatever --onnx-head-bits says
    assert quant_meta(ExportSpec("onnx", "external", "int4")) == dict(head_bits=8, head_block=128, table_bits=None)
    spec = ExportSpec("onnx", "external", "int4", onnx=OnnxConfig(quantize_table=True, head_bits=4))
    assert quant_meta(spec) == dict(head_bits=4, head_block=32, table_bits=4, variant="head4+table4")


def test_variant_has_its_own_folder():
    """Two int4 variants of one backend/mode do not share a folder (nor, merged, a file path)."""
    from memlora.backends import get_backend
    from memlora.core.config import ExportSpec, OnnxConfig

    onnx = get_backend("onnx")
    assert onnx.folder_variant(ExportSpec("onnx", "external", "int4")) == ""
    spec = ExportSpec("onnx", "external", "int4", onnx=OnnxConfig(quantize_table=True, head_bits=4))
    assert onnx.folder_variant(spec) == "-head4-table4"
    assert get_backend("executorch").folder_variant(ExportSpec("executorch", "external", "int4")) == ""


def _random_adapter(model, modules, rank, seed):
    from memlora.sources.adapters import LoraAdapter, LoraWeights

    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for m in modules:
        lin = model.get_submodule(m)
        weights[m] = LoraWeights(torch.randn(rank, lin.in_features, generator=gen) * 0.1,
                                 torch.randn(lin.out_features, rank, generator=gen) * 0.1, 2.0)
    return LoraAdapter("a", Path("."), rank, 2 * rank, sorted({m.rpartition(".")[2] for m in modules}), weights)


@pytest.mark.parametrize("name", FAMILIES)
def test_packed_projections_equal_unpacked(preset_dir, name):
    """q/k/v and gate/up packed, with LoRA per unit (block-diagonal B; k left out of the adapter,
    so its block has rank 0): the same logits and cache as one LoraLinear per module, the model
    restored afterwards; the negative control (the k and v column blocks swapped) must differ."""
    from memlora.tasks.decoder import DynamicKVDecoder
    from memlora.tasks.lora import lora_inputs, remove_lora
    from memlora.tasks.packed import lora_units, packable, packed, unit_tensors

    model = _model(preset_dir, name)
    layers = model.config.num_hidden_layers
    modules = [f"model.layers.{i}.{m}" for i in range(layers)
               for m in ("self_attn.q_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj")]
    adapter = _random_adapter(model, modules, 4, seed=3)
    groups = packable(model)
    assert len(groups) == 2 * layers
    units = lora_units(model, sorted(modules), groups)
    assert [len(u.members) for u in units].count(3) == layers and len(units) == 3 * layers  # qkv, gate+up, o
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(0, model.config.vocab_size, (1, 6), generator=gen)
    pos = torch.arange(2, 8)[None]
    shape = (1, model.config.num_key_value_heads, 2, model.config.head_dim if getattr(model.config, "head_dim", None)
             else model.config.hidden_size // model.config.num_attention_heads)
    past = [(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)) for _ in range(layers)]

    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        plain = DynamicKVDecoder(model, sorted(modules))
        ref, ref_kv = plain(ids, pos, past, [lora_inputs(adapter.weights[m]) for m in sorted(modules)])
        remove_lora(model)
        tensors = [unit_tensors(u, adapter) for u in units]
        with packed(model, groups) as packs:
            wrapper = DynamicKVDecoder(model, [u.name for u in units], packs)
            out, kv = wrapper(ids, pos, past, tensors)
            qkv = next(i for i, u in enumerate(units) if len(u.members) == 3)
            a_t, b_t = tensors[qkv]
            q, k, v = units[qkv].outs
            swapped = torch.cat([b_t[:, :q], b_t[:, q + k:], b_t[:, q:q + k]], 1)  # k and v blocks swapped
            bad, _ = wrapper(ids, pos, past, tensors[:qkv] + [(a_t, swapped)] + tensors[qkv + 1:])
        remove_lora(model)
    assert all(type(model.get_submodule(m)) is torch.nn.Linear for g in groups for m in g)  # restored
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert float((out - ref).abs().max()) <= 1e-5
    assert max(float((a - b).abs().max()) for p, r in zip(kv, ref_kv) for a, b in zip(p, r)) <= 1e-5
    assert float((bad - ref).abs().max()) > 1e-3
