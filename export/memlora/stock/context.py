"""How long a context the bundle needs: sized from its own rendered prompts, not guessed.

The memory loop sends three prompts (extract, update, answer) built from the bundle's templates.
The longest one rendered with the conformance cases' inputs, plus room for what a real turn adds
(more conversation or memories than the samples) and for the reply, is what the KV cache must
hold. Static-cache runtimes (ExecuTorch, Core ML) cannot grow past it; ONNX Runtime GenAI stops
there (``context_length``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.errors import MemloraError

PHONE_DEFAULT = 2048  # the usual phone LLM context (ExecuTorch examples, ORT GenAI mobile models)
MEMORY_ROOM = 512     # tokens a real turn adds beyond the samples: longer dialogue, top-5 memories
ANSWER_ROOM = 256     # tokens the reply may take
ROUND = 256


@dataclass(frozen=True)
class ContextNeed:
    """Token counts behind the context choice (all through the model's own tokenizer)."""

    prompt_tokens: dict[str, int]  # op -> longest rendered conformance prompt of that op
    longest_op: str
    longest: int
    minimum: int      # longest prompt + the conformance reply: below this the bundle cannot check itself
    recommended: int  # longest prompt + a reply + room for longer real inputs
    default: int      # max(PHONE_DEFAULT, recommended rounded up to ROUND)

    def to_json(self) -> dict:
        return asdict(self)


def context_need(tokenizer_file: Path, chat_format: str, templates_dir: Path | None = None) -> ContextNeed:
    """Render every conformance prompt case with the bundle's templates and count its tokens."""
    from tokenizers import Tokenizer

    from ..conformance import GREEDY_TOKENS, PROMPT_CASES, prompt_text
    from ..memory import load_templates

    tok = Tokenizer.from_file(str(tokenizer_file))
    templates = load_templates(templates_dir)
    counts: dict[str, int] = {}
    for case in PROMPT_CASES:
        n = len(tok.encode(prompt_text(templates, chat_format, case), add_special_tokens=False).ids)
        counts[case["op"]] = max(counts.get(case["op"], 0), n)
    op = max(counts, key=counts.get)
    minimum = counts[op] + GREEDY_TOKENS
    recommended = counts[op] + ANSWER_ROOM + MEMORY_ROOM
    default = max(PHONE_DEFAULT, -(-recommended // ROUND) * ROUND)
    return ContextNeed(counts, op, counts[op], minimum, recommended, default)


def choose_context(requested: int | None, need: ContextNeed) -> int:
    """``requested`` if the bundle's prompts fit in it, the default when ``None``; else refuse."""
    if requested is None:
        return need.default
    if requested < need.minimum:
        raise MemloraError(
            f"--max-seq-len {requested} cannot hold this bundle's prompts: the {need.longest_op} prompt "
            f"alone is {need.longest} tokens, plus {need.minimum - need.longest} for its conformance reply = "
            f"{need.minimum} (recommended {need.recommended}: +{ANSWER_ROOM} for a reply, +{MEMORY_ROOM} "
            "for longer inputs)",
            fix=f"leave --max-seq-len out (default {need.default}) or pass at least {need.minimum}")
    return requested
