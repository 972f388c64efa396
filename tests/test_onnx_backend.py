"""ONNX backend end to end: export, parity with negative control, adapter switching, quantization."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import artifact

from memlora.backends import get_backend
from memlora.backends.base import Artifact
from memlora.core.bundle import verify_files

ADAPTERS = ["extract", "update", "answer"]


@pytest.mark.parametrize("mode", ["external", "fused"])
def test_fp32_parity_per_adapter(onnx_fp32_bundle, mode):
    _, manifest = onnx_fp32_bundle
    par = artifact(manifest, "onnx", mode)["parity"]
    assert par["passed"], par
    assert [r["adapter"] for r in par["adapters"]] == ADAPTERS
    for row in par["adapters"]:
        assert row["max_abs_diff"] <= 1e-4
        assert row["top1_agreement"] == 1.0 and row["first_divergence"] is None
        assert row["tokens_compared"] >= 2 * 32  # two prompts, 32 greedy tokens each
        # The negative control: another adapter moves logits by far more than the tolerance.
        assert row["negative_control"]["max_abs_diff"] >= 100 * 1e-4


def test_external_layout_and_hashes(onnx_fp32_bundle):
    root, manifest = onnx_fp32_bundle
    ext = artifact(manifest, "onnx", "external")
    assert set(ext["files"]) == {"model", *(f"adapter:{a}" for a in ADAPTERS)}
    assert all(p.endswith(".onnx_adapter") for r, p in ext["files"].items() if r.startswith("adapter:"))
    fused = artifact(manifest, "onnx", "fused")
    assert set(fused["files"]) == {f"model:{a}" for a in ADAPTERS}
    assert verify_files(root, manifest) == []
    sizes = {f["path"]: f["bytes"] for f in manifest["files"]}
    base = sizes[ext["files"]["model"]]
    adapters = sum(sizes[ext["files"][f"adapter:{a}"]] for a in ADAPTERS)
    fused_total = sum(sizes[fused["files"][f"model:{a}"]] for a in ADAPTERS)
    # Sharing the base is the point: base + 3 adapters well under 3 fused models.
    assert base + adapters < 0.6 * fused_total


def test_tampered_file_detected(onnx_fp32_bundle, tmp_path):
    import shutil

    root, manifest = onnx_fp32_bundle
    copy = tmp_path / "b"
    shutil.copytree(root, copy)
    target = copy / artifact(manifest, "onnx", "external")["files"]["adapter:update"]
    data = bytearray(target.read_bytes())
    data[-5] ^= 0xFF
    target.write_bytes(bytes(data))
    [failure] = verify_files(copy, manifest)
    assert failure.startswith(f"{target.relative_to(copy).as_posix()}: sha256 mismatch") and "fix:" in failure


@pytest.mark.parametrize("mode", ["external", "fused"])
@pytest.mark.parametrize("quant,min_top1", [("int8", 0.9), ("int4", 0.7)])
def test_quantized_token_level(onnx_quant_bundle, mode, quant, min_top1):
    root, manifest = onnx_quant_bundle
    a = artifact(manifest, "onnx", mode, quant)
    par = a["parity"]
    assert par["passed"], par
    assert par["level"] == quant
    for row in par["adapters"]:
        assert row["top1_agreement"] >= min_top1
        assert 0 < row["kl_mean"] <= par["tolerance"]["max_kl"]  # lossy, but bounded
        assert row["negative_control"]["max_abs_diff"] > row["max_abs_diff"]
    ops = a["meta"]["ops"]
    assert ops.get("MatMulNBits", 0) > 0, ops  # weights really are quantized


def test_quantized_files_smaller(onnx_fp32_bundle, onnx_quant_bundle):
    _, m32 = onnx_fp32_bundle
    _, mq = onnx_quant_bundle
    size = lambda m, a: sum(f["bytes"] for f in m["files"] if f["path"] == a["files"]["model"])  # noqa: E731
    b32 = size(m32, artifact(m32, "onnx", "external"))
    b8 = size(mq, artifact(mq, "onnx", "external", "int8"))
    b4 = size(mq, artifact(mq, "onnx", "external", "int4"))
    assert b4 < b8 < b32


def test_int4_base_loads_adapter_of_other_rank(onnx_quant_bundle):
    """LoRA matmuls stay float with an int4 base, so adapters of ranks 4, 8 and 16 all load."""
    root, manifest = onnx_quant_bundle
    runner = get_backend("onnx").load(Artifact.from_json(artifact(manifest, "onnx", "external", "int4")), root)
    outs = {}
    for name in ADAPTERS:
        runner.set_adapter(name)
        outs[name] = runner.prefill([3, 4, 5])
    assert np.abs(outs["extract"] - outs["update"]).max() > 0.1
    assert np.abs(outs["update"] - outs["answer"]).max() > 0.1


@pytest.mark.parametrize("quant", ["none", "int8", "int4"])
def test_lora_inputs_matmul_ready(onnx_fp32_bundle, onnx_quant_bundle, quant):
    """The adapter tensors arrive as A^T [in, r] and B^T [r, out] and feed float MatMuls directly:
    no Transpose on a LoRA input (it would run on every step: onnxruntime cannot fold it into an
    input an adapter overrides), none quantized away by the weight quantizer, and the adapter
    file's shapes match the graph's inputs (a layout mismatch fails here, not on a phone)."""
    import onnx
    import onnxruntime as ort

    root, manifest = onnx_fp32_bundle if quant == "none" else onnx_quant_bundle
    files = artifact(manifest, "onnx", "external", quant)["files"]
    graph = onnx.load(str(root / files["model"]), load_external_data=False).graph
    lora = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]
            for i in graph.input if i.name.startswith("lora.")}
    assert lora, "no LoRA inputs in the external graph"
    users = [n for n in graph.node if set(n.input) & set(lora)]
    assert {n.op_type for n in users} == {"MatMul"}
    assert sum(i in lora for n in users for i in n.input) == len(lora)  # every input still used
    params = ort.AdapterFormat.read_adapter(str(root / files["adapter:extract"])).get_parameters()
    assert set(params) == set(lora)
    # q/k/v and gate/up packed: one weight matmul and one LoRA pair a group, a Split after each
    layers = sum(n.startswith("past.") and n.endswith(".key") for n in (i.name for i in graph.input))
    assert sum(name.endswith("q_proj+k_proj+v_proj.A") for name in lora) == layers
    assert sum(name.endswith("gate_proj+up_proj.A") for name in lora) == layers
    assert sum(n.op_type == "Split" for n in graph.node) >= 2 * layers
    for name, value in params.items():
        shape, dims = value.shape(), lora[name]
        fixed = 0 if name.endswith(".A") else 1  # A^T: [in, r]; B^T: [r, out]
        assert shape[fixed] == dims[fixed] and isinstance(dims[1 - fixed], str), (name, shape, dims)


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen3", "tiny-gemma2", "tiny-gemma3"])
def test_other_families_external_parity(preset, preset_dir, tmp_path):
    from memlora.export import ExportOptions, run_export

    model_dir, adapters = preset_dir(preset)
    manifest = run_export(ExportOptions(out=tmp_path / "b", model=str(model_dir), adapters=adapters,
                                        parity_tokens=16), show_progress=False)
    par = manifest["artifacts"][0]["parity"]
    assert par["passed"], par
    assert max(r["max_abs_diff"] for r in par["adapters"]) <= 1e-4
    assert manifest["model"]["family"] == preset.replace("tiny-", "").replace("gemma3", "gemma3_text")
    # Every family's rotary is one RotaryEmbedding per query and key (Gemma 3's local and global
    # rotaries each get their own tables), and every residual Add joins the norm after it.
    fused = manifest["artifacts"][0]["meta"]["fused_ops"]
    assert fused["rotary"] == 2 * manifest["model"]["num_layers"] and fused["skip_norm"] > 0, fused


def test_tied_head_untied_and_quantized_all_the_way():
    """A tied LM head (MatMul over Transpose(table)) gets its own weight, so MatMulNBits takes the
    head and, with quantize_table, GatherBlockQuantized takes the table; outputs stay close."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from memlora.backends.onnx.quantize import HEAD8_BLOCK, quantize_model, untie_transposed_weights
    from memlora.core.config import ExportSpec, OnnxConfig

    rng = np.random.default_rng(0)
    table = rng.standard_normal((256, 64)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["h"]),
             helper.make_node("Transpose", ["table"], ["table_t"], perm=[1, 0]),
             helper.make_node("MatMul", ["h", "table_t"], ["logits"], name="head")]
    graph = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 256])],
                              [numpy_helper.from_array(table, "table")])
    make = lambda: helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])  # noqa: E731
    ids = np.array([[1, 7, 42, 255]], np.int64)
    run = lambda m: ort.InferenceSession(m.SerializeToString()).run(None, {"ids": ids})[0]  # noqa: E731
    ref = run(make())

    untied = make()
    assert untie_transposed_weights(untied) == ["head"]
    assert "Transpose" not in [n.op_type for n in untied.graph.node]
    np.testing.assert_allclose(run(untied), ref, atol=1e-4)

    for table_too, ops in [(False, {"Gather", "MatMulNBits"}), (True, {"GatherBlockQuantized", "MatMulNBits"})]:
        spec = ExportSpec("onnx", "external", "int4", onnx=OnnxConfig(quantize_table=table_too))
        q = quantize_model(make(), spec)
        onnx.checker.check_model(q)
        assert {n.op_type for n in q.graph.node} == ops
        out = run(q)
        assert np.abs(out - ref).max() < 0.1 * np.abs(ref).max()
        assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.75
    for bits, block in ((8, HEAD8_BLOCK), (4, 32)):  # --onnx-head-bits; an 8-bit head in larger blocks
        q = quantize_model(make(), ExportSpec("onnx", "external", "int4", onnx=OnnxConfig(head_bits=bits)))
        [head] = [n for n in q.graph.node if n.op_type == "MatMulNBits"]
        attrs = {a.name: a.i for a in head.attribute}
        assert (attrs["bits"], attrs["block_size"]) == (bits, block)
