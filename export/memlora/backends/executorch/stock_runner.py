"""Run an exported vqa program through ExecuTorch's stock ``MultimodalRunner`` (the wheel's C++
runner binding, the same runner Android's ``LlmModule`` wraps), for the proof that a phone app
needs nothing from memlora but the bundle.

The runner takes token inputs, an image (uint8 CHW) and decodes greedily (temperature 0) through
``token_embedding`` + ``text_decoder``; it reports decoded text pieces only, and the Python binding
turns each piece into a ``str`` (a byte-level BPE piece holding half a UTF-8 character raises
``UnicodeDecodeError``). So the check hands the runner an *id tokenizer*: a tokenizer.json whose
token ``i`` decodes to ``"[i]"``. Prompts are given as ids, so the tokenizer is used only to
print, and the pieces are the generated ids exactly (up to the first EOS, where the runner stops).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def stock_generate(pte: Path, tokenizer: Path, before_ids: Sequence[int], pixel_values: np.ndarray,
                   after_ids: Sequence[int], max_new_tokens: int) -> str:
    """Greedy text from the stock runner for ``before_ids + <image> + after_ids``."""
    import torch

    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (llama::custom_sdpa)
    from executorch.extension.llm.runner import (GenerationConfig, MultimodalRunner, make_image_input,
                                                 make_token_input)

    runner = MultimodalRunner(str(pte), str(tokenizer))
    inputs = [make_token_input(list(map(int, before_ids))),
              make_image_input(torch.from_numpy(np.ascontiguousarray(pixel_values[0], np.uint8))),
              make_token_input(list(map(int, after_ids)))]
    pieces: list[str] = []
    cfg = GenerationConfig(echo=False, max_new_tokens=max_new_tokens, temperature=0.0, num_bos=0, num_eos=0)
    runner.generate(inputs, cfg, pieces.append)
    return "".join(pieces)


def write_id_tokenizer(vocab_size: int, path: Path) -> Path:
    """A tokenizer.json whose token ``i`` is the text ``[i]`` (no merges, no byte-level decoder)."""
    from tokenizers import Tokenizer, models

    Tokenizer(models.BPE(vocab={f"[{i}]": i for i in range(vocab_size)}, merges=[])).save(str(path))
    return path


def parse_ids(text: str) -> list[int]:
    import re

    return [int(m) for m in re.findall(r"\[(\d+)\]", text)]


def expected_ids(tokens: Sequence[int], eos_ids: Sequence[int]) -> list[int]:
    """The reference's greedy ids as the stock runner emits them: up to and including an EOS."""
    out = []
    for t in tokens:
        out.append(int(t))
        if t in eos_ids:
            break
    return out
