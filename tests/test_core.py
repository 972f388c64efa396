"""Core pieces without a backend: presets, adapter reading/validation, fusing, config."""
from __future__ import annotations

import json

import pytest
import torch

from memlora.sources.adapters import fuse_state_dict, read_adapter
from memlora.core.config import ExportSpec
from memlora.core.errors import MemloraError
from memlora.sources.model_io import inspect_model_dir, linear_shapes, load_model
from memlora.tasks.lora import fused


def _peft_logits(model_dir, adapter_dir, ids):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        return PeftModel.from_pretrained(base, str(adapter_dir)).eval()(torch.tensor([ids])).logits


def test_preset_is_real_hf_folder_and_deterministic(preset_dir, tmp_path):
    from memlora.sources.presets import write_preset

    model_dir, adapters = preset_dir("tiny-llama")
    assert {p.name for p in model_dir.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert set(adapters) == {"extract", "update", "answer"}
    again, _ = write_preset("tiny-llama", tmp_path)
    assert (again / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()


def test_preset_adapters_are_nonzero(preset_dir):
    from safetensors.torch import load_file

    _, adapters = preset_dir("tiny-qwen2")
    for path in adapters.values():
        tensors = load_file(str(path / "adapter_model.safetensors"))
        assert tensors and all(t.abs().max() > 0 for t in tensors.values())


def test_read_adapter_matches_config(preset_dir):
    model_dir, adapters = preset_dir("tiny-qwen2")
    info = inspect_model_dir(model_dir)
    ad = read_adapter("update", adapters["update"], linear_shapes(info))
    assert ad.rank == 4 and ad.alpha == 8
    assert ad.targets == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert len(ad.weights) == 4 * info.config["num_hidden_layers"]
    assert all(w.scale == 2.0 for w in ad.weights.values())


@pytest.mark.parametrize("name", ["extract", "answer"])
def test_fuse_equals_peft(preset_dir, name):
    """Fused weights (pure function over the state dict) give PEFT's own logits."""
    model_dir, adapters = preset_dir("tiny-qwen2")
    info = inspect_model_dir(model_dir)
    ad = read_adapter(name, adapters[name], linear_shapes(info))
    model = load_model(info)
    ids = [4, 8, 15, 16, 23, 42]
    with torch.no_grad():
        base = model(torch.tensor([ids])).logits
        state = model.state_dict()
        model.load_state_dict(fuse_state_dict(state, ad))
        fused_logits = model(torch.tensor([ids])).logits
    peft_logits = _peft_logits(model_dir, adapters[name], ids)
    assert (fused_logits - peft_logits).abs().max() < 1e-5
    assert (fused_logits - base).abs().max() > 0.1  # the adapter does something


def test_fused_context_restores_exact_weights(preset_dir):
    model_dir, adapters = preset_dir("tiny-llama")
    info = inspect_model_dir(model_dir)
    ad = read_adapter("extract", adapters["extract"], linear_shapes(info))
    model = load_model(info)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with fused(model, ad):
        changed = sum(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert changed == len(ad.weights)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fuse_refuses_nonfinite(preset_dir):
    model_dir, adapters = preset_dir("tiny-qwen2")
    info = inspect_model_dir(model_dir)
    ad = read_adapter("update", adapters["update"], linear_shapes(info))
    next(iter(ad.weights.values())).scale = float("inf")
    with pytest.raises(MemloraError, match="NaN/Inf"):
        fuse_state_dict(load_model(info).state_dict(), ad)


def test_adapter_for_other_base_class(preset_dir):
    """tiny-llama and tiny-qwen2 have the same shapes; the recorded base class still tells them apart."""
    qwen_dir, _ = preset_dir("tiny-qwen2")
    _, llama_adapters = preset_dir("tiny-llama")
    info = inspect_model_dir(qwen_dir)
    with pytest.raises(MemloraError, match="trained on a LlamaForCausalLM"):
        read_adapter("extract", llama_adapters["extract"], linear_shapes(info), "Qwen2ForCausalLM")


def test_adapter_shape_mismatch(preset_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    model_dir, adapters = preset_dir("tiny-qwen2")
    bad = tmp_path / "bad"
    shutil.copytree(adapters["update"], bad)
    tensors = load_file(str(bad / "adapter_model.safetensors"))
    key = next(k for k in tensors if "lora_A" in k)
    tensors[key] = tensors[key][:, :32].contiguous()  # as if made for a 32-wide model
    save_file(tensors, str(bad / "adapter_model.safetensors"))
    with pytest.raises(MemloraError, match="shape mismatch.*another base model"):
        read_adapter("update", bad, linear_shapes(inspect_model_dir(model_dir)))


def test_adapter_unknown_module(preset_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    model_dir, adapters = preset_dir("tiny-qwen2")
    bad = tmp_path / "bad"
    shutil.copytree(adapters["update"], bad)
    tensors = load_file(str(bad / "adapter_model.safetensors"))
    tensors = {k.replace("layers.1.", "layers.7."): v for k, v in tensors.items()}
    save_file(tensors, str(bad / "adapter_model.safetensors"))
    with pytest.raises(MemloraError, match="layers.7.*does not have"):
        read_adapter("update", bad, linear_shapes(inspect_model_dir(model_dir)))


@pytest.mark.parametrize("field,value,match", [("use_dora", True, "unsupported adapter options: use_dora"),
                                               ("peft_type", "IA3", "not LORA"),
                                               ("r", 0, "must be positive")])
def test_adapter_config_refused(preset_dir, tmp_path, field, value, match):
    import shutil

    model_dir, adapters = preset_dir("tiny-qwen2")
    bad = tmp_path / "bad"
    shutil.copytree(adapters["update"], bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg[field] = value
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(MemloraError, match=match):
        read_adapter("update", bad, linear_shapes(inspect_model_dir(model_dir)))


def test_spec_validation():
    spec = ExportSpec("onnx", "fused", "int4")
    assert spec.quant.value == "int4" and spec.adapter_mode.value == "fused"
    with pytest.raises(MemloraError, match="unknown quant 'int3'"):
        ExportSpec("onnx", "fused", "int3")
    with pytest.raises(MemloraError, match="not an export target"):
        ExportSpec("pytorch")
    with pytest.raises(MemloraError, match="group size"):
        ExportSpec("onnx", group_size=20)


def test_family_registry():
    from memlora.core.families import FAMILIES, get_family

    assert set(FAMILIES) == {"llama", "qwen2", "qwen3", "gemma2", "gemma3_text"}
    # model_type "gemma3" is the Gemma-3 vision-language model (memlora.vision), not the text family
    with pytest.raises(MemloraError, match="'gemma3' is a vision-language model"):
        get_family("gemma3")
    with pytest.raises(MemloraError, match="'gpt2' is not a supported family"):
        get_family("gpt2")


def test_artifact_keeps_keys_of_a_newer_memlora():
    """An older memlora must read a newer manifest's artifact and write its unknown keys back."""
    from memlora.core.artifact import Artifact
    from memlora.core.manifest import Manifest

    row = Artifact("onnx", "external", "none", ["extract"], {"model": "onnx/base.onnx"}).to_json()
    newer = {**row, "weight_cache": {"kind": "xnnpack"}, "future_flag": True}
    art = Artifact.from_json(newer)
    assert art.extra == {"weight_cache": {"kind": "xnnpack"}, "future_flag": True}
    assert art.to_json() == newer
    doc = {"model": {"family": "qwen2"}, "artifacts": [newer], "later_section": [1, 2]}
    assert Manifest.from_json(doc).to_json()["artifacts"] == [newer]
    # A known key is never shadowed by an unknown one of the same name.
    assert Artifact.from_json(row).extra == {}
