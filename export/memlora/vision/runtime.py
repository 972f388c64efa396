"""Ask a bundle about an image: the app-side loop in Python (preprocess, merge, greedy decode).

``open_vision(bundle, backend)`` reads ``vision/preprocess.json`` and loads the SVLM artifact;
``ask(image, question)`` runs the NumPy preprocessing reference, the vision graph, the
embedding graph, merges the image rows, prefills (with the image-block mask where the family
needs it) and decodes greedily under the ``vqa`` adapter. A text-only bundle is refused.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.artifact import Artifact
from ..core.bundle import read_manifest
from ..core.errors import MemloraError
from .preprocess import contract_from_json, expand_prompt, image_blocks, pixels



def require_vision(manifest: dict, bundle: Path) -> None:
    if manifest.get("model", {}).get("kind") != "vision-language" or "vision" not in manifest:
        raise MemloraError("this bundle was exported from a text-only model and cannot take an image", bundle,
                           "export a vision-language model (e.g. memlora export --model tiny-smolvlm) or ask without an image")


@dataclass
class VisionSession:
    bundle: Path
    manifest: dict
    runner: object
    contract: object
    tokenizer: object

    def ask(self, image: np.ndarray, question: str, adapter: str = "vqa", max_tokens: int = 16,
            before: str = "Look at the picture.") -> list[int]:
        """Greedy token ids of the answer (no stop rule: exactly ``max_tokens``)."""
        c = self.contract
        pix = pixels(image, c)  # refuses another size or mode with the fix
        ids = expand_prompt(self.tokenizer.encode(before).ids, self.tokenizer.encode(" " + question).ids, c)
        emb = self.runner.embed(ids)
        emb[np.asarray(ids) == c.image_token_id] = self.runner.encode_image(pix)
        self.runner.set_adapter(adapter)
        logits = self.runner.prefill_embeds(emb, image_blocks(ids, c) if c.bidirectional_image else None)
        out = [int(logits[-1].argmax())]
        while len(out) < max_tokens:
            out.append(int(self.runner.decode(out[-1]).argmax()))
        return out

    def close(self) -> None:
        self.runner.close()


def open_vision(bundle: str | Path, backend: str = "onnx", adapter_mode: str | None = None) -> VisionSession:
    from tokenizers import Tokenizer

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    require_vision(manifest, bundle)
    from ..backends import get_backend

    module = get_backend(backend).vision()
    rows = [a for a in manifest["artifacts"] if a["backend"] == backend and a["meta"].get("kind") == "vision-language"
            and (adapter_mode is None or a["adapter_mode"] == adapter_mode)]
    if not rows:
        raise MemloraError(f"bundle has no {backend} artifact", bundle, "export it with --backend " + backend)
    artifact = Artifact.from_json(rows[0])
    runner = module.load(artifact, bundle)
    contract = contract_from_json(json.loads((bundle / manifest["vision"]["preprocess"]).read_text()))
    return VisionSession(bundle, manifest, runner, contract, Tokenizer.from_file(str(bundle / "tokenizer.json")))
