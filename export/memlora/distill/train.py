"""``memlora distill``: LoRA SFT of one adapter per memory operation on teacher records.

For each operation the base model gets a fresh PEFT LoRA adapter, trained with the loss on the
target tokens only (the prompt, rendered exactly as the runtime renders it, is context). The
validation split gives a loss and the operation's own metric (:mod:`.evaluate`) every
``eval_every`` steps; training stops early after ``patience`` evaluations without a better
validation loss, and the best weights are kept. The held-out split is scored before training
(the zero-initialised adapter, i.e. the base model) and after. Each adapter folder is a plain
PEFT folder that ``memlora export`` takes unchanged, plus ``memlora_training.json`` (data hash,
steps, metrics); ``distill_report.{json,md}`` sit beside the folders.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Sequence

from ..memory.prompts import Op, Templates, load_templates
from ._core import ATTN, MLP, MemloraError, atomic_dir, inspect_model_dir, progress_steps, quiet_transformers
from .evaluate import PRIMARY, Generator, evaluate
from .records import SPLITS, BadLines, TeacherRecord, file_sha256, prompt_text, read_jsonl, target_text

log = logging.getLogger(__name__)
TRAINING_RECORD = "memlora_training.json"
IGNORE = -100


class OpChoice(str, Enum):
    """Which adapter(s) to train."""

    EXTRACT = "extract"
    UPDATE = "update"
    ANSWER = "answer"
    ALL = "all"

    def ops(self) -> list[Op]:
        return list(Op) if self is OpChoice.ALL else [Op(self.value)]


class Device(str, Enum):
    AUTO = "auto"
    """CUDA when present, else CPU."""
    CPU = "cpu"
    CUDA = "cuda"


def _enum(enum: type[Enum], value: Any, flag: str) -> Enum:
    if isinstance(value, enum):
        return value
    try:
        return enum(value)
    except ValueError:
        raise MemloraError(f"unknown {flag} {value!r}",
                           fix=f"use one of: {', '.join(e.value for e in enum)}") from None


@dataclass(frozen=True)
class LoraOptions:
    """The adapter's shape: rank, alpha, target modules, dropout."""

    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ATTN + MLP
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha <= 0:
            raise MemloraError(f"--rank {self.rank} / --alpha {self.alpha} must be positive", fix="e.g. --rank 8 --alpha 16")
        object.__setattr__(self, "targets", tuple(self.targets))
        if not self.targets or any(not t.replace("_", "").isalnum() for t in self.targets):
            raise MemloraError(f"bad --targets {','.join(self.targets)!r}",
                               fix="name linear modules, e.g. q_proj,k_proj,v_proj,o_proj")
        if not 0 <= self.dropout < 1:
            raise MemloraError(f"--dropout {self.dropout} is not in [0, 1)", fix="e.g. --dropout 0.05")


