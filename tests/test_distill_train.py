"""memlora distill on a tiny model and a few dozen synthetic teacher records: the loss falls, extract
outputs go from unparseable to parseable, the adapters load in PEFT and export with parity; bad input
gets one-line errors."""
import json

import pytest

from distill_fixtures import write_locomo_zip, write_short_templates
from memlora.distill.records import TeacherRecord, write_jsonl
from memlora.distill.teacher import teacher_locomo
from memlora.distill.train import TRAINING_RECORD, DistillConfig, LoraOptions, TrainOptions, distill
from memlora.core.errors import MemloraError
from memlora.memory import Op

FAST = TrainOptions(learning_rate=5e-3, steps=120, batch_size=4, eval_every=40, eval_examples=4,
                    heldout_examples=None, patience=3, seed=0)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, preset_dir):
    root = tmp_path_factory.mktemp("distill")
    model_dir, _ = preset_dir("tiny-qwen2")
    teacher_locomo(write_locomo_zip(root / "locomo.zip"), root / "teacher")
    cfg = DistillConfig(model=model_dir, teacher=root / "teacher", out=root / "adapters", op="all",
                        lora=LoraOptions(rank=4, alpha=8), train=FAST, templates=write_short_templates(root / "prompts"))
    return model_dir, root, distill(cfg, show_progress=False)


def test_loss_falls_and_extract_learns_the_format(distilled):
    _, root, report = distilled
    summary = {op: (r["history"], r["heldout"]["before"], r["heldout"]["after"]) for op, r in report["ops"].items()}
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    for op, rec in report["ops"].items():
        losses = [h["val_loss"] for h in rec["history"]]
        assert rec["history"][0]["step"] == 0 and min(losses[1:]) < losses[0] * 0.75, (op, losses)
        assert rec["examples"]["train"] >= 3  # one training conversation: 3 questions, ~10 turns
    ex = report["ops"]["extract"]["heldout"]
    assert ex["before"]["parse_rate"] <= 0.1 and ex["after"]["parse_rate"] >= 0.6, ex
    up = report["ops"]["update"]["heldout"]
    assert up["after"]["parse_rate"] >= up["before"]["parse_rate"]  # 120 steps teach extract, not yet update
    md = (root / "adapters" / "distill_report.md").read_text()
    assert "| extract |" in md and "parse_rate" in md


def test_training_record(distilled):
    _, root, report = distilled
    rec = json.loads((root / "adapters" / "extract" / TRAINING_RECORD).read_text())
    assert rec["data_sha256"] == report["data_sha256"] and len(rec["data_sha256"]) == 64
    assert rec["steps_run"] >= rec["best_step"] > 0 and rec["history"] and rec["lora"]["rank"] == 4
    assert set(rec["heldout"]) == {"before", "after"}


def test_adapters_load_in_peft_and_change_the_output(distilled):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model_dir, root, _ = distilled
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    x = torch.tensor([[5, 6, 7, 8]])
    ref = base(input_ids=x).logits
    peft = PeftModel.from_pretrained(base, str(root / "adapters" / "extract"))
    assert not torch.allclose(peft(input_ids=x).logits, ref, atol=1e-4)


def test_adapters_export_with_fp32_parity(distilled, tmp_path):
    from memlora.export import ExportOptions, run_export

    model_dir, root, _ = distilled
    adapters = {op.value: root / "adapters" / op.value for op in Op}
    manifest = run_export(ExportOptions(out=tmp_path / "bundle", model=str(model_dir), adapters=adapters),
                          show_progress=False)
    parity = [a["parity"] for a in manifest["artifacts"]]
    assert parity and all(p["passed"] for p in parity)


def _teacher(tmp_path, train, validation=None, heldout=None):
    good = TeacherRecord("a", Op.ANSWER, {"memories": [{"timestamp": "d", "text": "Ann likes tea"}],
                                          "question": "What does Ann like?"}, "tea")
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, recs in (("train", train), ("validation", validation), ("heldout", heldout)):
        write_jsonl(tmp_path / f"{name}.jsonl", [good] if recs is None else recs)
    return tmp_path


def _cfg(model_dir, teacher, out, **kw):
    return DistillConfig(model=model_dir, teacher=teacher, out=out, op=kw.pop("op", "answer"),
                         train=TrainOptions(steps=2, eval_every=1, heldout_examples=1, **kw))


