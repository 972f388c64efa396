"""Teacher data: the JSONL format, the LoCoMo teacher (extract / update / answer), filtering, bad input."""
import json

import pytest

from distill_fixtures import write_locomo_zip
from memlora.distill.records import (BadLines, TeacherRecord, filter_records, prompt_text, read_jsonl,
                                     target_text, write_jsonl)
from memlora.distill.teacher import ADVERSARIAL_ANSWER, TeacherSettings, decide, teacher_locomo
from memlora.core.errors import MemloraError
from memlora.memory import Op, load_templates
from memlora.memory.parsing import parse_extract, parse_update
from memlora.memory.prompts import DialogTurn, extract_messages, render


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    data = write_locomo_zip(root / "locomo.zip")
    summary = teacher_locomo(data, root / "out")
    return root / "out", summary


def records(folder, split):
    return read_jsonl(folder / f"{split}.jsonl")[0]


def test_splits_are_by_conversation(teacher_dir):
    folder, summary = teacher_dir
    convs = {s: set(v["conversations"]) for s, v in summary["splits"].items()}
    assert convs == {"train": {"1"}, "validation": {"2"}, "heldout": {"3"}}
    for split in ("train", "validation", "heldout"):
        assert {r.source["conversation"] for r in records(folder, split)} == convs[split]
    assert json.loads((folder / "teacher.json").read_text())["format"] == "memlora-teacher/1"


def test_extract_targets_are_observations_in_mem0_form(teacher_dir):
    folder, _ = teacher_dir
    ex = {r.source["dia_id"]: r for r in records(folder, "train") if r.op is Op.EXTRACT}
    r = ex["D1:1"]
    assert parse_extract(r.output).facts == ["Ann0 likes hiking."]
    assert r.vars["turns"] == [{"speaker": "Ann0", "text": "I like hiking."}]
    assert r.vars["today"] == "1:00 pm on 1 May, 2023" and r.source["rule_derived"] is False


def test_update_targets_replay_the_store_with_marked_rules(teacher_dir):
    folder, _ = teacher_dir
    ups = [r for r in records(folder, "train") if r.op is Op.UPDATE]
    assert ups and all(r.source["rule_derived"] and r.source["teacher"] == "rules" for r in ups)
    events = [x["event"] for r in ups for x in r.source["rules"]]
    assert {"ADD", "UPDATE"} <= set(events)  # "Ann0 likes X" supersedes "Ann0 likes Y" (same subject)
    for r in ups:
        res = parse_update(r.output, r.id_map())
        assert not res.errors and len(res.ops) == len(r.vars["facts"])


def test_rules_decide_none_update_delete_add():
    s = TeacherSettings()
    shown = [("0", "Ann likes green tea in the morning"), ("1", "Ann plays chess with Bob")]
    assert decide("Ann likes green tea in the morning", shown, set(), s)["event"] == "NONE"
    assert decide("Ann likes green tea in the evening now", shown, set(), s)["event"] == "UPDATE"
    assert decide("Ann no longer plays chess with Bob", shown, set(), s)["event"] == "DELETE"
    assert decide("Bob adopted a puppy", shown, set(), s)["event"] == "ADD"


def test_answer_targets_and_category_5(teacher_dir):
    folder, _ = teacher_dir
    ans = [r for r in records(folder, "train") if r.op is Op.ANSWER]
    by_cat = {r.source["category"]: r for r in ans}
    assert by_cat[1].vars["memories"] == [{"timestamp": "1:00 pm on 1 May, 2023", "text": "Ann0 likes hiking."}]
    assert by_cat[5].output == ADVERSARIAL_ANSWER
    assert by_cat[5].vars["memories"][0]["text"].startswith("Bob0: ")  # D1:6 has no fact: the turn text


def test_prompt_is_the_runtime_prompt():
    t = load_templates()
    r = TeacherRecord("x", Op.EXTRACT, {"turns": [{"speaker": "A", "text": "Hi"}], "today": "d"}, '{"facts": []}')
    assert prompt_text(r, t, "chatml") == render("chatml", extract_messages(t, [DialogTurn("A", "Hi")], "d"))
    assert target_text(r, "chatml") == '{"facts": []}<|im_end|>'


def test_filter_counts_reasons():
    ok = TeacherRecord("a", Op.EXTRACT, {"turns": [{"speaker": "A", "text": "Hi"}], "today": "d"}, '{"facts": ["x"]}')
    bad = TeacherRecord("b", Op.EXTRACT, ok.vars, "no json here")
    long = TeacherRecord("c", Op.EXTRACT, ok.vars, json.dumps({"facts": ["y" * 100]}))
    upd = TeacherRecord("d", Op.UPDATE, {"old_memory": [], "facts": ["f"]},
                        '{"memory": [{"id": "7", "text": "f", "event": "DELETE"}]}')
    kept, rep = filter_records([ok, ok, bad, long, upd], max_target_chars=50)
    assert kept == [ok]
    d = rep.as_dict()
    assert d["extract"] == {"kept": 1, "dropped": {"duplicate": 1, "target_too_long": 1, "unparseable": 1}}
    assert d["update"]["dropped"] == {"unparseable": 1}


def test_malformed_lines_fail_with_line_number_or_skip(tmp_path):
    good = TeacherRecord("a", Op.ANSWER, {"memories": [], "question": "q?"}, "x")
    p = tmp_path / "t.jsonl"
    write_jsonl(p, [good])
    with p.open("a") as f:
        f.write("{not json\n")
        f.write(json.dumps({"op": "summarise", "vars": {}, "output": ""}) + "\n")
    with pytest.raises(MemloraError, match=r"line 2: not valid JSON") as e:
        read_jsonl(p)
    assert "fix:" in e.value.one_line()
    recs, rep = read_jsonl(p, BadLines.SKIP)
    assert recs == [good] and [n for n, _ in rep.skipped] == [2, 3]
    assert "unknown op 'summarise'" in rep.skipped[1][1]


def test_too_few_conversations_and_missing_file(tmp_path):
    data = write_locomo_zip(tmp_path / "two.zip", n=2)
    with pytest.raises(MemloraError, match="cannot be split"):
        teacher_locomo(data, tmp_path / "out")
    with pytest.raises(MemloraError, match="not found"):
        teacher_locomo(tmp_path / "missing.zip", tmp_path / "out2")


@pytest.mark.skipif(not __import__("pathlib").Path("/work/shared/data/locomo10.zip").is_file(),
                    reason="the real LoCoMo file is not on this machine (CC BY-NC data, never in the repo)")
def test_real_locomo_counts(tmp_path):
    summary = teacher_locomo("/work/shared/data/locomo10.zip", tmp_path / "t")
    tot = summary["totals"]
    assert tot["extract"]["kept"] > 2000 and tot["update"]["kept"] > 1500 and tot["answer"]["kept"] > 1500
