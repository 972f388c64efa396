"""Train the small byte-level BPE tokenizer the built-in presets ship (no downloads needed)."""
from __future__ import annotations

from importlib import resources

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


def corpus_lines() -> list[str]:
    """The English text memlora ships for training preset tokenizers."""
    text = resources.files("memlora").joinpath("data/corpus.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def train_bpe(vocab_size: int, special_tokens: tuple[str, ...]) -> Tokenizer:
    """Train a deterministic byte-level BPE with ``special_tokens`` reserved first.

    Byte-level so that any input text (emoji, other scripts) still tokenizes without unknowns.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    return tok
