"""The PyTorch reference for an SVLM: HF eager with PEFT adapters, images through HF itself.

Prompts with an image go through the HF model's own forward (``input_ids`` + ``pixel_values``,
``token_type_ids`` where the family needs them), so the reference proves the whole split
(encoder, embedding, merge, mask) and not only each graph. It also implements the text
``Runner`` protocol (``prefill(ids)`` / ``decode``), so text-only artifacts reuse the common check.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .preprocess import Contract, image_blocks, normalise, pixels


class VisionTorchRunner:
    def __init__(self, model_dir: str | Path, adapter_dirs: dict[str, str | Path], family, contract: Contract):
        from peft import PeftModel
        from transformers import AutoModelForImageTextToText

        from ..backends.pytorch.runner import _peft_name
        from ..sources.model_io import quiet_transformers

        quiet_transformers()
        base = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32,
                                                           attn_implementation="eager").eval()
        self.family, self.contract = family, contract
        self.adapters = list(adapter_dirs)
        self.max_seq_len = None
        self._peft_name = _peft_name
        items = iter(adapter_dirs.items())
        first, path = next(items)
        self.model = PeftModel.from_pretrained(base, str(path), adapter_name=_peft_name(first)).eval()
        for name, path in items:
            self.model.load_adapter(str(path), adapter_name=_peft_name(name))
        self.set_adapter(self.adapters[0])

    @property
    def hf(self):
        """The HF model under PEFT (``get_image_features`` and friends)."""
        return self.model.base_model.model

    def set_adapter(self, name: str | None) -> None:
        if name is None:
            self.model.base_model.disable_adapter_layers()
        else:
            if name not in self.adapters:
                raise KeyError(f"unknown adapter {name!r}; have {self.adapters}")
            self.model.base_model.enable_adapter_layers()
            self.model.set_adapter(self._peft_name(name))
        self.reset()

    def reset(self) -> None:
        from transformers import DynamicCache

        self._cache = DynamicCache()
        self._len = 0

    def pixel_values(self, image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(normalise(pixels(image, self.contract), self.contract))
        return x.unsqueeze(0) if self.family.pixel_values_ndim == 5 else x

    @torch.no_grad()
    def image_features(self, image: np.ndarray) -> np.ndarray:
        """HF ``get_image_features`` on the reference-normalised pixels: ``[N, D]``."""
        out = self.hf.model.get_image_features(self.pixel_values(image)).pooler_output
        out = out[0] if isinstance(out, (list, tuple)) else out
        return out.reshape(-1, out.shape[-1]).float().numpy()

    @torch.no_grad()
    def prefill(self, ids: Sequence[int], image: np.ndarray | None = None) -> np.ndarray:
        x = torch.tensor([list(ids)], dtype=torch.long)
        kwargs = {}
        if image is not None:
            kwargs["pixel_values"] = self.pixel_values(image)
            if self.family.bidirectional_image:
                kwargs["token_type_ids"] = (x == self.contract.image_token_id).long()
        pos = torch.arange(self._len, self._len + x.shape[1]).unsqueeze(0)
        out = self.model(input_ids=x, past_key_values=self._cache, use_cache=True, position_ids=pos, **kwargs)
        self._cache = out.past_key_values
        self._len += x.shape[1]
        return out.logits[0].float().numpy()

    def decode(self, token: int) -> np.ndarray:
        return self.prefill([token])[0]

    def close(self) -> None:
        self.model = None


def image_trace(ref: VisionTorchRunner, adapter: str, ids: Sequence[int], image: np.ndarray, n_tokens: int):
    """Prefill an image prompt and greedily decode: logits ``[P + N - 1, V]`` and the N tokens."""
    ref.set_adapter(adapter)
    rows = [ref.prefill(ids, image)]
    tokens = [int(rows[0][-1].argmax())]
    while len(tokens) < n_tokens:
        rows.append(ref.decode(tokens[-1])[None])
        tokens.append(int(rows[-1][-1].argmax()))
    return np.concatenate(rows, axis=0), tokens


__all__ = ["VisionTorchRunner", "image_trace", "image_blocks"]
