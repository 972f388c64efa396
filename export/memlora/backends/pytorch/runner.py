"""The PyTorch reference runner: a Hugging Face model with PEFT adapters loaded by name.

It loads adapters through PEFT itself, not through memlora's own adapter reader, so parity
also proves memlora read the adapter files correctly.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from ..runner_base import RunnerBase


def _peft_name(name: str) -> str:
    # PEFT keeps adapters in nn.ModuleDicts, so a name like "update" collides with
    # ModuleDict.update ("attribute 'update' already exists"); prefix every name.
    return f"memlora_{name}"


class TorchRunner(RunnerBase):
    """Runner protocol over eager PyTorch; the bare base is always available (adapters disabled)."""

    def __init__(self, model_dir: str | Path, adapter_dirs: dict[str, str | Path], attn_implementation: str = "eager",
                 *, threads: int | None = None, max_seq_len: int | None = None):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        from ...sources.model_io import quiet_transformers

        super().__init__(list(adapter_dirs), external=True, max_seq_len=max_seq_len)
        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        quiet_transformers()
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                    attn_implementation=attn_implementation).eval()
        self.model = base
        if adapter_dirs:
            names = iter(adapter_dirs.items())
            first, path = next(names)
            self.model = PeftModel.from_pretrained(base, str(path), adapter_name=_peft_name(first)).eval()
            for name, path in names:
                self.model.load_adapter(str(path), adapter_name=_peft_name(name))
        self._keep: list = []
        self.start()

    @property
    def weight_bytes(self) -> int:
        """Bytes of the model's parameters (tied weights counted once)."""
        seen, total = set(), 0
        for p in self.model.parameters():
            if p.data_ptr() not in seen:
                seen.add(p.data_ptr())
                total += p.numel() * p.element_size()
        return total

    def keep(self, tmp) -> None:
        """Hold ``tmp`` (a TemporaryDirectory with the sources) until :meth:`close`."""
        self._keep.append(tmp)

    def _activate(self, name: str | None) -> None:
        if not self.adapters:
            return
        if name is None:
            self.model.base_model.disable_adapter_layers()
        else:
            self.model.base_model.enable_adapter_layers()
            self.model.set_adapter(_peft_name(name))

    def _reset(self) -> None:
        from transformers import DynamicCache

        self._cache = DynamicCache()

    @torch.no_grad()
    def _forward(self, ids: list[int], logits_to_keep: int = 0) -> np.ndarray:
        out = self.model(input_ids=torch.tensor([ids], dtype=torch.long), past_key_values=self._cache, use_cache=True,
                         logits_to_keep=logits_to_keep)
        self._cache = out.past_key_values
        return out.logits[0].float().numpy()

    def _forward_last(self, ids: list[int]) -> np.ndarray:
        return self._forward(ids, logits_to_keep=1)  # the LM head on the last position only

    def _rewind(self, n: int) -> None:
        if n < self.pos:
            self._cache.crop(n - self.pos)  # a negative count: drop that many from the end

    def _save(self):
        return copy.deepcopy(self._cache)

    def _load(self, state) -> None:
        self._cache = copy.deepcopy(state)  # the forward grows a DynamicCache in place

    def _close(self) -> None:
        self.model = None
        for tmp in self._keep:
            tmp.cleanup()
        self._keep.clear()
