"""The distilled preset's base warm-up: a short LM pass over the train split's dialogue."""
import json
import shutil

import pytest

from distill_fixtures import write_locomo_zip
from memlora.core.errors import MemloraError
from memlora.distill.teacher import TeacherSettings, read_locomo, split_conversations
from memlora.distill.warmup import WARMUP_RECORD, WarmupOptions, dialogue_ids, warm_base


def _splits(tmp_path):
    items = read_locomo(write_locomo_zip(tmp_path / "locomo.zip", n=6))
    s = split_conversations(items, TeacherSettings())
    return [i.conversation for i in s["train"]], [i.conversation for i in s["validation"]]


def test_warm_up_lowers_dialogue_loss_and_rewrites_only_the_weights(tmp_path, preset_dir):
    src, _ = preset_dir("tiny-qwen2")
    model_dir = tmp_path / "model"
    shutil.copytree(src, model_dir)
    train, val = _splits(tmp_path)
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    rec = warm_base(model_dir, train, val, WarmupOptions(steps=60, copy_steps=10, seq_len=32, batch_size=4), show_progress=False)
    # the validation conversations were never trained on: the drop is what dialogue in general taught
    assert rec["after"]["loss"] < rec["before"]["loss"] - 1.0, rec
    assert rec["conversations"]["train"] == [c.sample_id for c in train]
    assert not set(rec["conversations"]["train"]) & set(rec["conversations"]["validation"])
    assert (model_dir / "model.safetensors").read_bytes() != before["model.safetensors"]
    for name in ("config.json", "tokenizer.json"):  # the shape and the vocabulary stay as they were
        assert (model_dir / name).read_bytes() == before[name]
    assert json.loads((model_dir / WARMUP_RECORD).read_text())["after"] == rec["after"]
    assert not list(tmp_path.glob(".model.warm*"))


def test_dialogue_ids_are_speaker_lines_one_session_a_document():
    from memlora.memory.locomo import Conversation, Session, Turn

    conv = Conversation("c", "A", "B", [Session(1, "d", [Turn("A", "D1:1", "hi"), Turn("B", "D1:2", "yo")]),
                                         Session(2, "d", [Turn("A", "D2:1", "bye")])], [])
    seen = []
    ids = dialogue_ids([conv], lambda t: seen.append(t) or [len(t)], eos_id=0)
    assert seen == ["A: hi\nB: yo", "A: bye"] and ids == [11, 0, 6, 0]


def test_too_little_dialogue_is_one_error(tmp_path, preset_dir):
    src, _ = preset_dir("tiny-qwen2")
    train, val = _splits(tmp_path)
    with pytest.raises(MemloraError, match="too little dialogue"):
        warm_base(src, train[:1], val, WarmupOptions(steps=1, copy_steps=0, seq_len=4096), show_progress=False)
    with pytest.raises(MemloraError, match="copy_share"):
        WarmupOptions(copy_share=2.0)
    with pytest.raises(MemloraError, match="copy_steps <= steps"):
        WarmupOptions(steps=10, copy_steps=20)


def test_preset_on_too_little_dialogue_is_one_line_and_leaves_nothing(tmp_path):
    """The fixture's dialogue is far below the preset's warm-up window: one error line, exit 2,
    and no half-written preset (a base without adapters) left in the output folder."""
    from typer.testing import CliRunner

    from memlora.cli import app

    out, data = tmp_path / "out", write_locomo_zip(tmp_path / "l.zip", n=4)
    res = CliRunner().invoke(app, ["preset", "tiny-qwen2-distilled", str(out), "--data", str(data), "--quiet"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith(f"error: {data}: too little dialogue") and " -- fix: " in lines[0]
    assert out.is_dir() and not any(out.iterdir())