def test_bad_input_is_one_line(tmp_path, preset_dir):
    model_dir, _ = preset_dir("tiny-qwen2")
    t = _teacher(tmp_path / "t", None)
    with (t / "train.jsonl").open("a") as f:
        f.write('{"op": "answer", "vars": \n')
    with pytest.raises(MemloraError, match=r"train.jsonl: line 2: not valid JSON.* -- fix: .*--bad-lines skip"):
        distill(_cfg(model_dir, t, tmp_path / "o1"), show_progress=False)
    with pytest.raises(MemloraError, match="unknown --op 'summarise'"):
        _cfg(model_dir, t, tmp_path / "o2", op="summarise")
    with pytest.raises(MemloraError, match="no usable extract records in train.jsonl"):
        distill(_cfg(model_dir, _teacher(tmp_path / "t2", None), tmp_path / "o3", op="extract"), show_progress=False)
    with pytest.raises(MemloraError, match="no usable answer records in validation.jsonl"):
        distill(_cfg(model_dir, _teacher(tmp_path / "t5", None, validation=[]), tmp_path / "o5"), show_progress=False)
    with pytest.raises(MemloraError, match="must be >= 1"):
        TrainOptions(steps=0)
    long = TeacherRecord("long", Op.ANSWER, {"memories": [], "question": "q?"}, "word " * 400)
    with pytest.raises(MemloraError, match=r"line 1: answer target of \d+ tokens is longer than the context \(64"):
        distill(_cfg(model_dir, _teacher(tmp_path / "t3", [long]), tmp_path / "o4", max_seq_len=64),
                show_progress=False)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o4").exists()


def test_cli_error_is_one_line(tmp_path, preset_dir):
    from typer.testing import CliRunner

    from memlora.distill.cli import app

    model_dir, _ = preset_dir("tiny-qwen2")
    t = _teacher(tmp_path / "t", None)
    (t / "validation.jsonl").write_text(json.dumps({"op": "summarise", "vars": {}, "output": ""}) + "\n")
    res = CliRunner().invoke(app, ["distill", "--model", str(model_dir), "--teacher", str(t), "--out",
                                   str(tmp_path / "o"), "--op", "answer", "--steps", "1", "--quiet"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "line 1: unknown op 'summarise'" in lines[0]
    assert " -- fix: " in lines[0]


def test_preset_config_overrides_keep_the_weights(tmp_path, preset_dir):
    """A longer context is the same weights byte for byte; the distilled preset's smaller
    initializer_range draws the same shapes at a smaller scale (its warm-up needs it)."""
    from memlora.distill.preset import DISTILLED_PRESETS
    from memlora.sources.presets import write_preset

    plain, _ = preset_dir("tiny-qwen2")
    long, _ = write_preset("tiny-qwen2", tmp_path / "long", {"max_position_embeddings": 4096})
    assert json.loads((long / "config.json").read_text())["max_position_embeddings"] == 4096
    assert json.loads((plain / "config.json").read_text())["max_position_embeddings"] == 2048
    assert (long / "model.safetensors").read_bytes() == (plain / "model.safetensors").read_bytes()
    assert json.loads((long / "memlora_preset.json").read_text())["config_overrides"] == {"max_position_embeddings": 4096}
    p = DISTILLED_PRESETS["tiny-qwen2-distilled"]
    assert p.base_config == {"max_position_embeddings": 4096, "initializer_range": 0.02} and p.warmup.steps > 0
    small, _ = write_preset(p.base, tmp_path / "small", p.base_config)
    assert (small / "model.safetensors").read_bytes() != (plain / "model.safetensors").read_bytes()


def test_per_op_training_options(tmp_path, preset_dir):
    model_dir, _ = preset_dir("tiny-qwen2")
    t = _teacher(tmp_path / "t", None)
    cfg = DistillConfig(model=model_dir, teacher=t, out=tmp_path / "o", op_train={"update": TrainOptions(steps=7)})
    assert cfg.for_op(Op.UPDATE).train.steps == 7 and cfg.for_op(Op.EXTRACT).train == cfg.train
    with pytest.raises(MemloraError, match="unknown op.* summarise"):
        DistillConfig(model=model_dir, teacher=t, out=tmp_path / "o", op_train={"summarise": TrainOptions()})
