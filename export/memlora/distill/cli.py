"""Typer commands for ``memlora teacher locomo`` and ``memlora distill`` (thin: flags -> library).

Mount into the main CLI with ``register(app)``, or by hand:
``app.add_typer(teacher_app, name="teacher")`` and ``app.command("distill")(distill_command)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ._core import MemloraError

console = Console(stderr=True)
teacher_app = typer.Typer(help="Make teacher data (JSONL) for memlora distill.", no_args_is_help=True,
                          add_completion=False, pretty_exceptions_enable=False)


def _fail(e: MemloraError) -> None:
    console.print(f"[red]error:[/red] {e.one_line()}", highlight=False, soft_wrap=True)
    raise typer.Exit(e.exit_code)


@teacher_app.command("locomo")
def teacher_locomo_command(
    data: Path = typer.Argument(..., help="LoCoMo file: locomo10.zip (or locomo10.json)."),
    out: Path = typer.Option(..., "--out", "-o", help="Teacher folder to write."),
    val: int = typer.Option(1, help="Conversations for validation (taken from the end, before --heldout)."),
    heldout: int = typer.Option(1, help="Conversations held out for evaluation (the last ones)."),
    adversarial: bool = typer.Option(True, help="Keep category-5 questions (answer: 'Not mentioned in the conversation')."),
    empty_extract_share: float = typer.Option(0.2, help="Share of fact-less turns kept as {\"facts\": []} examples."),
    max_target_chars: int = typer.Option(600, help="Drop teacher outputs longer than this."),
    seed: int = typer.Option(0, help="Seed for choosing fact-less turns."),
    force: bool = typer.Option(False, help="Replace an existing non-empty --out."),
) -> None:
    """LoCoMo's annotations as teacher records: extract (observations), update (rules), answer (qa)."""
    from .teacher import TeacherSettings, teacher_locomo

    try:
        s = TeacherSettings(val_conversations=val, heldout_conversations=heldout, include_adversarial=adversarial,
                            empty_extract_share=empty_extract_share, max_target_chars=max_target_chars, seed=seed)
        summary = teacher_locomo(data, out, s, force=force)
    except MemloraError as e:
        _fail(e)
    for split, info in summary["splits"].items():
        parts = []
        for op in ("extract", "update", "answer"):
            dropped = ", ".join(f"{k} {v}" for k, v in info[op]["dropped"].items()) or "none dropped"
            parts.append(f"{op} {info[op]['kept']} ({dropped})")
        typer.echo(f"{split} [{', '.join(info['conversations'])}]: " + "; ".join(parts))
    typer.echo(f"wrote {out}")


def distill_command(
    model: Path = typer.Option(..., "--model", help="Hugging Face model folder (e.g. from `memlora preset`)."),
    teacher: Path = typer.Option(..., "--teacher", help="Teacher folder (train/validation/heldout.jsonl)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the adapter folders and the report."),
    op: str = typer.Option("all", help="extract, update, answer or all."),
    rank: int = typer.Option(8, help="LoRA rank."),
    alpha: int = typer.Option(16, help="LoRA alpha."),
    targets: str = typer.Option("q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                                help="Comma-separated linear modules to adapt."),
    dropout: float = typer.Option(0.0, help="LoRA dropout."),
    learning_rate: float = typer.Option(2e-3, help="Peak learning rate (warmup, then linear decay to 10%)."),
    steps: int = typer.Option(300, help="Optimizer steps per adapter."),
    batch_size: int = typer.Option(4, help="Examples per step."),
    eval_every: int = typer.Option(50, help="Steps between validation evaluations."),
    patience: int = typer.Option(3, help="Evaluations without a better validation loss before stopping."),
    eval_examples: int = typer.Option(8, help="Validation examples generated for the op metric per evaluation."),
    heldout_examples: int = typer.Option(32, help="Held-out examples scored before and after (0: all)."),
    max_seq_len: Optional[int] = typer.Option(None, help="Context for prompt + target (default: the model's)."),
    max_train_examples: Optional[int] = typer.Option(None, help="Use at most this many training examples."),
    share_prefix: bool = typer.Option(True, help="Compute the template head the examples share once per batch "
                                                 "(the same loss; several times faster)."),
    seed: int = typer.Option(0, help="Seed for LoRA init and batch order."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
    threads: int = typer.Option(1, help="CPU threads for torch (0: torch's default)."),
    bad_lines: str = typer.Option("fail", help="Malformed teacher lines: fail (with the line number) or skip."),
    force: bool = typer.Option(False, help="Replace an existing non-empty --out."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Train one LoRA adapter per memory operation on teacher records (PEFT folders `memlora export` takes)."""
    from .train import DistillConfig, LoraOptions, TrainOptions, distill

    try:
        cfg = DistillConfig(
            model=model, teacher=teacher, out=out, op=op, bad_lines=bad_lines, force=force,
            lora=LoraOptions(rank=rank, alpha=alpha, targets=tuple(t.strip() for t in targets.split(",") if t.strip()),
                             dropout=dropout),
            train=TrainOptions(learning_rate=learning_rate, steps=steps, batch_size=batch_size, eval_every=eval_every,
                               patience=patience, eval_examples=eval_examples,
                               heldout_examples=heldout_examples or None, max_seq_len=max_seq_len,
                               max_train_examples=max_train_examples, share_prefix=share_prefix, seed=seed,
                               device=device,
                               threads=threads or None))
        report = distill(cfg, show_progress=not quiet)
    except MemloraError as e:
        _fail(e)
    typer.echo((out / "distill_report.md").read_text())


def preset_distilled_command(
    name: str = typer.Argument("tiny-qwen2-distilled", help="Distilled preset name."),
    out: Path = typer.Argument(..., help="Folder to write model/, teacher/ and adapters/ into."),
    data: Path = typer.Option(..., "--data", help="LoCoMo file (locomo10.zip); read, never copied."),
    steps: Optional[int] = typer.Option(None, help="Override the preset's steps per adapter."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Write a distilled preset: the base model plus three adapters trained from the LoCoMo teacher."""
    from .preset import write_distilled_preset

    try:
        model_dir, adapters, report = write_distilled_preset(name, out, data, steps=steps, show_progress=not quiet)
    except MemloraError as e:
        _fail(e)
    typer.echo(f"model: {model_dir}")
    for n, p in adapters.items():
        typer.echo(f"adapter {n}: {p}")
    typer.echo((out / "adapters" / "distill_report.md").read_text())


def register(app: typer.Typer) -> None:
    """Mount ``teacher`` (with ``locomo``) and ``distill`` on the main ``memlora`` app."""
    app.add_typer(teacher_app, name="teacher")
    app.command("distill")(distill_command)


app = typer.Typer(help="memlora teacher / distill (mounted into the main CLI by register()).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
register(app)
app.command("preset-distilled")(preset_distilled_command)

if __name__ == "__main__":
    app()