@dataclass(frozen=True)
class TrainOptions:
    """Optimisation and evaluation settings, the same for every operation."""

    learning_rate: float = 2e-3
    steps: int = 300
    batch_size: int = 4
    warmup_steps: int = 10
    weight_decay: float = 0.0
    eval_every: int = 50
    val_examples: int = 64
    """Validation records for the loss (the first ones)."""
    eval_examples: int = 8
    """Validation records generated for the op's metric at each evaluation."""
    heldout_examples: int | None = 32
    """Held-out records scored before and after (``None``: all)."""
    patience: int = 3
    max_seq_len: int | None = None
    """Context limit for prompt + target (default: the model's ``max_position_embeddings``)."""
    max_new_tokens: int | None = None
    """Generation budget in evaluation (default: the longest training target + 16, at most 256)."""
    max_train_examples: int | None = None
    seed: int = 0
    device: Device = Device.AUTO
    threads: int | None = 1
    """CPU threads for torch (``None``: torch's default). One is fastest for tiny models and on a
    shared machine (measured here: 12x faster generation than two threads on a loaded 2-core box)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", _enum(Device, self.device, "--device"))
        if not (0 < self.learning_rate < 1 and math.isfinite(self.learning_rate)):
            raise MemloraError(f"--learning-rate {self.learning_rate} is out of range", fix="e.g. --learning-rate 2e-3")
        for name in ("steps", "batch_size", "eval_every", "val_examples", "eval_examples", "patience"):
            if getattr(self, name) < 1:
                raise MemloraError(f"--{name.replace('_', '-')} must be >= 1", fix="pass a positive number")
        for name in ("heldout_examples", "max_seq_len", "max_new_tokens", "max_train_examples", "threads"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise MemloraError(f"--{name.replace('_', '-')} must be >= 1", fix="pass a positive number or leave it out")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise MemloraError("--warmup-steps and --weight-decay must be >= 0", fix="pass 0 or more")


@dataclass(frozen=True)
class DistillConfig:
    """One ``memlora distill`` run: model, teacher folder, output folder, what and how to train."""

    model: Path
    teacher: Path
    out: Path
    op: OpChoice = OpChoice.ALL
    lora: LoraOptions = field(default_factory=LoraOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    bad_lines: BadLines = BadLines.FAIL
    force: bool = False
    templates: Path | None = None
    """Prompt templates folder (default: memlora's own, which ``memlora export`` ships in the
    bundle's ``prompts/``); train with the templates the runtime will load."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", _enum(OpChoice, self.op, "--op"))
        object.__setattr__(self, "bad_lines", _enum(BadLines, self.bad_lines, "--bad-lines"))
        for name in ("model", "teacher", "out"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if not self.teacher.is_dir():
            raise MemloraError("teacher folder not found", self.teacher,
                               "run `memlora teacher locomo DATA.zip --out DIR` and pass --teacher DIR")
        for split in SPLITS:
            if not (self.teacher / f"{split}.jsonl").is_file():
                raise MemloraError(f"teacher folder has no {split}.jsonl", self.teacher,
                                   "write train.jsonl, validation.jsonl and heldout.jsonl (memlora teacher does)")


# -- data ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Example:
    record: TeacherRecord
    ids: list[int]
    n_prompt: int


@dataclass
class OpData:
    """One operation's examples per split, and what was left out."""

    train: list[Example]
    validation: list[Example]
    heldout: list[TeacherRecord]
    dropped_over_context: dict[str, int]
    skipped_lines: dict[str, list[tuple[int, str]]]


def _encode(record: TeacherRecord, tokenizer, templates: Templates, chat_format: str) -> tuple[list[int], list[int]]:
    prompt = tokenizer.encode(prompt_text(record, templates, chat_format), add_special_tokens=False).ids
    target = tokenizer.encode(target_text(record, chat_format), add_special_tokens=False).ids
    return prompt, target


def load_split(path: Path, op: Op, tokenizer, templates: Templates, chat_format: str, max_seq_len: int,
               bad_lines: BadLines, line_numbers: bool = True) -> tuple[list[Example], int, list[tuple[int, str]]]:
    """Examples of ``op`` in one teacher file; returns (examples, dropped over context, skipped lines).

    A target that alone does not fit in ``max_seq_len`` is bad input (fatal, or skipped with
    ``BadLines.SKIP``); a prompt + target over the limit is dropped and counted."""
    records, report = read_jsonl(path, bad_lines)
    out, over = [], 0
    skipped = list(report.skipped)
    lines = _op_lines(path, records)
    for rec in records:
        if rec.op is not op:
            continue
        prompt, target = _encode(rec, tokenizer, templates, chat_format)
        if len(target) >= max_seq_len:
            msg = (f"line {lines.get(rec.id, '?')}: {op.value} target of {len(target)} tokens is longer than the "
                   f"context ({max_seq_len} tokens)")
            if bad_lines is BadLines.FAIL:
                raise MemloraError(msg, path, "shorten or drop that record, raise --max-seq-len, or pass --bad-lines skip")
            skipped.append((lines.get(rec.id, 0), msg.split(": ", 1)[1]))
            continue
        if len(prompt) + len(target) > max_seq_len:
            over += 1
            continue
        out.append(Example(rec, prompt + target, len(prompt)))
    return out, over, skipped


def _op_lines(path: Path, records: Sequence[TeacherRecord]) -> dict[str, int]:
    """Record id -> line number (for messages); ids are unique in memlora's own teacher files."""
    ids = {r.id for r in records if r.id}
    found: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rid = json.loads(line).get("id")
            except (json.JSONDecodeError, AttributeError):
                continue
            if rid in ids:
                found.setdefault(rid, n)
    return found


def load_op_data(cfg: DistillConfig, op: Op, tokenizer, templates: Templates, chat_format: str,
                 max_seq_len: int) -> OpData:
    parts, over, skipped = {}, {}, {}
    for split in SPLITS:
        path = cfg.teacher / f"{split}.jsonl"
        exs, over[split], skipped[split] = load_split(path, op, tokenizer, templates, chat_format, max_seq_len,
                                                      cfg.bad_lines)
        if not exs:
            raise MemloraError(f"no usable {op.value} records in {split}.jsonl"
                               + (f" ({over[split]} longer than the {max_seq_len}-token context)" if over[split] else ""),
                               path, f"add {op.value} records to every split, or train another --op")
        parts[split] = exs
    train = parts["train"]
    if cfg.train.max_train_examples is not None:
        train = random.Random(cfg.train.seed).sample(train, min(len(train), cfg.train.max_train_examples))
    return OpData(train, parts["validation"], [e.record for e in parts["heldout"]], over, skipped)


# -- training ------------------------------------------------------------------------------------

def _device(choice: Device):
    import torch

    if choice is Device.CUDA and not torch.cuda.is_available():
        raise MemloraError("--device cuda but no CUDA device is available", fix="use --device cpu or auto")
    if choice is Device.CPU or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def _batch(examples: Sequence[Example], pad_id: int, device):
    import torch

    n = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        t = torch.tensor(e.ids)
        ids[i, : len(t)] = t
        mask[i, : len(t)] = 1
        labels[i, e.n_prompt: len(t)] = t[e.n_prompt:]
    return ids.to(device), mask.to(device), labels.to(device)


def _loss(model, examples: Sequence[Example], pad_id: int, device):
    """Mean cross-entropy over the target tokens of ``examples``, and the token count."""
    import torch.nn.functional as F

    ids, mask, labels = _batch(examples, pad_id, device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    tgt = labels[:, 1:]
    n = int((tgt != IGNORE).sum())
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=IGNORE,
                           reduction="sum") / max(n, 1)
    return loss, n


def validation_loss(model, examples: Sequence[Example], pad_id: int, device, batch_size: int) -> float:
    """Token-weighted mean target loss over ``examples``."""
    import torch

    total = tokens = 0.0
    was = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            loss, n = _loss(model, examples[i: i + batch_size], pad_id, device)
            total += float(loss) * n
            tokens += n
    model.train(was)
    return total / max(tokens, 1)


def _lr(step: int, opts: TrainOptions) -> float:
    if step < opts.warmup_steps:
        return opts.learning_rate * (step + 1) / opts.warmup_steps
    frac = (step - opts.warmup_steps) / max(opts.steps - opts.warmup_steps, 1)
    return opts.learning_rate * (1 - 0.9 * min(frac, 1.0))


def _pad_id(config: dict) -> int:
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        v = config.get(key)
        v = v[0] if isinstance(v, list) and v else v
        if isinstance(v, int):
            return v
    return 0


def train_op(cfg: DistillConfig, op: Op, info, tokenizer, templates: Templates, gen: Generator,
             out_dir: Path, max_seq_len: int, progress, data_hash: str) -> dict[str, Any]:
    """Train, evaluate and save one operation's adapter into ``out_dir``; return its record."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    opts = cfg.train
    data = load_op_data(cfg, op, tokenizer, templates, gen.chat_format, max_seq_len)
    random.seed(opts.seed)
    torch.manual_seed(opts.seed)
    device = _device(opts.device)
    base = AutoModelForCausalLM.from_pretrained(info.path, dtype=torch.float32,
                                                attn_implementation=info.family.attn_implementation)
    missing = [t for t in cfg.lora.targets if not any(n.endswith("." + t) for n, _ in base.named_modules())]
    if missing:
        raise MemloraError(f"the model has no module(s) {', '.join(missing)} to adapt", info.path,
                           "pass --targets with module names of this model, e.g. q_proj,v_proj")
    model = get_peft_model(base, LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha,
                                            target_modules=list(cfg.lora.targets), lora_dropout=cfg.lora.dropout,
                                            bias="none", task_type="CAUSAL_LM")).to(device)
    pad = _pad_id(info.config)
    max_new = opts.max_new_tokens or min(256, max(len(e.ids) - e.n_prompt for e in data.train) + 16)
    val = data.validation[: opts.val_examples]
    val_gen = [e.record for e in data.validation[: opts.eval_examples]]
    heldout = data.heldout[: opts.heldout_examples]

    def held() -> dict[str, Any]:
        return evaluate(gen, model, op, heldout, max_new, max_seq_len)

    task = progress.add_task(f"{op.value}: held-out before", total=opts.steps)
    before = held()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=opts.learning_rate, weight_decay=opts.weight_decay)
    rng = random.Random(opts.seed)
    order: list[int] = []
    history: list[dict[str, Any]] = []
    best = {"val_loss": math.inf, "step": 0, "state": None}
    bad_evals, stopped_early = 0, False
    t0 = time.perf_counter()
    model.train()
    step = 0
    running = None

    def do_eval(at: int) -> None:
        nonlocal bad_evals
        vl = validation_loss(model, val, pad, device, opts.batch_size)
        m = evaluate(gen, model, op, val_gen, max_new, max_seq_len, keep_examples=0)
        row = {"step": at, "train_loss": round(running, 4) if running is not None else None,
               "val_loss": round(vl, 4), "val_" + PRIMARY[op]: m[PRIMARY[op]]}
        if "parse_rate" in m:
            row["val_parse_rate"] = m["parse_rate"]
        history.append(row)
        if vl < best["val_loss"] - 1e-4:
            best.update(val_loss=vl, step=at,
                        state={k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad})
            bad_evals = 0
        else:
            bad_evals += 1

    do_eval(0)
    for step in range(1, opts.steps + 1):
        if len(order) < opts.batch_size:
            perm = list(range(len(data.train)))
            rng.shuffle(perm)
            order += perm
        batch = [data.train[i] for i in order[: opts.batch_size]]
        del order[: opts.batch_size]
        for g in optim.param_groups:
            g["lr"] = _lr(step - 1, opts)
        loss, _ = _loss(model, batch, pad, device)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        value = float(loss.detach())
        running = value if running is None else 0.9 * running + 0.1 * value
        desc = f"{op.value}: loss {running:.3f}"
        if history:
            h = history[-1]
            desc += f" | val {h['val_loss']:.3f} {PRIMARY[op]} {h['val_' + PRIMARY[op]]:.2f}"
        progress.update(task, completed=step, description=desc)
        if step % opts.eval_every == 0 or step == opts.steps:
            do_eval(step)
            if bad_evals >= opts.patience:
                stopped_early = True
                break
    train_s = time.perf_counter() - t0
    if best["state"] is not None:
        with torch.no_grad():
            for k, v in model.named_parameters():
                if k in best["state"]:
                    v.copy_(best["state"][k])
    progress.update(task, description=f"{op.value}: held-out after")
    after = held()
    progress.update(task, description=f"{op.value}: done, best val loss {best['val_loss']:.3f} at step {best['step']}")
    model.to("cpu").save_pretrained(out_dir)
    record = {
        "op": op.value, "base_model": str(info.path), "base_config_sha256": info.config_sha256,
        "chat_format": gen.chat_format, "teacher": str(cfg.teacher), "data_sha256": data_hash,
        "examples": {"train": len(data.train), "validation": len(data.validation), "heldout": len(data.heldout),
                     "dropped_over_context": data.dropped_over_context,
                     "skipped_lines": {k: len(v) for k, v in data.skipped_lines.items()}},
        "templates": str(cfg.templates) if cfg.templates else "memlora",
        "lora": asdict(cfg.lora), "train": asdict(cfg.train) | {"device": str(device)},
        "max_seq_len": max_seq_len, "max_new_tokens": max_new,
        "steps_run": step, "best_step": best["step"], "best_val_loss": round(best["val_loss"], 4),
        "stopped_early": stopped_early, "train_seconds": round(train_s, 1),
        "history": history, "heldout": {"before": before, "after": after},
    }
    (out_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return record


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
            report["ops"][op.value] = train_op(cfg, op, info, tokenizer, templates, gen, tmp / op.value,
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
