"""Per-operation metrics of a student against its teacher, on generated text.

Generation goes through the loop's own :func:`~memlora.memory.engine.generate` (greedy, the
chat format's stop strings and eos ids) over a runner that wraps the model being trained, and the
outputs go through the loop's parsers, so a score here means what the loop will see.

* **extract**: ``parse_rate`` (outputs that are a valid ``{"facts": [...]}``), and fact-level
  precision / recall / ``fact_f1`` against the teacher's facts, micro-averaged over examples; a
  predicted fact matches an unused teacher fact when their token F1 is at least
  :data:`FACT_MATCH_F1` (a parsed empty list where the teacher's is empty counts as one match).
* **update**: ``parse_rate`` (outputs with at least one valid operation and no invalid item) and
  ``event_accuracy``: per example, teacher operations matched by a predicted one with the same
  event on the same memory (ADD: any ADD), over the larger of the two counts; averaged.
* **answer**: LoCoMo's token ``f1`` and ``bleu1`` against the teacher's answer (normalised), and
  ``non_empty`` (share of non-empty answers).
* every op: ``eos_rate``, the share of outputs that ended on the end-of-turn token or a stop
  string rather than on the token budget.

The runner keeps the template head's KV for the call (:meth:`ModuleRunner.prefill_with_prefix`),
as the loop's runners do, so each prompt after the first prefills only its tail.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..memory.engine import GenerationSettings, eos_ids_for, generate
from ..memory.chat import stop_strings
from ..memory.metrics import f1_score, score
from ..memory.parsing import Event, parse_extract, parse_update
from ..memory.prompts import Op, Templates, constant_head
from .records import TeacherRecord, prompt_text

FACT_MATCH_F1 = 0.5
PRIMARY = {Op.EXTRACT: "fact_f1", Op.UPDATE: "event_accuracy", Op.ANSWER: "f1"}
"""The metric shown in the progress bar and used in reports, per operation."""


class ModuleRunner:
    """The Runner protocol over an in-memory (PEFT) causal LM: its active adapter is used."""

    def __init__(self, model: torch.nn.Module, max_seq_len: int | None = None):
        self.model = model
        self.adapters = ["student"]
        self.max_seq_len = max_seq_len
        self.device = next(model.parameters()).device
        self._head: tuple[tuple[int, ...], list] | None = None
        self.reset()

    def set_adapter(self, name: str | None) -> None:
        self.reset()

    def reset(self) -> None:
        from transformers import DynamicCache

        self._cache = DynamicCache()

    @torch.no_grad()
    def _step(self, ids: Sequence[int]) -> np.ndarray:
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        out = self.model(input_ids=x, past_key_values=self._cache, use_cache=True)
        self._cache = out.past_key_values
        return out.logits[0].float().cpu().numpy()

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        return self._step(ids)

    def decode(self, token: int) -> np.ndarray:
        return self._step([token])[0]

    def prefill_with_prefix(self, ids: Sequence[int], prefix_len: int) -> tuple[np.ndarray, int]:
        """The engine's prefix reuse: keep the KV of ``ids[:prefix_len]`` and prefill only the rest.

        Valid because a runner lives for one :meth:`Generator.outputs` call, while the weights
        do not change; the kept tensors are never written (a cache update concatenates)."""
        from transformers import DynamicCache

        ids = [int(i) for i in ids]
        prefix_len = min(int(prefix_len), len(ids) - 1)
        head = tuple(ids[:prefix_len])
        if prefix_len <= 0:
            self.reset()
            return self.prefill(ids), 0
        reused = 0
        if self._head is not None and self._head[0] == head:
            self._cache = DynamicCache()
            for i, (k, v) in enumerate(self._head[1]):
                self._cache.update(k, v, i)
            reused = prefix_len
        else:
            self.reset()
            self.prefill(head)
            self._head = (head, [(layer.keys, layer.values) for layer in self._cache.layers])
        return self.prefill(ids[prefix_len:]), reused

    def close(self) -> None:
        self._cache = None


@dataclass(frozen=True)
class Generator:
    """What generating for evaluation needs: tokenizer, templates, chat format, eos ids."""

    tokenizer: Any  # tokenizers.Tokenizer
    templates: Templates
    chat_format: str
    eos_ids: tuple[int, ...]

    @classmethod
    def create(cls, tokenizer, templates: Templates, chat_format: str,
               config_eos: int | list[int] | None) -> "Generator":
        ids = [config_eos] if isinstance(config_eos, int) else list(config_eos or [])
        ids += eos_ids_for(tokenizer, stop_strings(chat_format))
        return cls(tokenizer, templates, chat_format, tuple(dict.fromkeys(ids)))

    def outputs(self, model: torch.nn.Module, records: Sequence[TeacherRecord], max_new_tokens: int,
                max_seq_len: int | None = None) -> list[str]:
        """Greedy outputs for ``records``, as the loop would generate them."""
        return [r.text for r in self.results(model, records, max_new_tokens, max_seq_len)]

    def results(self, model: torch.nn.Module, records: Sequence[TeacherRecord], max_new_tokens: int,
                max_seq_len: int | None = None) -> list:
        """:class:`~memlora.memory.engine.GenerationResult` per record (text, why it stopped)."""
        runner = ModuleRunner(model, max_seq_len)
        settings = GenerationSettings(max_new_tokens=max_new_tokens, stop=tuple(stop_strings(self.chat_format)),
                                      eos_ids=self.eos_ids)
        was_training = model.training
        model.eval()
        try:
            return [generate(runner, self.tokenizer, "student",
                             prompt_text(r, self.templates, self.chat_format), settings,
                             prefix_text=constant_head(self.chat_format, self.templates[r.op]))
                    for r in records]
        finally:
            model.train(was_training)


def _answer_text(text: str) -> str:
    text = text.strip()
    return text[len("answer:"):].strip() if text.lower().startswith("answer:") else text


def extract_metrics(records: Sequence[TeacherRecord], outputs: Sequence[str]) -> dict[str, float]:
    parsed = tp = n_pred = n_gold = 0
    for r, out in zip(records, outputs):
        res = parse_extract(out)
        gold = parse_extract(r.output).facts
        ok = not res.errors
        parsed += ok
        pred = res.facts if ok else []
        if ok and not pred and not gold:
            tp, n_pred, n_gold = tp + 1, n_pred + 1, n_gold + 1
            continue
        free = list(gold)
        for p in pred:
            best = max(free, key=lambda g: f1_score(p, g), default=None)
            if best is not None and f1_score(p, best) >= FACT_MATCH_F1:
                free.remove(best)
                tp += 1
        n_pred += len(pred)
        n_gold += len(gold)
    prec = tp / n_pred if n_pred else 0.0
    rec = tp / n_gold if n_gold else 0.0
    return {"parse_rate": parsed / max(len(records), 1), "fact_precision": prec, "fact_recall": rec,
            "fact_f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}


def _events(ops) -> Counter:
    return Counter((op.event, None if op.event is Event.ADD else op.id) for op in ops)


def update_metrics(records: Sequence[TeacherRecord], outputs: Sequence[str]) -> dict[str, float]:
    parsed, acc = 0, []
    for r, out in zip(records, outputs):
        res = parse_update(out, r.id_map())
        gold = _events(parse_update(r.output, r.id_map()).ops)
        ok = not res.errors and bool(res.ops)
        parsed += ok
        pred = _events(res.ops) if ok else Counter()
        matched = sum((gold & pred).values())
        acc.append(matched / max(sum(gold.values()), sum(pred.values()), 1))
    return {"parse_rate": parsed / max(len(records), 1),
            "event_accuracy": float(np.mean(acc)) if acc else 0.0}


def answer_metrics(records: Sequence[TeacherRecord], outputs: Sequence[str]) -> dict[str, float]:
    scores = [score(_answer_text(o), r.output) for r, o in zip(records, outputs)]
    n = max(len(records), 1)
    return {"f1": sum(s.f1 for s in scores) / n, "bleu1": sum(s.bleu1 for s in scores) / n,
            "non_empty": sum(bool(_answer_text(o)) for o in outputs) / n}


METRICS = {Op.EXTRACT: extract_metrics, Op.UPDATE: update_metrics, Op.ANSWER: answer_metrics}


def evaluate(gen: Generator, model: torch.nn.Module, op: Op, records: Sequence[TeacherRecord],
             max_new_tokens: int, max_seq_len: int | None = None,
             keep_examples: int = 3) -> dict[str, Any]:
    """Generate for ``records`` and score against their teacher outputs (see the module doc)."""
    t0 = time.perf_counter()
    results = gen.results(model, records, max_new_tokens, max_seq_len)
    outs = [r.text for r in results]
    metrics = {k: round(v, 4) for k, v in METRICS[op](records, outs).items()}
    # Ending on the end-of-turn token (not the budget) is part of the format the adapter must learn.
    metrics["eos_rate"] = round(sum(r.stopped_by in ("eos", "stop") for r in results) / max(len(results), 1), 4)
    return {"n": len(records), **metrics, "seconds": round(time.perf_counter() - t0, 2),
            "examples": [{"id": r.id, "teacher": r.output[:300], "student": o[:300]}
                         for r, o in list(zip(records, outs))[:keep_examples]]}
