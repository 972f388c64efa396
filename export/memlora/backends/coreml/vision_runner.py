"""Run an SVLM's Core ML export: ``vision.mlpackage``, the ``embed`` function and an embeddings
decoder function (``vqa``) with its KV state; Apple's runtime on macOS, the NumPy MIL evaluator
elsewhere. The interface the vision parity and the app loop call (as the ONNX and ExecuTorch
vision runners): ``encode_image``, ``embed``, ``prefill_embeds`` (with image blocks), ``decode``.
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Sequence

import numpy as np

from ...core.artifact import Artifact
from ...core.errors import MemloraError
from . import numerics_kind
from .runner import _MilEngine, _PredictEngine


class VisionCoreMLRunner:
    """One embeddings-decoder function active at a time; switching it starts a fresh state."""

    def __init__(self, artifact: Artifact, root: Path, engine: str | None = None):
        engine = engine or numerics_kind()
        if engine == "coreml-predict" and platform.system() != "Darwin":
            raise MemloraError("Core ML prediction needs macOS", fix="use the mil-numpy engine on this OS")
        if engine not in ("coreml-predict", "mil-numpy"):
            raise MemloraError(f"unknown Core ML engine {engine!r}", fix="use coreml-predict or mil-numpy")
        self._engine = _MilEngine() if engine == "mil-numpy" else _PredictEngine(artifact.precision.value)
        self.numerics = self._engine.kind
        self.artifact, self.root = artifact, Path(root)
        self.adapters = list(artifact.adapters)
        self.max_seq_len = artifact.max_seq_len
        self._external = artifact.external
        for rel in artifact.files.values():
            if not (self.root / rel / "Manifest.json").is_file():
                raise MemloraError("exported Core ML package missing", self.root / rel, "re-run memlora export")
        self._vision, _ = self._engine.open(self.root / artifact.files["vision"], None)
        self._key: str | None = None
        self.set_adapter(self.adapters[0])

    def _package(self, name: str) -> Path:
        return self.root / self.artifact.files["model" if self._external else f"model:{name}"]

    def set_adapter(self, name: str | None) -> None:
        if name is None:
            raise MemloraError("the embeddings functions come per adapter, with no bare base",
                               fix="pick an adapter (the text artifact's base function has the base)")
        if name not in self.adapters:
            raise KeyError(f"unknown adapter {name!r}; have {self.adapters}")
        functions = self.artifact.meta["functions"]
        self._embed, _ = self._engine.open(self._package(name), functions["embed"])
        self._key = name
        self.reset()

    def reset(self) -> None:
        self._fn, self._state = self._engine.open(self._package(self._key), self.artifact.meta["functions"][self._key])
        self._pos = 0
        self._blocks: list[int] = []

    def encode_image(self, pixel_values: np.ndarray) -> np.ndarray:
        """``uint8 [1, 3, S, S]`` -> ``[N, D]`` (fed as float32 0..255)."""
        feeds = {"pixel_values": np.ascontiguousarray(pixel_values, np.float32)}
        return np.asarray(self._engine.predict(self._vision, feeds, None, "image_features"), np.float32)[0]

    def embed(self, ids: Sequence[int]) -> np.ndarray:
        feeds = {"input_ids": np.asarray([list(ids)], np.int32)}
        return np.asarray(self._engine.predict(self._embed, feeds, None, "inputs_embeds"), np.float32)[0]

    def prefill_embeds(self, embeds: np.ndarray, blocks: Sequence[int] | None = None) -> np.ndarray:
        """Append ``embeds [T, D]`` (``blocks``: image block per position, -1 text) -> logits ``[T, V]``."""
        from ...tasks.vision import additive_mask

        n = embeds.shape[0]
        if self._pos + n > self.max_seq_len:
            raise MemloraError(f"KV cache full: {self._pos} cached + {n} new > max_seq_len {self.max_seq_len}",
                               fix="reset() between prompts or re-export with a larger --max-seq-len")
        self._blocks.extend(blocks if blocks is not None else [-1] * n)
        mask = additive_mask(range(self._pos, self._pos + n), self._pos + n,
                             self._blocks if any(b >= 0 for b in self._blocks) else None)
        feeds = {"inputs_embeds": np.ascontiguousarray(embeds[None], np.float32),
                 "position_ids": np.arange(self._pos, self._pos + n, dtype=np.int32)[None], "causal_mask": mask}
        out = self._engine.predict(self._fn, feeds, self._state)
        self._pos += n
        return np.asarray(out, np.float32)[0]

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        return self.prefill_embeds(self.embed(ids))

    def decode(self, token: int) -> np.ndarray:
        return self.prefill([token])[0]

    def close(self) -> None:
        self._fn = self._state = self._embed = self._vision = None
