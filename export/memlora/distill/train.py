"""``memlora distill``: LoRA SFT of one adapter per memory operation on teacher records.

For each operation the base model gets a fresh PEFT LoRA adapter, trained with the loss on the
target tokens only (the prompt, rendered exactly as the runtime renders it, is context). The
validation split gives a loss and the operation's own metric (:mod:`.evaluate`) every
``eval_every`` steps; training stops early after ``patience`` evaluations without better
weights (a higher validation parse rate where the op has one, else the same rate and a lower
validation loss), and the best weights are kept. The held-out split is scored before training
(the zero-initialised adapter, i.e. the base model) and after. Each adapter folder is a plain
PEFT folder that ``memlora export`` takes unchanged, plus ``memlora_training.json`` (data hash,
steps, metrics); ``distill_report.{json,md}`` sit beside the folders.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from ..memory.prompts import load_templates
from ._core import MemloraError, atomic_dir, inspect_model_dir, progress_steps, quiet_transformers
from .evaluate import Generator
from .options import Device, DistillConfig, LoraOptions, OpChoice, TrainOptions
from .records import SPLITS, file_sha256
from .train_data import IGNORE, Example, OpData, load_op_data, load_split
from .train_loop import TRAINING_RECORD, train_op, validation_loss

__all__ = ["IGNORE", "TRAINING_RECORD", "Device", "DistillConfig", "Example", "LoraOptions", "OpChoice", "OpData",
           "TrainOptions", "distill", "load_op_data", "load_split", "markdown_report", "train_op", "validation_loss"]
log = logging.getLogger(__name__)


def distill(cfg: DistillConfig, show_progress: bool = True) -> dict[str, Any]:
    """Train the adapter(s) ``cfg.op`` names; write ``cfg.out/<op>/`` and ``distill_report.{json,md}``.

    Returns the report: per operation its training record (before/after held-out metrics)."""
    import torch
    from tokenizers import Tokenizer

    quiet_transformers()
    info = inspect_model_dir(cfg.model)
    tokenizer = Tokenizer.from_file(str(info.tokenizer_file))
    try:
        templates = load_templates(cfg.templates)
    except (OSError, ValueError) as e:
        raise MemloraError(f"bad prompt templates: {e}", cfg.templates, "pass a folder with extract/update/answer.txt") from None
    gen = Generator.create(tokenizer, templates, info.family.chat_format, info.config.get("eos_token_id"))
    context = int(info.config.get("max_position_embeddings") or 2048)
    max_seq_len = cfg.train.max_seq_len or context
    if max_seq_len > context:
        raise MemloraError(f"--max-seq-len {max_seq_len} exceeds the model's {context} positions", cfg.model,
                           f"pass --max-seq-len {context} or less")
    data_hash = file_sha256([cfg.teacher / f"{s}.jsonl" for s in SPLITS])
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    threads = torch.get_num_threads()
    report: dict[str, Any] = {"model": str(cfg.model), "teacher": str(cfg.teacher), "data_sha256": data_hash,
                              "ops": {}}
    t0 = time.perf_counter()
    with atomic_dir(cfg.out, cfg.force) as tmp, progress_steps(show_progress) as progress:
        for op in cfg.op.ops():
            report["ops"][op.value] = train_op(cfg.for_op(op), op, info, tokenizer, templates, gen, tmp / op.value,
                                               max_seq_len, progress, data_hash)
        report["total_seconds"] = round(time.perf_counter() - t0, 1)
        report["torch_threads"] = threads
        (tmp / "distill_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        (tmp / "distill_report.md").write_text(markdown_report(report))
    return report


def markdown_report(report: dict[str, Any]) -> str:
    """Before/after held-out metrics and data counts per operation, as Markdown."""
    lines = [f"# memlora distill: {report['model']}", "",
             f"Teacher `{report['teacher']}` (data sha256 `{report['data_sha256'][:16]}`), "
             f"{report.get('total_seconds', '?')} s in all.", "",
             "| op | train / val / held-out | steps (best) | train s | metric | before | after |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for op, rec in report["ops"].items():
        ex = rec["examples"]
        b, a = rec["heldout"]["before"], rec["heldout"]["after"]
        keys = [k for k in b if k not in ("n", "seconds", "examples")]
        for i, k in enumerate(keys):
            head = (f"| {op} | {ex['train']} / {ex['validation']} / {ex['heldout']} (scored {b['n']}) | "
                    f"{rec['steps_run']} ({rec['best_step']}) | {rec['train_seconds']} |") if i == 0 else "| | | | |"
            lines.append(f"{head} {k} | {b[k]:.3f} | {a[k]:.3f} |")
    lines += ["", "Extract and update are scored against the teacher's facts and events; answer against the "
              "teacher's answer (LoCoMo token F1 / BLEU-1). `before` is the base model (a fresh LoRA adapter "
              "is a no-op).", ""]
    return "\n".join(lines)
