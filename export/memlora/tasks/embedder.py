"""The sentence-embedder task: a BERT-like encoder, mean-pooled and L2-normalised, for retrieval.

MemLoRA's update step matches each new fact against its top-5 similar memories and the answer
step retrieves the top-k memories for a question; both need a small embedding model on the
phone. This module wraps a Hugging Face encoder folder (``config.json``, safetensors,
``tokenizer.json``) as one module ``input_ids, attention_mask -> embeddings [batch, dim]`` that
every backend can lower, and turns any such function into a text embedder (the
``Embedder`` callable :class:`memlora.memory.store.MemoryStore` takes).

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

EMBEDDER_PRESETS = ("tiny",)
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_TINY_CONFIG = dict(vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=128, type_vocab_size=1,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.1)
_TINY_SEED = 21


class MeanPoolEncoder(nn.Module):
    """``input_ids [B, T], attention_mask [B, T] -> embeddings [B, dim]``: masked mean, then L2."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        # An exact division (not a reciprocal), so backends that approximate 1/x stay exact.
        return mean / torch.sqrt((mean * mean).sum(dim=-1, keepdim=True)).clamp(min=1e-12)


@dataclass
class EmbedderTask:
    """A loaded encoder (float32, eval) wrapped for export, plus what a runtime needs to feed it."""

    module: MeanPoolEncoder
    path: Path
    tokenizer_file: Path
    dim: int
    max_length: int
    pad_id: int
    source: dict = field(default_factory=dict)

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


def build_embedder_task(path: str | Path, source: dict | None = None) -> EmbedderTask:
    """Load an HF encoder folder; a clear error when it is not one."""
    from transformers import AutoConfig, AutoModel

    path = Path(path)
    tok_file = path / "tokenizer.json"
    if not (path / "config.json").is_file() or not tok_file.is_file():
        raise MemloraError("not an encoder folder (needs config.json and tokenizer.json)", path,
                           "pass --embedder tiny or a sentence-transformers style HF folder")
    config = AutoConfig.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_file))
    pad = tok.token_to_id("[PAD]")
    pad = getattr(config, "pad_token_id", None) if pad is None else pad
    max_len = min(int(getattr(config, "max_position_embeddings", 512)), 512)
    return EmbedderTask(MeanPoolEncoder(model).eval(), path, tok_file, int(config.hidden_size), max_len,
                        int(pad or 0), source or {"path": str(path.resolve())})


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


EncodeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class TextEmbedder:
    """Texts -> float32 ``[n, dim]``: tokenize (truncate to ``max_length``), pad, run ``encode``."""

    def __init__(self, tokenizer, encode: EncodeFn, max_length: int, pad_id: int, batch_size: int = 32):
        self.tokenizer, self.encode = tokenizer, encode
        self.max_length, self.pad_id, self.batch_size = max_length, pad_id, batch_size

    @classmethod
    def from_file(cls, tokenizer_file: str | Path, encode: EncodeFn, max_length: int) -> "TextEmbedder":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_file))
        pad = tok.token_to_id("[PAD]")
        return cls(tok, encode, max_length, 0 if pad is None else pad)

    def batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, right-padded to the longest row."""
        rows = [self.tokenizer.encode(t).ids[: self.max_length] for t in texts]
        width = max(1, max(len(r) for r in rows))
        ids = np.full((len(rows), width), self.pad_id, np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = r, 1
        return ids, mask

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, 0), np.float32)
        out = [np.asarray(self.encode(*self.batch(texts[i:i + self.batch_size])), np.float32)
               for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(out, axis=0)


def embedder_parity(exported: TextEmbedder, reference: TextEmbedder, texts: Sequence[str],
                    tolerance: float = 1e-5) -> dict:
    """Max |diff| of the embeddings, plus a negative control: other texts must move the output."""
    a, b = exported(texts), reference(texts)
    diff = float(np.abs(a - b).max())
    control = float(np.abs(exported(list(reversed(texts))) - b).max()) if len(texts) > 1 else None
    return {"max_abs_diff": diff, "tolerance": tolerance, "negative_control": control,
            "passed": diff <= tolerance and (control is None or control > 100 * tolerance)}
