"""The sentence-embedder task: a BERT-like encoder, pooled as its folder declares, for retrieval.

MemLoRA's update step matches each new fact against its top-5 similar memories and the answer
step retrieves the top-k memories for a question; both need a small embedding model on the
phone. This module wraps a Hugging Face encoder folder (``config.json``, safetensors,
``tokenizer.json``) as one module ``input_ids, attention_mask -> embeddings [batch, dim]`` that
every backend can lower, and turns any such function into a text embedder (the
``Embedder`` callable :class:`memlora.memory.store.MemoryStore` takes).

Pooling and normalisation are read from the folder (sentence-transformers' ``modules.json`` and
``1_Pooling/config.json``, see :mod:`memlora.tasks.embedder_text`), never assumed when declared.

``write_embedder_preset`` writes a seeded tiny random BERT ("tiny") for tests and the default
job: random weights give meaningless similarities, but exact parity is still the point.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..core.errors import MemloraError
from .embedder_text import (BATCHING, STANDARD_MIN_COSINE, Pooling, PoolingConfig, TextEmbedder,  # noqa: F401
                            embedder_parity, read_pooling, standard_embedder)

EMBEDDER_PRESETS = ("tiny",)
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_TINY_CONFIG = dict(vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=128, type_vocab_size=1,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.1)
_TINY_SEED = 21


class PooledEncoder(nn.Module):
    """``input_ids [B, T], attention_mask [B, T] -> embeddings [B, dim]``: pool, then (optionally) L2.

    Mean pooling averages the rows the mask marks real; CLS takes row 0. Pads must be marked 0 in
    the mask: :class:`TextEmbedder` builds it from the encoding's own mask, never from the ids.
    """

    def __init__(self, encoder: nn.Module, pooling: Pooling = Pooling.MEAN, normalize: bool = True):
        super().__init__()
        self.encoder, self.pooling, self.normalize = encoder, Pooling(pooling), normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling is Pooling.CLS:
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if not self.normalize:
            return pooled
        # An exact division (not a reciprocal), so backends that approximate 1/x stay exact.
        return pooled / torch.sqrt((pooled * pooled).sum(dim=-1, keepdim=True)).clamp(min=1e-12)


MeanPoolEncoder = PooledEncoder  # the old name (mean pooling is the default)


@dataclass
class EmbedderTask:
    """A loaded encoder (float32, eval) wrapped for export, plus what a runtime needs to feed it."""

    module: PooledEncoder
    path: Path
    tokenizer_file: Path
    dim: int
    max_length: int
    pad_id: int
    source: dict = field(default_factory=dict)
    pooling: PoolingConfig = field(default_factory=PoolingConfig)

    def example_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Two rows of different lengths (sizes > 1, so no dimension specialises)."""
        ids = torch.tensor([[2, 40, 41, 42, 3], [2, 50, 3, self.pad_id, self.pad_id]], dtype=torch.long)
        return ids, (ids != self.pad_id).long()

    def reference(self) -> "TextEmbedder":
        """The PyTorch embedder: the reference every export is checked against."""
        def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return self.module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

        return TextEmbedder.from_file(self.tokenizer_file, run, self.max_length)

    def standard(self) -> "Callable[[Sequence[str]], np.ndarray]":
        """The encoder run the standard sentence-embedding way (HF ``AutoTokenizer`` + ``AutoModel``,
        the folder's pooling): a reference that shares none of memlora's preprocessing."""
        return standard_embedder(self.path, self.pooling, self.max_length)


def build_embedder_task(path: str | Path, source: dict | None = None) -> EmbedderTask:
    """Load an HF encoder folder; a clear error when it is not one or its pooling is unsupported."""
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModel

    path = Path(path)
    tok_file = path / "tokenizer.json"
    if not (path / "config.json").is_file() or not tok_file.is_file():
        raise MemloraError("not an encoder folder (needs config.json and tokenizer.json)", path,
                           "pass --embedder tiny or a sentence-transformers style HF folder")
    pooling = read_pooling(path)  # before any weight is loaded
    config = AutoConfig.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    tok = Tokenizer.from_file(str(tok_file))
    pad = tok.token_to_id("[PAD]")
    pad = getattr(config, "pad_token_id", None) if pad is None else pad
    max_len = min(int(getattr(config, "max_position_embeddings", 512)), 512)
    if pooling.max_seq_length:
        max_len = min(max_len, pooling.max_seq_length)
    module = PooledEncoder(model, pooling.pooling, pooling.normalize).eval()
    return EmbedderTask(module, path, tok_file, int(config.hidden_size), max_len, int(pad or 0),
                        source or {"path": str(path.resolve())}, pooling)


def resolve_embedder(name_or_path: str, workdir: Path) -> EmbedderTask:
    """``tiny`` (written to ``workdir``) or an HF encoder folder."""
    if name_or_path in EMBEDDER_PRESETS and not Path(name_or_path).exists():
        return build_embedder_task(write_embedder_preset(workdir / f"embedder-{name_or_path}"),
                                   {"preset": name_or_path})
    return build_embedder_task(name_or_path)


def write_embedder_preset(out: str | Path, name: str = "tiny") -> Path:
    """Write the seeded tiny random BERT (config, safetensors, tokenizer.json) to ``out``."""
    from tokenizers import processors
    from transformers import BertConfig, BertModel

    from ..sources.tokenizer_train import train_bpe

    if name not in EMBEDDER_PRESETS:
        raise MemloraError(f"unknown embedder preset {name!r}", fix=f"use one of: {', '.join(EMBEDDER_PRESETS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_bpe(_TINY_CONFIG["vocab_size"], SPECIAL_TOKENS)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", cls), ("[SEP]", sep)])
    tok.save(str(out / "tokenizer.json"))
    # So AutoTokenizer (the standard reference) reads tokenizer.json as it is, not as WordPiece.
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "[PAD]", "cls_token": "[CLS]",
         "sep_token": "[SEP]", "unk_token": "[UNK]", "model_max_length": _TINY_CONFIG["max_position_embeddings"]}))
    torch.manual_seed(_TINY_SEED)
    model = BertModel(BertConfig(**_TINY_CONFIG, pad_token_id=tok.token_to_id("[PAD]")), add_pooling_layer=False)
    gen = torch.Generator().manual_seed(_TINY_SEED + 1)
    with torch.no_grad():  # LayerNorms start at exactly 1/0: randomise so a wrong lowering shows
        for pname, p in model.named_parameters():
            if "LayerNorm" in pname:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    model.eval().save_pretrained(out)
    (out / "memlora_preset.json").write_text(json.dumps({"embedder_preset": name, "seed": _TINY_SEED}))
    return out


