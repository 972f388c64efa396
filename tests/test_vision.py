"""MemLoRA-V: SVLM families, presets, preprocessing, tasks against HF, bad input, and export chains.

Fast tests build the tiny seeded presets (a second each) and compare memlora's wrappers with HF
itself; the export chains (ONNX, ExecuTorch + the stock MultimodalRunner) are marked slow.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

VISION_PRESETS = ("tiny-smolvlm", "tiny-internvl", "tiny-gemma3-vl")


@pytest.fixture(scope="session")
def vlm_preset(tmp_path_factory):
    """Factory: ``vlm_preset(name) -> (root, model_dir, {adapter: dir})``, written once per session."""
    from memlora.vision.presets import write_vision_preset

    cache: dict = {}

    def make(name: str):
        if name not in cache:
            root = tmp_path_factory.mktemp(name)
            model_dir, adapters = write_vision_preset(name, root)
            cache[name] = (root, model_dir, adapters)
        return cache[name]

    return make


@pytest.fixture(scope="session")
def vlm_task(vlm_preset):
    from memlora.vision.model_io import build_vision_task, inspect_vlm_dir, read_vision_adapters

    cache: dict = {}

    def make(name: str):
        if name not in cache:
            root, model_dir, adapters = vlm_preset(name)
            info = inspect_vlm_dir(model_dir)
            cache[name] = (build_vision_task(info, read_vision_adapters(info, adapters)), adapters)
        return cache[name]

    return make


# --- registry -----------------------------------------------------------------------------------

def test_families_by_model_type_and_gemma3_is_not_text():
    from memlora.core.errors import MemloraError
    from memlora.core.families import get_family
    from memlora.vision.families import get_vision_family, is_vision

    for mt in ("smolvlm", "smolvlm2", "idefics3", "internvl", "gemma3"):
        assert is_vision(mt)
    assert get_vision_family("gemma3").bidirectional_image
    assert get_vision_family("gemma3").text_model_type == "gemma3_text"
    assert get_family("gemma3_text").model_type == "gemma3_text"
    with pytest.raises(MemloraError, match="vision-language model"):
        get_family("gemma3")  # the old alias sent a Gemma-3-4B folder down the text path


@pytest.mark.parametrize("name", VISION_PRESETS)
def test_preset_writes_folder_with_processor_and_four_lm_adapters(vlm_preset, name):
    from safetensors import safe_open

    from memlora.vision.families import VISION_FAMILIES

    root, model_dir, adapters = vlm_preset(name)
    cfg = json.loads((model_dir / "config.json").read_text())
    fam = VISION_FAMILIES[cfg["model_type"]]
    assert (model_dir / "preprocessor_config.json").is_file()
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    specials = {t["content"] for t in tok["added_tokens"]}
    assert fam.image_token in specials
    assert list(adapters) == ["extract", "update", "answer", "vqa"]
    for path in adapters.values():
        with safe_open(str(path / "adapter_model.safetensors"), "pt") as f:
            keys = list(f.keys())
            assert keys and all(fam.language_model + "." in k for k in keys)
            assert any(float(f.get_tensor(k).abs().max()) > 0 for k in keys if "lora_B" in k)
    with safe_open(str(root / "bad_adapters/vision_tower/adapter_model.safetensors"), "pt") as f:
        assert any(any(v in k for v in fam.vision_modules) for k in f.keys())


# --- preprocessing and tasks against HF -----------------------------------------------------------

@pytest.mark.parametrize("name", VISION_PRESETS)
def test_numpy_preprocess_matches_hf_processor_and_wrapper_matches_get_image_features(vlm_task, name):
    import torch
    import transformers
    from PIL import Image

    from memlora.tasks.vision import VisionEncoder
    from memlora.vision.images import make_sample
    from memlora.vision.preprocess import normalise, pixels
    from memlora.vision.reference import VisionTorchRunner

    task, adapters = vlm_task(name)
    c = task.contract
    assert c.tokens_per_image == 16 and c.tile == 64
    s = make_sample(3, c.tile, "shape")
    proc = getattr(transformers, task.family.image_processor_class).from_pretrained(task.info.path)
    hf_pix = proc(images=[Image.fromarray(s.image)], return_tensors="np")["pixel_values"]
    mine = normalise(pixels(s.image, c), c)
    assert np.abs(hf_pix.reshape(mine.shape) - mine).max() <= 1e-6
    ref = VisionTorchRunner(task.info.path, {"vqa": adapters["vqa"]}, task.family, c)
    with torch.no_grad():
        wrapper = VisionEncoder(task)(torch.from_numpy(pixels(s.image, c)))[0].numpy()
    hf = ref.image_features(s.image)
    assert np.abs(wrapper - hf).max() <= 1e-6
    assert np.abs(hf).max() > 0.05  # a zero projector would pass trivially
    other = ref.image_features(make_sample(4, c.tile, "count").image)
    assert np.abs(other - hf).max() > 1e-2


def _image_prompt(vlm_task, name: str, seed: int, kind: str):
    """A one-image vqa prompt on preset ``name``: (task, contract, tokenizer, ids, the HF reference
    runner (vqa), its prompt logits, the merged embeddings [P, D] as NumPy)."""
    from tokenizers import Tokenizer

    from memlora.vision.images import make_sample
    from memlora.vision.parity import merge, torch_embed, torch_features
    from memlora.vision.preprocess import expand_prompt
    from memlora.vision.reference import VisionTorchRunner, image_trace

    task, adapters = vlm_task(name)
    c = task.contract
    tok = Tokenizer.from_file(str(task.info.tokenizer_file))
    s = make_sample(seed, c.tile, kind)
    ids = expand_prompt(tok.encode("Look:").ids, tok.encode(" " + s.question).ids, c)
    ref = VisionTorchRunner(task.info.path, {"vqa": adapters["vqa"]}, task.family, c)
    ref_logits, _ = image_trace(ref, "vqa", ids, s.image, 1)
    emb = merge(torch_embed(task, ids), ids, torch_features(task, s.image), c.image_token_id)
    return task, c, tok, ids, ref, ref_logits, emb


@pytest.mark.parametrize("name", VISION_PRESETS)
def test_embeddings_decoder_matches_hf_forward_and_gemma3_needs_its_mask(vlm_task, name):
    import torch

    from memlora.tasks.lora import fused
    from memlora.tasks.vision import EmbedsKVDecoder, additive_mask
    from memlora.vision.preprocess import image_blocks

    task, c, _, ids, ref, ref_logits, emb = _image_prompt(vlm_task, name, 5, "colour")
    ref.close()
    past = [(torch.zeros(1, task.kv_heads, 0, task.head_dim),) * 2 for _ in range(task.num_layers)]

    def run(blocks):
        mask = torch.from_numpy(additive_mask(range(len(ids)), len(ids), blocks))
        with torch.no_grad(), fused(task.model, task.adapters["vqa"]):
            return EmbedsKVDecoder(task, [])(torch.from_numpy(emb)[None], torch.arange(len(ids))[None], mask, past)[0][0].numpy()

    blocks = image_blocks(ids, c) if c.bidirectional_image else None
    assert np.abs(run(blocks) - ref_logits).max() <= 1e-4
    if c.bidirectional_image:  # negative control: a causal mask is wrong for Gemma3
        assert np.abs(run(None) - ref_logits).max() > 1e-2


def test_images_are_seeded_and_png_is_valid(tmp_path):
    from PIL import Image

    from memlora.vision.images import KINDS, make_samples, png_bytes

    a, b = make_samples(5, 64, seed=2), make_samples(5, 64, seed=2)
    assert [s.kind for s in a] == list(KINDS)
    assert all((x.image == y.image).all() and x.answer == y.answer for x, y in zip(a, b))
    assert all(len(s.answer.split()) == 1 for s in a)
    (tmp_path / "x.png").write_bytes(png_bytes(a[0].image))
    assert (np.asarray(Image.open(tmp_path / "x.png").convert("RGB")) == a[0].image).all()


# --- bad input --------------------------------------------------------------------------------------

def test_adapter_on_vision_tower_is_refused_with_the_fix(vlm_preset):
    from memlora.core.errors import MemloraError
    from memlora.vision.model_io import inspect_vlm_dir, read_vision_adapters

    root, model_dir, _ = vlm_preset("tiny-smolvlm")
    info = inspect_vlm_dir(model_dir)
    with pytest.raises(MemloraError) as e:
        read_vision_adapters(info, {"vqa": root / "bad_adapters" / "vision_tower"})
    line = e.value.one_line()
    assert "vision tower" in line and "fix: retrain with target_modules limited to the language model" in line
    assert "\n" not in line


def test_wrong_image_size_mode_dtype_are_refused(vlm_task):
    from memlora.core.errors import MemloraError
    from memlora.vision.preprocess import pixels

    task, _ = vlm_task("tiny-smolvlm")
    c = task.contract
    cases = {"resize to 64x64 with lanczos": np.zeros((32, 48, 3), np.uint8),
             "convert the image to RGB": np.zeros((64, 64, 4), np.uint8),
             "np.uint8": np.zeros((64, 64, 3), np.float32)}
    for fix, img in cases.items():
        with pytest.raises(MemloraError, match=fix):
            pixels(img, c)
    with pytest.raises(MemloraError, match="convert the image to RGB"):
        pixels(np.zeros((64, 64), np.uint8), c)


def test_vlm_folder_without_processor_config_fails_before_anything_is_written(vlm_preset, tmp_path):
    from memlora.core.errors import MemloraError
    from memlora.export import ExportOptions, run_export

    _, model_dir, adapters = vlm_preset("tiny-internvl")
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    (broken / "preprocessor_config.json").unlink()
    out = tmp_path / "bundle"
    with pytest.raises(MemloraError) as e:
        run_export(ExportOptions(out=out, model=str(broken), adapters=adapters), show_progress=False)
    assert "preprocessor_config.json" in e.value.one_line() and "AutoProcessor.save_pretrained" in e.value.one_line()
    assert not out.exists() and not any(p.name.startswith(".bundle") for p in tmp_path.iterdir())


def test_text_only_bundle_asked_for_an_image(tmp_path):
    from memlora.core.bundle import write_manifest
    from memlora.core.errors import MemloraError
    from memlora.vision.runtime import open_vision

    write_manifest(tmp_path, {"model": {"family": "qwen2"}, "artifacts": []})
    with pytest.raises(MemloraError, match="text-only model and cannot take an image -- fix: export a vision"):
        open_vision(tmp_path)


def test_gemma3_marker_column_makes_each_image_call_a_block_and_text_chunks_causal(vlm_task):
    """The ExecuTorch text_decoder as the stock runner calls it (text, the image alone, text), in
    torch: marked image rows match HF; unmarked (a length rule's view) they do not; and a text chunk
    exactly as long as an image stays causal (equal to HF's text-only forward)."""
    import torch

    from memlora.tasks.lora import fused
    from memlora.tasks.vision import static_embeds_decoder
    from memlora.vision.parity import torch_embed

    task, c, tok, ids, ref, ref_logits, emb = _image_prompt(vlm_task, "tiny-gemma3-vl", 5, "colour")
    emb = torch.from_numpy(emb)
    first = ids.index(c.image_token_id)
    last = first + c.tokens_per_image
    with fused(task.model, task.adapters["vqa"]):
        dec = static_embeds_decoder(task, 96, image_marker=True)

    def calls(chunks) -> np.ndarray:
        rows = []
        for lo, hi, flag in chunks:
            x = torch.cat([emb[lo:hi], torch.full((hi - lo, 1), float(flag))], 1)[None]
            with torch.no_grad():
                rows.append(dec(x, torch.tensor([lo]))[0])
        return torch.cat(rows).numpy()

    assert np.abs(calls([(0, first, 0), (first, last, 1), (last, len(ids), 0)]) - ref_logits).max() <= 1e-4
    # negative control: the same image rows unmarked are causal, which Gemma3 is not
    assert np.abs(calls([(0, first, 0), (first, last, 0), (last, len(ids), 0)]) - ref_logits).max() > 1e-2
    # a text chunk of exactly tokens_per_image tokens carries 0s: causal, as HF's text-only forward
    text = tok.encode("Caroline went to the support group on Tuesday and then painted a lake at dawn").ids
    text = (text * c.tokens_per_image)[: c.tokens_per_image]
    assert c.image_token_id not in text
    ref.set_adapter("vqa")
    want = ref.prefill(text)
    x = torch.cat([torch.from_numpy(torch_embed(task, text)), torch.zeros(len(text), 1)], 1)[None]
    with torch.no_grad():
        got = dec(x, torch.tensor([0]))[0].numpy()
    assert np.abs(got - want).max() <= 1e-4
    ref.close()


def test_coreml_vqa_wrapper_matches_hf_with_the_image_block_mask(vlm_task):
    """What the Core ML ``vqa`` function is converted from (fast; the conversion itself is slow):
    the stateful decoder on embeddings, Gemma3's block mask fed in, vs HF; causal mask as control."""
    import torch

    from memlora.tasks.coreml_decoder import CoreMLEmbedsDecoder
    from memlora.tasks.vision import additive_mask, as_decoder_task
    from memlora.vision.preprocess import image_blocks

    task, c, _, ids, ref, ref_logits, emb = _image_prompt(vlm_task, "tiny-gemma3-vl", 3, "shape")
    ref.close()
    emb = torch.from_numpy(emb)[None]
    dtask = as_decoder_task(task, ["vqa"])
    n = len(ids)

    def run(blocks) -> np.ndarray:
        dec = CoreMLEmbedsDecoder(dtask, 64, dtask.adapters["vqa"], split_cache=True).eval()
        try:
            with torch.no_grad():
                return dec(emb, torch.arange(n)[None], torch.from_numpy(additive_mask(range(n), n, blocks)))[0].numpy()
        finally:
            dec.release()

    assert np.abs(run(image_blocks(ids, c)) - ref_logits).max() <= 1e-4
    assert np.abs(run(None) - ref_logits).max() > 1e-2


# --- export chains (slow) -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def smolvlm_bundle(tmp_path_factory):
    """``memlora export --model tiny-smolvlm`` on ONNX, ExecuTorch and Core ML, external + fused, with parity."""
    from memlora.core.config import AdapterMode, BackendName
    from memlora.export import ExportOptions, run_export

    out = tmp_path_factory.mktemp("vlm") / "smolvlm"
    manifest = run_export(ExportOptions(out=out, model="tiny-smolvlm",
                                        backends=[BackendName.ONNX, BackendName.EXECUTORCH, BackendName.COREML],
                                        adapter_modes=[AdapterMode.EXTERNAL, AdapterMode.FUSED], max_seq_len=128,
                                        parity_tokens=16), show_progress=False)
    return out, manifest


@pytest.mark.slow
def test_smolvlm_bundle_parity_per_graph_and_negative_controls(smolvlm_bundle):
    out, manifest = smolvlm_bundle
    assert manifest["model"]["kind"] == "vision-language"
    vis = [a for a in manifest["artifacts"] if a["meta"].get("kind") == "vision-language"]
    assert {(a["backend"], a["adapter_mode"]) for a in vis} == {
        (b, m) for b in ("onnx", "executorch", "coreml") for m in ("external", "fused")}
    for a in manifest["artifacts"]:
        assert a["parity"]["passed"], (a["backend"], a["adapter_mode"], a["parity"].get("failures"))
    for a in vis:
        p = a["parity"]
        assert p["encoder"]["max_rel"] <= 1e-3 and p["encoder"]["negative_control_max_rel"] > 0.1
        vqa = p["decoder"]["vqa"]
        assert vqa["end_to_end_max_abs"] <= 1e-4
        assert vqa["neg_other_image_max_abs"] > 1e-2 and vqa["neg_adapter_answer_max_abs"] > 1e-2
    # ExecuTorch: vqa is the multimodal program; the text adapters keep the shared-foundation layout
    et_text = next(a for a in manifest["artifacts"] if a["backend"] == "executorch"
                   and a["adapter_mode"] == "external" and a["meta"].get("kind") == "text")
    assert et_text["adapters"] == ["extract", "update", "answer"] and "foundation" in et_text["files"]
    # Core ML external: one multifunction package holds the text functions and embed + vqa
    cm = {a["meta"].get("kind"): a for a in manifest["artifacts"] if a["backend"] == "coreml"
          and a["adapter_mode"] == "external"}
    assert cm["text"]["files"]["model"] == cm["vision-language"]["files"]["model"]
    assert set(cm["text"]["meta"]["functions"]) == {"base", "extract", "update", "answer"}
    assert set(cm["vision-language"]["meta"]["functions"]) == {"embed", "vqa"}
    assert cm["vision-language"]["parity"]["numerics"] == "mil-numpy"
    singles = cm["text"]["meta"]["single_package_bytes"]
    assert cm["text"]["meta"]["package_bytes"] < sum(singles.values()) / 2  # base weights stored once
    et = next(a for a in vis if a["backend"] == "executorch")
    assert et["adapters"] == ["vqa"]
    assert et["meta"]["constant_methods"]["get_tokens_per_image"] == 16
    assert set(et["meta"]["delegation"]) == {"vision_encoder", "token_embedding", "text_decoder"}


def _stock_runner_ids(out: Path, manifest: dict, tmp_path: Path) -> tuple[list[int], list[int], object, dict]:
    """The first conformance case through the stock MultimodalRunner (fused vqa program):
    (runner ids, expected ids, the contract, the case)."""
    from PIL import Image

    from memlora.backends.executorch.stock_runner import expected_ids, parse_ids, stock_generate, write_id_tokenizer
    from memlora.vision.preprocess import contract_from_json, pixels

    case = json.loads((out / "conformance.json").read_text())["vision"]["cases"][0]
    c = contract_from_json(json.loads((out / "vision/preprocess.json").read_text()))
    image = np.asarray(Image.open(out / case["png"]).convert("RGB"))
    ids = case["prompt_ids"]
    first = ids.index(c.image_token_id) - len(c.before_ids)
    last = first + len(c.expansion_ids())
    et = next(a for a in manifest["artifacts"] if a["backend"] == "executorch" and a["adapter_mode"] == "fused"
              and a["meta"].get("kind") == "vision-language")
    vocab = manifest["model"]["vocab_size"]
    # the runner's calls: text up to the image, the image alone, text after (as an app sends them)
    got = parse_ids(stock_generate(out / et["files"]["model:vqa"], write_id_tokenizer(vocab, tmp_path / "ids.json"),
                                   ids[:first] + list(c.before_ids), pixels(image, c),
                                   list(c.after_ids) + ids[last:], 16))
    return got, expected_ids(case["greedy_ids"], [manifest["model"]["eos_token_id"]]), image, case


@pytest.mark.slow
def test_stock_multimodal_runner_matches_reference_greedy(smolvlm_bundle, tmp_path):
    from memlora.vision.runtime import open_vision

    out, manifest = smolvlm_bundle
    got, want, image, case = _stock_runner_ids(out, manifest, tmp_path)
    assert got == want
    # and memlora's own Python app loop over the ONNX graphs says the same
    assert open_vision(out, "onnx").ask(image, case["question"])[: len(got)] == got


@pytest.mark.slow
def test_gemma3_on_executorch_stock_runner_with_its_image_blocks(tmp_path):
    """Gemma3 (bidirectional image blocks) through the marker column: parity per graph, the
    causal-mask control far off, and the stock runner's greedy ids equal to the reference's."""
    from memlora.core.config import AdapterMode, BackendName
    from memlora.export import ExportOptions, run_export

    out = tmp_path / "g3"
    manifest = run_export(ExportOptions(out=out, model="tiny-gemma3-vl", backends=[BackendName.EXECUTORCH],
                                        adapter_modes=[AdapterMode.FUSED], max_seq_len=128, parity_tokens=8),
                          show_progress=False)
    vis = next(a for a in manifest["artifacts"] if a["meta"].get("kind") == "vision-language")
    p = vis["parity"]
    assert p["passed"], p["failures"]
    assert vis["meta"]["constant_methods"]["get_image_marker"] == 1
    assert p["decoder"]["vqa"]["neg_causal_mask_max_abs"] > 1e-2 and p["decoder"]["vqa"]["end_to_end_max_abs"] <= 1e-4
    got, want, _, _ = _stock_runner_ids(out, manifest, tmp_path)
    assert got == want


def _check_conformance_vectors(out: Path) -> int:
    """The bundle's preprocessing reference (NumPy, what the apps port) reproduces every vision
    conformance case from the PNG bytes alone; returns the number of cases checked."""
    from PIL import Image

    from memlora.vision.preprocess import contract_from_json, normalise, pixels

    pre = json.loads((out / "vision/preprocess.json").read_text())
    assert pre["hf_processor_config"] == json.loads((out / "vision/preprocessor_config.json").read_text())
    c = contract_from_json(pre)
    cases = json.loads((out / "conformance.json").read_text())["vision"]["cases"]
    for case in cases:
        png = (out / case["png"]).read_bytes()
        assert hashlib.sha256(png).hexdigest() == case["png_sha256"]
        image = np.asarray(Image.open(out / case["png"]).convert("RGB"))
        assert hashlib.sha256(image.tobytes()).hexdigest() == case["canvas_sha256"]
        pix = pixels(image, c)
        assert hashlib.sha256(pix.tobytes()).hexdigest() == case["pixel_values"]["sha256"]
        assert np.allclose(normalise(pix, c).ravel()[:8], case["normalised"]["first"], atol=1e-7)
        assert case["prompt_ids"].count(c.image_token_id) == c.tokens_per_image and len(case["greedy_ids"]) == 16
    return len(cases)


def test_conformance_vectors_are_reproduced_by_the_preprocessing_reference(vlm_task, tmp_path):
    """The same vectors ``memlora export`` writes (add_vision_conformance), without an export;
    a reference with another mean must fail them (the check can fail)."""
    from tokenizers import Tokenizer

    from memlora.vision.conformance import add_vision_conformance
    from memlora.vision.export import write_preprocess
    from memlora.vision.reference import VisionTorchRunner

    task, adapters = vlm_task("tiny-smolvlm")
    write_preprocess(tmp_path, task)
    (tmp_path / "conformance.json").write_text("{}")
    reference = VisionTorchRunner(task.info.path, {"vqa": adapters["vqa"]}, task.family, task.contract)
    add_vision_conformance(tmp_path, task, reference, Tokenizer.from_file(str(task.info.tokenizer_file)))
    assert _check_conformance_vectors(tmp_path) >= 2
    # Negative control: a reference with another normalisation must not reproduce the vectors.
    pre_path = tmp_path / "vision/preprocess.json"
    pre = json.loads(pre_path.read_text())
    pre["contract"]["image_mean"] = [m + 0.01 for m in pre["contract"]["image_mean"]]
    pre_path.write_text(json.dumps(pre))
    with pytest.raises(AssertionError):
        _check_conformance_vectors(tmp_path)


@pytest.mark.slow
def test_preprocess_reference_reproduces_conformance_vectors(smolvlm_bundle):
    out, _ = smolvlm_bundle
    assert _check_conformance_vectors(out) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-internvl", "tiny-gemma3-vl"])
def test_onnx_bundle_other_families(tmp_path, name):
    from memlora.core.config import AdapterMode
    from memlora.export import ExportOptions, run_export

    manifest = run_export(ExportOptions(out=tmp_path / name, model=name, adapter_modes=[AdapterMode.EXTERNAL],
                                        parity_tokens=8), show_progress=False)
    p = manifest["artifacts"][0]["parity"]
    assert p["passed"], p["failures"]
    if name == "tiny-gemma3-vl":
        assert p["decoder"]["vqa"]["neg_causal_mask_max_abs"] > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("name,precision", [("tiny-gemma3-vl", "fp32"), ("tiny-internvl", "fp16")])
def test_coreml_vision_functions_checked_by_the_mil_evaluator(vlm_task, tmp_path, name, precision):
    """Core ML fused (vision.mlpackage + vqa.mlpackage with embed and vqa): every graph's parity
    through memlora's MIL evaluator, Gemma3 with its image-block mask (and the causal control)."""
    from memlora.core.config import ExportSpec
    from memlora.backends.coreml import vision as coreml_export
    from memlora.export import prompt_ids
    from memlora.vision.export import VQA_PROMPT, artifact_vision_parity
    from memlora.vision.images import make_samples
    from memlora.vision.preprocess import expand_prompt
    from memlora.vision.reference import VisionTorchRunner
    from tokenizers import Tokenizer

    task, adapters = vlm_task(name)
    c = task.contract
    art = coreml_export.export(task, ExportSpec("coreml", adapter_mode="fused", precision=precision, max_seq_len=96),
                               tmp_path)
    assert set(art.meta["functions"]) == {"embed", "vqa"} and art.meta["numerics"] == "mil-numpy"
    ref = VisionTorchRunner(task.info.path, adapters, task.family, c)
    tok = Tokenizer.from_file(str(task.info.tokenizer_file))
    samples = make_samples(2, c.tile, seed=1)
    prompts = [expand_prompt(tok.encode(VQA_PROMPT[0]).ids, tok.encode(" " + s.question).ids, c) for s in samples]
    p = artifact_vision_parity(coreml_export, art, tmp_path, task, ref, samples, prompts,
                               prompt_ids(task.info.tokenizer_file)[:1], 4)
    assert p["passed"], p["failures"]
    assert p["encoder"]["negative_control_max_rel"] > 0.1
    if c.bidirectional_image:
        assert p["decoder"]["vqa"]["neg_causal_mask_max_abs"] > 1e-2


@pytest.mark.slow
def test_parity_recheck_of_a_vision_bundle(smolvlm_bundle):
    from memlora.recheck import recheck_bundle

    out, _ = smolvlm_bundle
    report = recheck_bundle(out, n_tokens=4)
    assert report["passed"], [a["parity"].get("failures") for a in report["artifacts"]]


def test_presets_command_lists_vision_presets():
    from typer.testing import CliRunner

    from memlora.cli import app

    result = CliRunner().invoke(app, ["presets"])
    assert result.exit_code == 0
    for name in ("tiny-smolvlm", "tiny-internvl", "tiny-gemma3-vl", "internvl3-1b-shape"):
        assert name in result.output
