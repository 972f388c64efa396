"""Texts -> embeddings around any encoder function: batching, the folder's pooling, references.

The batching rule (recorded in the bundle as :data:`BATCHING` so the Kotlin and Swift cores do the
same): padding and truncation settings stored in ``tokenizer.json`` are ignored (a
sentence-transformers ``tokenizer.json`` ships ``padding: Fixed(128)``, which would make every row
128 ids long with the pads marked real); each text is encoded alone, truncated to ``max_length``
by the tokenizer itself (so ``[CLS]``/``[SEP]`` survive), the rows are right-padded to the longest
with ``pad_id``, and the mask is the encodings' own ``attention_mask``, 0 on every pad. Pads are
never pooled.

Pooling and normalisation come from the folder: sentence-transformers' ``modules.json``
(Transformer, Pooling, optional Normalize) and ``1_Pooling/config.json`` (mean or CLS). A folder
without ``modules.json`` is a plain HF encoder: mean pooling and L2, the usual sentence-embedding
recipe, recorded as assumed. Anything else is refused with the fix.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..core.errors import MemloraError

BATCHING = {"tokenizer_padding": "ignored", "truncation": "tokenizer, max_length, special tokens kept",
            "pad": "right, to the longest row, pad_id", "mask": "encoding attention_mask (0 on pads)"}
STANDARD_MIN_COSINE = 0.9999
_FIX_MODULES = "use a sentence-transformers folder of Transformer, Pooling (mean or CLS) and optional Normalize"


class Pooling(str, Enum):
    MEAN = "mean"
    CLS = "cls"


@dataclass(frozen=True)
class PoolingConfig:
    """How token states become one vector, as the folder declares it (``declared=False``: assumed)."""

    pooling: Pooling = Pooling.MEAN
    normalize: bool = True
    max_seq_length: int | None = None
    declared: bool = False

    def to_json(self) -> dict:
        return {"pooling": self.pooling.value, "normalize": "l2" if self.normalize else "none",
                "declared": self.declared}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MemloraError(f"unreadable JSON ({type(e).__name__})", path,
                           "restore the file from the model's original folder") from None


def _pooling_mode(config_file: Path) -> Pooling:
    cfg = _read_json(config_file)
    if not isinstance(cfg, dict):
        raise MemloraError("pooling config is not a JSON object", config_file, _FIX_MODULES)
    modes = sorted(k[len("pooling_mode_"):] for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True)
    supported = {"mean_tokens": Pooling.MEAN, "cls_token": Pooling.CLS}
    if len(modes) != 1 or modes[0] not in supported:
        raise MemloraError(f"pooling {'+'.join(modes) or 'none'} is not supported", config_file,
                           "memlora embeds with mean or CLS pooling: use an encoder trained with one of them")
    return supported[modes[0]]


def read_pooling(path: str | Path) -> PoolingConfig:
    """Pooling, normalisation and max length of an encoder folder; refuses what memlora cannot run."""
    path = Path(path)
    st_config = path / "sentence_bert_config.json"
    max_len = _read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    max_len = int(max_len) if isinstance(max_len, int) and max_len > 0 else None
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        pool_cfg = path / "1_Pooling" / "config.json"
        if pool_cfg.is_file():
            return PoolingConfig(_pooling_mode(pool_cfg), False, max_len, True)
        return PoolingConfig(Pooling.MEAN, True, max_len, False)
    modules = _read_json(modules_file)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise MemloraError("modules.json is not a list of modules", modules_file, _FIX_MODULES)
    pooling, normalize = None, False
    for m in modules:
        kind = str(m.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Pooling":
            pooling = _pooling_mode(path / str(m.get("path", "")) / "config.json")
        elif kind == "Normalize":
            normalize = True
        elif kind != "Transformer":
            raise MemloraError(f"sentence-transformers module {kind or '?'!r} is not supported", modules_file,
                               _FIX_MODULES)
    if pooling is None:
        raise MemloraError("modules.json declares no Pooling module", modules_file, _FIX_MODULES)
    return PoolingConfig(pooling, normalize, max_len, True)


EncodeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class TextEmbedder:
    """Texts -> float32 ``[n, dim]`` with the batching rule above, then ``encode(ids, mask)``."""

    def __init__(self, tokenizer, encode: EncodeFn, max_length: int, pad_id: int, batch_size: int = 32):
        # Whatever the file says, padding is ours and truncation is the tokenizer's at max_length.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        self.tokenizer, self.encode = tokenizer, encode
        self.max_length, self.pad_id, self.batch_size = max_length, pad_id, batch_size

    @classmethod
    def from_file(cls, tokenizer_file: str | Path, encode: EncodeFn, max_length: int) -> "TextEmbedder":
        """Read ``tokenizer.json``; the pad id is ``[PAD]``'s (0 when it has none)."""
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_file))
        pad = tok.token_to_id("[PAD]")
        return cls(tok, encode, max_length, 0 if pad is None else pad)

    def batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask ``[n, longest]``, right-padded; the mask is 0 on pads."""
        encs = [self.tokenizer.encode(t) for t in texts]
        width = max(1, max(len(e.ids) for e in encs))
        ids = np.full((len(encs), width), self.pad_id, np.int64)
        mask = np.zeros((len(encs), width), np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)], mask[i, : len(e.ids)] = e.ids, e.attention_mask
        return ids, mask

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, 0), np.float32)
        out = [np.asarray(self.encode(*self.batch(texts[i:i + self.batch_size])), np.float32)
               for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(out, axis=0)


def standard_embedder(path: str | Path, config: PoolingConfig, max_length: int = 512
                      ) -> Callable[[Sequence[str]], np.ndarray]:
    """The encoder the standard way: HF ``AutoTokenizer`` (padding=longest) + ``AutoModel``, the
    folder's pooling and normalisation. Shares no preprocessing with :class:`TextEmbedder`."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report lists the unused pooler head: noise here
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    finally:
        hf_logging.set_verbosity(level)
    max_length = min(max_length, config.max_seq_length or max_length)

    def run(texts: Sequence[str]) -> np.ndarray:
        enc = tok(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        if config.pooling is Pooling.CLS:
            pooled = hidden[:, 0]
        else:
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if config.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.numpy().astype(np.float32)

    return run


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def embedder_parity(exported: TextEmbedder, reference: TextEmbedder, texts: Sequence[str],
                    tolerance: float = 1e-5, standard: Callable | None = None) -> dict:
    """Max |diff| against memlora's PyTorch embedder, a negative control (other texts must move the
    output), and (``standard`` given) the per-sentence cosine against the standard pipeline, which
    catches preprocessing bugs both memlora sides would share."""
    texts = list(texts)
    a, b = exported(texts), reference(texts)
    diff = float(np.abs(a - b).max())
    control = float(np.abs(exported(list(reversed(texts))) - b).max()) if len(texts) > 1 else None
    passed = diff <= tolerance and (control is None or control > 100 * tolerance)
    out = {"max_abs_diff": diff, "tolerance": tolerance, "negative_control": control}
    if standard is not None:
        cos = float(_cosines(a, np.asarray(standard(texts), np.float32)).min())
        out.update(standard_min_cosine=cos, standard_tolerance=STANDARD_MIN_COSINE)
        passed = passed and cos >= STANDARD_MIN_COSINE
    return {**out, "passed": passed}
