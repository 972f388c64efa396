"""Core ML backend, checked without a Mac: convert, inspect the saved MIL graph, run it with the
NumPy MIL evaluator (memlora.backends.coreml.mil), compare with PyTorch + PEFT through check_parity.

Every export here is session-scoped and small (tiny presets, max_seq_len 64, 16 greedy tokens)
so the whole file stays within a few minutes on two cores.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from memlora.backends import get_backend  # noqa: E402
from memlora.backends.coreml import numerics_kind  # noqa: E402
from memlora.backends.coreml.export import check_target  # noqa: E402
from memlora.core.config import ExportSpec  # noqa: E402
from memlora.core.errors import MemloraError  # noqa: E402
from memlora.parity import check_parity  # noqa: E402

from coreml_fixtures import ADAPTERS, SEQ, TOKENS  # noqa: E402,F401  (coreml_export, reference: conftest)


def _prompts(preset_dir, preset: str):
    from memlora.export import prompt_ids

    model_dir, _ = preset_dir(preset)
    return prompt_ids(Path(model_dir) / "tokenizer.json")


def _parity(coreml_export, reference, preset_dir, preset, **kw):
    root, art = coreml_export(preset, **kw)
    runner = get_backend("coreml").load(art, root)
    try:
        return art, check_parity(runner, reference(preset), _prompts(preset_dir, preset), backend="coreml",
                                 quant=art.quant, precision=art.meta["precision"], n_tokens=TOKENS)
    finally:
        runner.close()


# --- external mode: one multifunction package -----------------------------------------------------

def test_external_fp32_parity_every_adapter(coreml_export, reference, preset_dir):
    """export -> save -> load the saved MIL back -> run in NumPy -> compare: fp32 within 1e-4."""
    art, par = _parity(coreml_export, reference, preset_dir, "tiny-qwen2")
    assert par["passed"], par
    assert [r["adapter"] for r in par["adapters"]] == ADAPTERS
    for row in par["adapters"]:
        assert row["max_abs_diff"] <= 1e-4 and row["top1_agreement"] == 1.0
        # Negative control: the reference under another adapter is far from this export.
        assert row["negative_control"]["max_abs_diff"] >= 100 * 1e-4
    assert art.meta["numerics"] == numerics_kind() == "mil-numpy"  # Linux CI; Darwin predicts


def test_multifunction_package_shares_the_base(coreml_export):
    from memlora.backends.coreml.mil import load_program

    root, art = coreml_export("tiny-qwen2")
    assert set(art.files) == {"model"} and art.files["model"].endswith("external-none-fp32/memlora.mlpackage")
    program = load_program(root / art.files["model"])
    assert set(program.functions) == {"base", *ADAPTERS}
    meta = art.meta
    # Base weights are stored once: the blob grows by the LoRA weights only.
    assert meta["weight_bytes"] < 1.15 * meta["single_weight_bytes"]["extract"]
    assert meta["package_bytes"] < 0.5 * sum(meta["single_package_bytes"].values())
    # The same base parameters, bit for bit, in every function; LoRA consts differ per adapter.
    digests = {}
    for name, fn in program.functions.items():
        consts = {op.name: op.outputs[0].val for op in fn.operations if op.op_type == "const"}
        digests[name] = hashlib.sha256(b"".join(np.ascontiguousarray(v).tobytes() for k, v in sorted(consts.items())
                                                if k.startswith("p_"))).hexdigest()
    assert len(set(digests.values())) == 1


def test_graph_keeps_cache_in_state_and_lora_unfused(coreml_export):
    from memlora.backends.coreml.mil import MilFunction, load_program

    root, art = coreml_export("tiny-qwen2")
    program = load_program(root / art.files["model"])
    ops = {name: [op.op_type for op in fn.operations] for name, fn in program.functions.items()}
    for name in ("base", *ADAPTERS):
        assert ops[name].count("coreml_update_state") >= 2 and "read_state" in ops[name]
    # LoRA as two extra linears per adapted module: extract targets all 7 layers' linears x 2 layers.
    assert ops["extract"].count("linear") == ops["base"].count("linear") + 2 * 7 * 2
    fn = MilFunction(program, "extract")
    # fp32 export: float16 state (the only kind Core ML has) split hi/lo for fp32 checking.
    assert set(fn.states) == {"key_cache", "value_cache", "key_cache_lo", "value_cache_lo"}
    assert all(dtype == np.float16 for _, dtype in fn.states.values())


# --- every family, fp16 (the device default) -----------------------------------------------------

@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen3", "tiny-gemma2", "tiny-gemma3"])
def test_every_family_converts_fp16(coreml_export, reference, preset_dir, preset):
    """One fused adapter per family (one conversion each); negative control against the bare base.
    The fifth family, tiny-qwen2, is converted at fp32 above and at fp16 in the compression tests."""
    art, par = _parity(coreml_export, reference, preset_dir, preset, mode="fused", precision="fp16",
                       adapters=("answer",))
    assert par["passed"], par
    row = par["adapters"][0]
    assert row["top1_agreement"] >= 0.95 and row["negative_control"]["against"] == "base"
    # Norm statistics stay fp32 inside the fp16 program.
    assert art.meta["ops"]["rsqrt"] >= 1


# --- compression -----------------------------------------------------------------------------------

# int4 on a 64-wide random model moves logits by about as much as swapping to the bare base,
# so its negative control is another adapter (two conversions); int8 needs only one.
@pytest.mark.parametrize("quant,adapters", [("int8", ("extract",)), ("int4", ("extract", "update"))])
def test_compressed_parity(coreml_export, reference, preset_dir, quant, adapters):
    from memlora.backends.coreml.mil import load_program

    art, par = _parity(coreml_export, reference, preset_dir, "tiny-qwen2", mode="fused", quant=quant,
                       precision="fp16", adapters=adapters)
    assert par["passed"], par
    root, _ = coreml_export("tiny-qwen2", mode="fused", quant=quant, precision="fp16", adapters=adapters)
    fn = load_program(root / art.files["model:extract"]).functions["main"]
    blockwise = [op for op in fn.operations if op.op_type == "constexpr_blockwise_shift_scale"]
    assert len(blockwise) == 15  # 14 base linears and the (tied) embedding, nothing else
    data, scale = blockwise[0].inputs["data"], blockwise[0].inputs["scale"]
    if quant == "int4":
        assert data.val.min() >= -8 and data.val.max() <= 7
        assert scale.shape[1] == data.shape[1] // 32  # block = group_size along the input axis
    else:
        assert scale.shape[1] == 1  # per output channel


# --- refusals and the evaluator's own errors ------------------------------------------------------

def test_ios17_target_refused():
    with pytest.raises(MemloraError, match="iOS17 has no Core ML state"):
        check_target("iOS17")
    with pytest.raises(MemloraError, match="unknown Core ML deployment target"):
        check_target("iOS99")
    check_target("iOS18")


def test_unknown_op_named_clearly():
    from coremltools.converters.mil import Builder as mb

    from memlora.backends.coreml.mil import MilFunction

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 4))])
    def prog(x):
        return mb.topk(x=mb.relu(x=x), k=2)[0]

    with pytest.raises(MemloraError, match=r"not known to memlora's NumPy evaluator: topk"):
        MilFunction(prog, "main")


def test_evaluator_state_semantics():
    """read_state / coreml_update_state: an accumulator, the docs' stateful example."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    from memlora.backends.coreml.mil import MilFunction

    @mb.program(input_specs=[mb.TensorSpec((3,), dtype=types.fp16), mb.StateTensorSpec((3,), dtype=types.fp16)],
                opset_version=ct.target.iOS18)
    def prog(x, acc):
        total = mb.add(x=mb.read_state(input=acc), y=x)
        mb.coreml_update_state(state=acc, value=total)
        return mb.mul(x=total, y=total)

    fn = MilFunction(prog, "main")
    state = fn.new_state()
    (name,) = fn.outputs
    fn.run({"x": np.array([1, 2, 3])}, state)
    out = fn.run({"x": np.array([1, 1, 1])}, state)[name]
    np.testing.assert_array_equal(next(iter(state.values())), [2, 3, 4])
    np.testing.assert_array_equal(out, [4, 9, 16])


