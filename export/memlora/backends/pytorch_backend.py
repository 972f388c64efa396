"""PyTorch eager with PEFT: the reference every export is checked against, and a host runner.

It loads adapters through PEFT itself, not through memlora's own adapter reader, so parity
also proves memlora read the adapter files correctly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def available() -> str | None:
    return None


def _peft_name(name: str) -> str:
    # PEFT keeps adapters in nn.ModuleDicts, so a name like "update" collides with
    # ModuleDict.update ("attribute 'update' already exists"); prefix every name.
    return f"memlora_{name}"


class TorchRunner:
    """Runner protocol over a Hugging Face model with PEFT adapters loaded by name."""

    def __init__(self, model_dir: str | Path, adapter_dirs: dict[str, str | Path], attn_implementation: str = "eager"):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        from ..model_io import quiet_transformers

        quiet_transformers()
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                    attn_implementation=attn_implementation).eval()
        self.adapters = list(adapter_dirs)
        self.max_seq_len = None
        if adapter_dirs:
            names = iter(adapter_dirs.items())
            first, path = next(names)
            self.model = PeftModel.from_pretrained(base, str(path), adapter_name=_peft_name(first)).eval()
            for name, path in names:
                self.model.load_adapter(str(path), adapter_name=_peft_name(name))
        else:
            self.model = base
        self._active: str | None = None
        self.set_adapter(self.adapters[0] if self.adapters else None)

    def set_adapter(self, name: str | None) -> None:
        if name is not None and name not in self.adapters:
            raise KeyError(f"unknown adapter {name!r}; have {self.adapters}")
        if self.adapters:
            if name is None:
                self.model.base_model.disable_adapter_layers()
            else:
                self.model.base_model.enable_adapter_layers()
                self.model.set_adapter(_peft_name(name))
        self._active = name
        self.reset()

    def reset(self) -> None:
        from transformers import DynamicCache

        self._cache = DynamicCache()

    @torch.no_grad()
    def _step(self, ids: Sequence[int]) -> np.ndarray:
        x = torch.tensor([list(ids)], dtype=torch.long)
        out = self.model(input_ids=x, past_key_values=self._cache, use_cache=True)
        self._cache = out.past_key_values
        return out.logits[0].float().numpy()

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        return self._step(ids)

    def decode(self, token: int) -> np.ndarray:
        return self._step([token])[0]

    def close(self) -> None:
        self.model = None
