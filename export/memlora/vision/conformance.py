"""The ``vision`` section of a bundle's ``conformance.json`` (written by ``memlora export`` for an SVLM)."""
from __future__ import annotations

import json
from pathlib import Path


def add_vision_conformance(root: Path, task, reference, tok, n_tokens: int = 16) -> None:
    """A ``vision`` section in ``conformance.json``: per generated PNG, the canvas sha256, the
    pixel tensor, an embeddings digest, the expanded prompt ids and 16 greedy ``vqa`` tokens."""
    import hashlib

    import numpy as np

    from ..parity import reference_trace  # noqa: F401  (same greedy rule as the text section)
    from .export import CONFORMANCE_IMAGES, VQA_PROMPT
    from .images import make_samples, png_bytes
    from .parity import torch_features
    from .preprocess import expand_prompt, normalise, pixels
    from .reference import image_trace

    c = task.contract
    adapter = "vqa" if "vqa" in reference.adapters else reference.adapters[0]
    out_dir = Path(root) / "vision" / "conformance"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, s in enumerate(make_samples(CONFORMANCE_IMAGES, c.tile, seed=7)):
        png = png_bytes(s.image)
        name = f"vision/conformance/{i}-{s.kind}.png"
        (Path(root) / name).write_bytes(png)
        pix = pixels(s.image, c)
        feats = torch_features(task, s.image)
        ids = expand_prompt(tok.encode(VQA_PROMPT[0]).ids, tok.encode(" " + s.question).ids, c)
        _, tokens = image_trace(reference, adapter, ids, s.image, n_tokens)
        norm = normalise(pix, c)
        rows.append({
            "png": name, "png_sha256": hashlib.sha256(png).hexdigest(),
            "canvas_sha256": hashlib.sha256(s.image.tobytes()).hexdigest(), "canvas_shape": list(s.image.shape),
            "kind": s.kind, "question": s.question, "answer": s.answer,
            "pixel_values": {"dtype": "uint8", "shape": list(pix.shape), "sha256": hashlib.sha256(pix.tobytes()).hexdigest(),
                             "first": pix.ravel()[:16].tolist()},
            "normalised": {"shape": list(norm.shape), "mean": float(norm.mean()), "first": norm.ravel()[:8].tolist()},
            "embeddings": {"shape": list(feats.shape), "mean": float(feats.mean()), "std": float(feats.std()),
                           "abs_max": float(np.abs(feats).max()), "first": feats.ravel()[:8].tolist()},
            "prompt_ids": ids, "adapter": adapter, "greedy_ids": tokens,
            "greedy_text": tok.decode(tokens, skip_special_tokens=False),
        })
    path = Path(root) / "conformance.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["vision"] = {"preprocess": "vision/preprocess.json", "n_tokens": n_tokens, "cases": rows}
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