# --- the CLI ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_multifunction_package_within_115_percent_at_small_size(tmp_path, monkeypatch):
    """The whole multifunction package against one single-adapter package, on a model where the
    weights (not each function's ~110 KB of graph text) dominate, as they do for any real model.
    The fast test (weights only) covers the same path on the tiny preset; measured here: 1.035x."""
    from memlora.sources import presets
    from memlora.core.config import BackendName, Precision
    from memlora.export import ExportOptions, run_export

    monkeypatch.setitem(presets.PRESETS, "small-qwen2", presets.Preset(
        "small-qwen2", "qwen2", dict(vocab_size=1024, hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
                                     num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048,
                                     tie_word_embeddings=True), seed=21))
    manifest = run_export(ExportOptions(out=tmp_path / "b", model="small-qwen2", backends=[BackendName.COREML],
                                        precision=Precision.FP16, check_parity=False), show_progress=False)
    meta = manifest["artifacts"][0]["meta"]
    single = max(v for k, v in meta["single_package_bytes"].items() if k != "base")
    assert set(meta["functions"]) == {"base", "extract", "update", "answer"}
    assert meta["package_bytes"] <= 1.15 * single
    assert meta["package_bytes"] < 0.4 * sum(meta["single_package_bytes"].values())


# --- tanh-GELU (Gemma, SigLIP) ---------------------------------------------------------------------

def test_tanh_gelu_is_written_out_because_coremltools_makes_it_exact(tmp_path):
    """coremltools converts ``gelu(approximate="tanh")`` to MIL gelu mode EXACT (the negative control
    here); written out for the conversion it matches torch, and the original module comes back."""
    import torch

    from memlora.backends.coreml.mil import MilFunction, load_program
    from memlora.tasks.delegable import TanhGELU, tanh_gelu_written_out

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.GELU(approximate="tanh")).eval()
    x = torch.randn(1, 4, 16) * 4

    def convert(name: str) -> float:
        with torch.no_grad():
            ep = torch.export.export(net, (x,)).run_decompositions({})
        model = ct.convert(ep, inputs=[ct.TensorType("x", shape=(1, 4, 16), dtype=np.float32)],
                           outputs=[ct.TensorType("y", dtype=np.float32)], minimum_deployment_target=ct.target.iOS18,
                           compute_precision=ct.precision.FLOAT32, convert_to="mlprogram", skip_model_load=True)
        model.save(str(tmp_path / name))
        got = MilFunction(load_program(tmp_path / name), "main").run({"x": x.numpy()})["y"]
        return float(np.abs(got - net(x).detach().numpy()).max())

    assert convert("as-is.mlpackage") > 1e-4
    with tanh_gelu_written_out(net) as n:
        assert n == 1 and isinstance(net[1], TanhGELU)
        assert convert("written-out.mlpackage") <= 1e-5
    assert isinstance(net[1], torch.nn.GELU)
