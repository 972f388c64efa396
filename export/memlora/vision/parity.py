"""Parity per graph for an SVLM export, each with a negative control that must fail.

1. ``encoder``: the exported vision graph vs the torch wrapper (relative max error), the wrapper
   vs HF ``get_image_features`` (absolute, <= 1e-6); control: another image's features.
2. ``embedding``: the exported embedding graph vs the torch embedding, on prompt ids.
3. ``decoder``: per adapter, an image prompt teacher-forced against HF's own forward with
   ``pixel_values`` (the common tolerance table), first fed the *reference* image embeddings,
   then end to end through the exported encoder and embedding; controls: another image's
   embeddings, another adapter (``answer`` instead of ``vqa``) and, for families with
   bidirectional image blocks (Gemma3), a plain causal mask.
4. ``text``: every adapter on text-only prompts through the common check (``memlora.parity``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..parity import check_parity, tolerance_for
from .preprocess import image_blocks, pixels
from .reference import image_trace

ENCODER_TOL = {"fp32": 1e-3}      # relative max error
ENCODER_COSINE = {"fp16": 0.9995, "int8": 0.99, "int4": 0.99}
HF_WRAPPER_TOL = 1e-6


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def torch_features(task, image: np.ndarray) -> np.ndarray:
    import torch

    from ..tasks.vision import VisionEncoder

    with torch.no_grad():
        return VisionEncoder(task).eval()(torch.from_numpy(pixels(image, task.contract)))[0].numpy()


def torch_embed(task, ids: Sequence[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return task.model.get_input_embeddings()(torch.tensor([list(ids)]))[0].numpy()


def merge(embeds: np.ndarray, ids: Sequence[int], features: np.ndarray, image_token_id: int) -> np.ndarray:
    """Text embeddings with the image rows replaced by the image features (HF's masked_scatter)."""
    out = embeds.copy()
    where = np.asarray(ids) == image_token_id
    if where.sum() != features.shape[0]:
        raise ValueError(f"{where.sum()} image tokens for {features.shape[0]} image embeddings")
    out[where] = features
    return out


def forced(runner, adapter: str, ids, embeds: np.ndarray, tokens: Sequence[int], blocks) -> np.ndarray:
    runner.set_adapter(adapter)
    rows = [runner.prefill_embeds(embeds, blocks)]
    for t in tokens[:-1]:
        rows.append(runner.decode(t)[None])
    return np.concatenate(rows, axis=0)


def _encoder_block(runner, reference, task, a: np.ndarray, b: np.ndarray, level: str, failures: list[str]) -> dict:
    """1. The exported vision graph vs the torch wrapper vs HF; control: another image."""
    c = task.contract
    wa, wb = torch_features(task, a), torch_features(task, b)
    hf = reference.image_features(a)
    ea, eb = runner.encode_image(pixels(a, c)), runner.encode_image(pixels(b, c))
    enc = {"wrapper_vs_hf_max_abs": float(np.abs(wa - hf).max()), "max_rel": _rel(ea, wa),
           "cosine": _cos(ea, wa), "negative_control_max_rel": _rel(eb, wa), "shape": list(ea.shape)}
    if enc["wrapper_vs_hf_max_abs"] > HF_WRAPPER_TOL:
        failures.append(f"encoder wrapper vs HF get_image_features {enc['wrapper_vs_hf_max_abs']:.2e} > {HF_WRAPPER_TOL}")
    if level in ENCODER_TOL and enc["max_rel"] > ENCODER_TOL[level]:
        failures.append(f"encoder relative error {enc['max_rel']:.2e} > {ENCODER_TOL[level]}")
    if level in ENCODER_COSINE and enc["cosine"] < ENCODER_COSINE[level]:
        failures.append(f"encoder cosine {enc['cosine']:.5f} < {ENCODER_COSINE[level]}")
    if enc["negative_control_max_rel"] < 100 * max(enc["max_rel"], 1e-6):
        failures.append("encoder negative control (another image) is not far above the error")
    return enc


def _prompt_diffs(runner, reference, task, name: str, ids, img, other, n_tokens: int, blocks_of, row: dict) -> None:
    """3. One image prompt through adapter ``name``: fold its diffs and controls into ``row``."""
    c = task.contract
    ref_logits, tokens = image_trace(reference, name, ids, img, n_tokens)
    ref_emb = merge(torch_embed(task, ids), ids, torch_features(task, img), c.image_token_id)
    e2e_emb = merge(runner.embed(ids), ids, runner.encode_image(pixels(img, c)), c.image_token_id)
    wrong_img = merge(torch_embed(task, ids), ids, torch_features(task, other), c.image_token_id)
    got_ref = forced(runner, name, ids, ref_emb, tokens, blocks_of(ids))
    got_e2e = forced(runner, name, ids, e2e_emb, tokens, blocks_of(ids))
    neg_img = forced(runner, name, ids, wrong_img, tokens, blocks_of(ids))
    # Another adapter on the reference side (the export may hold vqa alone): answer for vqa.
    pool = list(reference.adapters)
    other_adapter = "answer" if name == "vqa" and "answer" in pool else pool[(pool.index(name) + 1) % len(pool)]
    neg_ad, _ = image_trace(reference, other_adapter, ids, img, 1)
    neg_ad = np.concatenate([neg_ad, got_e2e[len(ids):]], axis=0)  # prompt positions only differ
    if c.bidirectional_image and hasattr(runner, "_blocks"):  # a runner that takes the mask
        causal = forced(runner, name, ids, ref_emb, tokens, None)
        row["neg_causal_mask_max_abs"] = max(row.get("neg_causal_mask_max_abs", 0.0),
                                             float(np.abs(causal - ref_logits).max()))
    p = len(ids)
    top_ref, top_got = ref_logits[p - 1:].argmax(-1), got_e2e[p - 1:].argmax(-1)
    diffs = {"ref_embeds_max_abs": float(np.abs(got_ref - ref_logits).max()),
             "end_to_end_max_abs": float(np.abs(got_e2e - ref_logits).max()),
             "image_positions_max_abs": float(np.abs(got_e2e[:p] - ref_logits[:p]).max()),
             "top1_agreement": float((top_ref == top_got).mean()),
             "neg_other_image_max_abs": float(np.abs(neg_img - ref_logits).max()),
             f"neg_adapter_{other_adapter}_max_abs": float(np.abs(neg_ad - got_e2e).max()),
             "greedy_tokens": tokens}
    for k, v in diffs.items():
        if k == "greedy_tokens":
            row.setdefault(k, v)
        elif k == "top1_agreement":
            row[k] = min(row.get(k, 1.0), v)
        else:
            row[k] = max(row.get(k, 0.0), v)


def _decoder_failures(name: str, row: dict, tol, failures: list[str]) -> None:
    """3. Adapter ``name``'s decoder row against the tolerance and its negative controls."""
    bound = tol.max_abs if tol.max_abs is not None else max(row["end_to_end_max_abs"], 1e-6)
    if tol.max_abs is not None and row["end_to_end_max_abs"] > tol.max_abs:
        failures.append(f"decoder[{name}] end-to-end max abs {row['end_to_end_max_abs']:.2e} > {tol.max_abs}")
    if tol.max_abs is not None and row["ref_embeds_max_abs"] > tol.max_abs:
        failures.append(f"decoder[{name}] max abs with reference embeddings {row['ref_embeds_max_abs']:.2e} > {tol.max_abs}")
    if row["top1_agreement"] < tol.min_top1:
        failures.append(f"decoder[{name}] top-1 agreement {row['top1_agreement']:.3f} < {tol.min_top1}")
    for k, v in row.items():
        if k.startswith("neg_") and v < tol.neg_factor * bound:
            failures.append(f"decoder[{name}] negative control {k} = {v:.2e} is not above {tol.neg_factor}x {bound:.1e}")


def _summary_rows(dec: dict, failures: list[str]) -> list[dict]:
    """One row per adapter in the shape of the text parity block (the CLI summary table reads it)."""
    rows = []
    for name, row in dec.items():
        negs = [v for k, v in row.items() if k.startswith("neg_")]
        mine = [f for f in failures if f.startswith((f"decoder[{name}]", f"text[{name}]"))]
        rows.append({"adapter": name, "max_abs_diff": row["end_to_end_max_abs"], "top1_agreement": row["top1_agreement"],
                     "negative_control": {"max_abs_diff": min(negs) if negs else 0.0}, "passed": not mine,
                     "failures": mine})
    return rows


def vision_parity(runner, reference, task, samples, prompts: Sequence[Sequence[int]], text_prompts,
                  *, backend: str, quant: str = "none", precision: str = "fp32", n_tokens: int = 16) -> dict:
    """The manifest's parity block for one SVLM artifact (see the module docstring)."""
    c = task.contract
    level, tol = tolerance_for(backend, quant, precision)
    failures: list[str] = []
    a, b = samples[0].image, samples[1].image
    blocks_of = (lambda ids: image_blocks(ids, c)) if c.bidirectional_image else (lambda ids: None)

    enc = _encoder_block(runner, reference, task, a, b, level, failures)

    # 2. embedding
    ids0 = list(prompts[0])
    emb = {"max_abs": float(np.abs(runner.embed(ids0) - torch_embed(task, ids0)).max())}
    if tol.max_abs is not None and emb["max_abs"] > tol.max_abs:
        failures.append(f"embedding max abs {emb['max_abs']:.2e} > {tol.max_abs}")

    # 3. decoder, per adapter, on an image prompt
    dec: dict = {}
    names = list(runner.adapters)
    reference.set_adapter(names[0])
    for name in names:
        row: dict = {}
        for i, ids in enumerate(prompts):
            img, other = (a, b) if i % 2 == 0 else (b, a)
            _prompt_diffs(runner, reference, task, name, ids, img, other, n_tokens, blocks_of, row)
        _decoder_failures(name, row, tol, failures)
        dec[name] = row

    # 4. text-only prompts, every adapter (the common check)
    text = check_parity(runner, reference, text_prompts, backend=backend, quant=quant, precision=precision,
                        n_tokens=n_tokens)
    for row in text["adapters"]:
        failures.extend(f"text[{row['adapter']}]: {f}" for f in row["failures"])
    return {"level": level, "adapters": _summary_rows(dec, failures),
            "tolerance": {"max_abs": tol.max_abs, "min_top1": tol.min_top1,
                          "neg_factor": tol.neg_factor, "encoder": ENCODER_TOL | ENCODER_COSINE},
            "encoder": enc, "embedding": emb, "decoder": dec, "text": text,
            "passed": not failures, "failures": failures}
