"""The MemLoRA memory loop: extract facts, reconcile them with the store, answer from memories.

Each operation runs its own adapter through :func:`~memlora.memory.engine.generate` with a
prompt from :mod:`~memlora.memory.prompts`, and its output goes through
:mod:`~memlora.memory.parsing` before anything touches the store. Malformed output is logged
and skipped, never applied. The update step follows Mem0 v1: each new fact retrieves its top-5
similar memories, the union is shown to the model under small ids, and the validated operations
are applied in one transaction.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, NamedTuple, Sequence

import numpy as np
from tokenizers import Tokenizer

from ..backends.base import Runner
from .chat import get_format, stop_strings
from .engine import GenerationResult, GenerationSettings, generate
from .parsing import ExtractResult, IdMap, parse_extract, parse_update
from .prompts import (DialogTurn, Op, Templates, answer_messages, constant_head,
                      extract_messages, load_templates, render, update_messages)
from .store import AppliedOp, Embedder, Memory, MemoryStore

log = logging.getLogger(__name__)


def _default_adapters() -> dict[Op, str | None]:
    return {op: op.value for op in Op}


@dataclass
class LoopSettings:
    """Generation settings per operation, retrieval sizes and adapter names."""

    extract: GenerationSettings = field(
        default_factory=lambda: GenerationSettings(max_new_tokens=256))
    update: GenerationSettings = field(
        default_factory=lambda: GenerationSettings(max_new_tokens=512))
    answer: GenerationSettings = field(
        default_factory=lambda: GenerationSettings(max_new_tokens=48))
    update_top_k: int = 5
    answer_top_k: int = 30
    adapters: dict[Op, str | None] = field(default_factory=_default_adapters)
    reuse_prefix: bool = True
    """Keep each adapter's KV cache of its template's constant head and prefill only the rest."""

    def generation(self, op: Op) -> GenerationSettings:
        return getattr(self, op.value)


@dataclass
class OpStats:
    """Accumulated cost of one operation."""

    calls: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0
    reused_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0

    def add(self, res: GenerationResult, total_s: float) -> None:
        self.calls += 1
        self.prompt_tokens += res.prompt_tokens
        self.reused_tokens += int(res.meta.get("reused_tokens", 0))
        self.new_tokens += len(res.token_ids)
        self.prefill_s += res.prefill_s
        self.decode_s += res.decode_s
        self.total_s += total_s

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class Answer(NamedTuple):
    text: str
    memories: list[Memory]


@dataclass
class IngestResult:
    facts: list[str]
    applied: list[AppliedOp]
    errors: list[str]
    stored_from: str = "model"
    """Where ``facts`` came from: ``"model"`` (extract, and update's events), ``"verbatim-facts"``
    (extracted facts ADDed as they are: update gave nothing valid) or ``"raw-turn"`` (nothing was
    extracted; the turn's text was stored), the last two only with a raw fallback."""


class MemoryLoop:
    """Extract / update / answer over one runner, tokenizer and store."""

    def __init__(self, runner: Runner, tokenizer: Tokenizer, store: MemoryStore,
                 chat_format: str, templates: Templates | None = None,
                 embedder: Embedder | None = None, settings: LoopSettings | None = None):
        get_format(chat_format)
        self.runner = runner
        self.tokenizer = tokenizer
        self.store = store
        self.chat_format = chat_format
        self.templates = templates if templates is not None else load_templates()
        self.embedder = embedder
        self.settings = settings if settings is not None else LoopSettings()
        self.stats: dict[Op, OpStats] = {op: OpStats() for op in Op}
        self.last_errors: list[str] = []
        self.last_raw: dict[Op, str] = {}
        self.on_token: Callable[[int, str], None] | None = None
        """Streaming callback for the answer operation (e.g. a chat CLI printing tokens)."""
        missing = [a for a in self.settings.adapters.values()
                   if a is not None and a not in runner.adapters]
        if missing:
            raise ValueError(f"runner has adapters {list(runner.adapters)}, missing {missing}")

    def _run(self, op: Op, messages: list[dict[str, str]]) -> GenerationResult:
        gen = self.settings.generation(op)
        stops = tuple(dict.fromkeys((*gen.stop, *stop_strings(self.chat_format))))
        settings = GenerationSettings(gen.max_new_tokens, gen.temperature, gen.top_p, gen.seed,
                                      stops, gen.eos_ids)
        head = (constant_head(self.chat_format, self.templates[op])
                if self.settings.reuse_prefix else None)
        t0 = time.perf_counter()
        res = generate(self.runner, self.tokenizer, self.settings.adapters[op],
                       render(self.chat_format, messages), settings,
                       self.on_token if op is Op.ANSWER else None, prefix_text=head)
        self.stats[op].add(res, time.perf_counter() - t0)
        self.last_raw[op] = res.text
        return res

    def _fail(self, op: Op, errors: list[str], raw: str) -> None:
        if errors:
            self.stats[op].failures += 1
            log.warning("%s: dropped invalid output items %s; raw output %r", op.value,
                        errors[:5], raw[:300])
        self.last_errors = errors

    def _embed(self, texts: Sequence[str]) -> np.ndarray | None:
        if self.embedder is None or not texts:
            return None
        return np.asarray(self.embedder(list(texts)), dtype=np.float32)

    def extract(self, turns: Sequence[DialogTurn], today: str | None = None) -> ExtractResult:
        """Ask the extract adapter for the facts worth remembering in ``turns``."""
        res = self._run(Op.EXTRACT, extract_messages(self.templates, turns, today))
        parsed = parse_extract(res.text)
        self._fail(Op.EXTRACT, parsed.errors, res.text)
        return parsed

    def retrieve_for_facts(self, facts: Sequence[str], user: str) -> list[Memory]:
        """The union (in retrieval order) of each fact's top-``update_top_k`` memories."""
        vecs = self._embed(facts)
        seen: dict[str, Memory] = {}
        for i, fact in enumerate(facts):
            qv = vecs[i] if vecs is not None else None
            for hit in self.store.search(fact, user, self.settings.update_top_k, qv):
                seen.setdefault(hit.memory.id, hit.memory)
        return list(seen.values())

    def update(self, facts: Sequence[str], user: str, at: str | None = None) -> list[AppliedOp]:
        """Reconcile ``facts`` with ``user``'s memories; return the events applied."""
        if not facts:
            self.last_errors = []
            return []
        old = self.retrieve_for_facts(facts, user)
        id_map = IdMap(m.id for m in old)
        shown = [(id_map.short(m.id), m.text) for m in old]
        res = self._run(Op.UPDATE, update_messages(self.templates, shown, facts))
        parsed = parse_update(res.text, id_map)
        self._fail(Op.UPDATE, parsed.errors, res.text)
        result = self.store.apply(parsed.ops, user, self.embedder, at=at)
        return result.applied

    def answer(self, question: str, user: str | Sequence[str], k: int | None = None) -> Answer:
        """Answer ``question`` from the top-``k`` memories (default ``answer_top_k``) of ``user``,
        or of several users (each searched, hits merged best first: LoCoMo asks about both
        speakers of a conversation)."""
        k = self.settings.answer_top_k if k is None else k
        vecs = self._embed([question])
        users = [user] if isinstance(user, str) else list(user)
        hits = [h for u in users
                for h in self.store.search(question, u, k, vecs[0] if vecs is not None else None)]
        hits.sort(key=lambda h: -h.score)  # stable: ties keep user, then retrieval order
        memories = [h.memory for h in hits[:k]]
        shown = [(m.updated_at, m.text) for m in memories]
        res = self._run(Op.ANSWER, answer_messages(self.templates, question, shown))
        text = res.text.strip()
        if text.lower().startswith("answer:"):
            text = text[len("answer:"):].strip()
        return Answer(text, memories)

    def ingest_turn(self, turns: Sequence[DialogTurn], user: str, at: str | None = None,
                    today: str | None = None) -> IngestResult:
        """Extract facts from ``turns`` and fold them into ``user``'s memories."""
        extracted = self.extract(turns, today=today)
        errors = list(extracted.errors)
        applied = self.update(extracted.facts, user, at=at)
        errors += self.last_errors
        return IngestResult(extracted.facts, applied, errors)

    def stats_dict(self) -> dict[str, dict[str, float]]:
        """Per-operation stats, keyed by operation name."""
        return {op.value: s.as_dict() for op, s in self.stats.items()}
