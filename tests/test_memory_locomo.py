"""LoCoMo loading from small fixture files written in both real layouts (flat zip, nested json)."""
import json
import zipfile

import pytest

from memlora.core.errors import MemloraError

from memlora.memory.locomo import iter_locomo, load_locomo


def flat_conversation(a="Ann", b="Bob"):
    """One conversation as the locomo10 zip stores it (keys at the top level)."""
    return {
        "speaker_a": a, "speaker_b": b,
        "session_2_date_time": "1:00 pm on 9 May, 2023",
        "session_2": [{"speaker": b, "dia_id": "D2:1", "text": "Got a dog.",
                       "img_url": ["https://example.org/dog.jpg"],
                       "blip_caption": "a photo of a dog", "query": "dog"}],
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [{"speaker": a, "dia_id": "D1:1", "text": "Hi Bob!"},
                      {"speaker": b, "dia_id": "D1:2", "text": "Hi!", "img_url": "u.jpg",
                       "blip_caption": "a cat", "re-download": True}],
        "session_3_date_time": "2:00 pm on 10 May, 2023",  # a date without turns is ignored
        "events_session_1": {a: ["x"]}, "session_1_observation": {a: [["x", "D1:1"]]},
        "session_1_summary": "They meet.",
        "qa": [
            {"question": "What pet?", "answer": "a dog", "evidence": ["D2:1"], "category": 1},
            {"question": "Year?", "answer": 2023, "evidence": [], "category": 2},
            {"question": "Bob's cat's name?", "evidence": ["D1:2"], "category": 5,
             "adversarial_answer": "Tom"},
        ],
    }


def check(conv, sample_id):
    assert conv.sample_id == sample_id and (conv.speaker_a, conv.speaker_b) == ("Ann", "Bob")
    assert [s.index for s in conv.sessions] == [1, 2]
    s1, s2 = conv.sessions
    assert s1.date_time == "1:56 pm on 8 May, 2023" and len(s1.turns) == 2
    assert s1.turns[0].img_url == [] and s1.turns[0].blip_caption is None
    assert s1.turns[1].img_url == ["u.jpg"]
    assert s2.turns[0].img_url == ["https://example.org/dog.jpg"]
    assert s2.turns[0].display_text() == "Got a dog. [shares a photo of a dog]"
    assert [t.dia_id for _, t in conv.turns()] == ["D1:1", "D1:2", "D2:1"]
    q1, q2, q5 = conv.qa
    assert (q1.answer, q1.evidence, q1.category, q1.adversarial) == ("a dog", ["D2:1"], 1, False)
    assert q2.answer == "2023"
    assert (q5.answer, q5.adversarial_answer, q5.adversarial) == ("Tom", "Tom", True)


def test_flat_zip(tmp_path):
    path = tmp_path / "locomo.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data/multimodal_dialog/locomo10_v2/", "")
        zf.writestr("data/multimodal_dialog/locomo10_v2/10.json", json.dumps(flat_conversation()))
        zf.writestr("data/multimodal_dialog/locomo10_v2/9.json", json.dumps(flat_conversation()))
    convs = load_locomo(path)
    assert [c.sample_id for c in convs] == ["9", "10"]  # numeric file order
    check(convs[0], "9")


def test_nested_json_list(tmp_path):
    conv = flat_conversation()
    qa = conv.pop("qa")
    path = tmp_path / "locomo10.json"
    path.write_text(json.dumps([{"sample_id": "conv-26", "conversation": conv, "qa": qa,
                                 "event_summary": {}, "observation": {},
                                 "session_summary": {}}]))
    (conv_out,) = list(iter_locomo(path))
    check(conv_out, "conv-26")


def test_single_flat_json_and_bad_suffix(tmp_path):
    path = tmp_path / "26.json"
    path.write_text(json.dumps(flat_conversation()))
    check(load_locomo(path)[0], "26")
    with pytest.raises(MemloraError, match="expected a .zip or .json"):
        load_locomo(tmp_path / "x.txt")
