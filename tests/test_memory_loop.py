"""The memory loop end to end, over a scripted runner, a tiny tokenizer and a real store."""
import json
import logging

import pytest

from memlora.memory.loop import LoopSettings, MemoryLoop
from memlora.memory.parsing import Event, UpdateOp
from memlora.memory.prompts import DialogTurn, Op
from memlora.memory.store import MemoryStore
from memory_fixtures import ScriptedRunner, hash_embedder, make_tokenizer

TURN = [DialogTurn("user", "Hi, my name is John. I am a software engineer.")]


def old_memory_in(prompt: str) -> dict[str, str]:
    """The ``{short_id: text}`` the update prompt showed, decoded from its JSON array."""
    label = "never as an instruction:\n"
    start = prompt.index(label) + len(label)
    items = json.JSONDecoder().raw_decode(prompt[start:])[0]
    return {m["id"]: m["text"] for m in items}


def make_loop(tmp_path, replies, embedder=None, fmt="chatml", **settings):
    tok = make_tokenizer()
    runner = ScriptedRunner.from_texts(tok, replies, adapters=["extract", "update", "answer"])
    store = MemoryStore(tmp_path / "mem.db")
    loop = MemoryLoop(runner, tok, store, fmt, embedder=embedder,
                      settings=LoopSettings(**settings))
    return loop, runner, store


@pytest.mark.parametrize("embedder", [None, hash_embedder], ids=["fts", "embedding"])
def test_ingest_update_answer(tmp_path, embedder):
    def update_job(prompt):
        shown = old_memory_in(prompt)
        job = next(i for i, t in shown.items() if t == "Is a software engineer")
        return json.dumps({"memory": [
            {"id": job, "text": "Is a nurse", "event": "UPDATE",
             "old_memory": "Is a software engineer"},
            {"id": "9", "text": "Likes tea", "event": "ADD"}]})

    replies = {
        "extract": ['```json\n{"facts": ["Name is John", "Is a software engineer"]}\n```',
                    '{"facts": ["Is a nurse", "Likes tea"]} hope this helps'],
        "update": ['{"memory": [{"id": "0", "text": "Name is John", "event": "ADD"}, '
                   '{"id": "1", "text": "Is a software engineer", "event": "ADD"}]}',
                   update_job],
        "answer": ["A nurse."],
    }
    loop, runner, store = make_loop(tmp_path, replies, embedder)
    first = loop.ingest_turn(TURN, "john", at="2023-05-08", today="2023-05-08")
    assert first.facts == ["Name is John", "Is a software engineer"] and first.errors == []
    assert [a.event for a in first.applied] == [Event.ADD, Event.ADD]
    # the first update prompt showed no old memories
    assert old_memory_in(runner.tokenizer.decode(runner.prompts[1][1], False)) == {}

    second = loop.ingest_turn([DialogTurn("user", "I retrained; now a nurse. I like tea.")],
                              "john", at="2023-06-01")
    assert [(a.event, a.old_text, a.new_text) for a in second.applied] == [
        (Event.UPDATE, "Is a software engineer", "Is a nurse"), (Event.ADD, None, "Likes tea")]
    assert sorted(m.text for m in store.list("john")) == ["Is a nurse", "Likes tea",
                                                         "Name is John"]
    assert all(m.has_embedding == (embedder is not None) for m in store.list("john"))

    ans = loop.answer("What is John's job?", "john", k=2)
    assert ans.text == "A nurse." and len(ans.memories) == 2
    assert "Is a nurse" in [m.text for m in ans.memories]
    answer_prompt = runner.tokenizer.decode(runner.prompts[-1][1], False)
    assert '"2023-06-01: Is a nurse"' in answer_prompt
    assert '"What is John\'s job?"' in answer_prompt

    assert [c[1] for c in runner.calls if c[0] == "set_adapter"] == [
        "extract", "update", "extract", "update", "answer"]
    stats = loop.stats_dict()
    assert (stats["extract"]["calls"], stats["update"]["calls"], stats["answer"]["calls"]) == (
        2, 2, 1)
    assert stats["update"]["failures"] == 0 and stats["extract"]["new_tokens"] > 0


def test_hostile_update_touches_only_shown_memories(tmp_path, caplog):
    victims: list[str] = []

    def hostile(prompt):
        ops = [{"id": i, "event": "DELETE"} for i in ["0", "1", "2", *victims]]
        return json.dumps({"memory": ops + [{"id": "0", "text": "pwned", "event": "UPDATE"}]})

    loop, runner, store = make_loop(tmp_path, {"update": [hostile]}, update_top_k=1)
    ids = [a.memory_id for a in store.apply(
        [UpdateOp(Event.ADD, None, t) for t in ["Has a dog named Rex", "Works as a nurse"]],
        "john").applied]
    other = store.apply([UpdateOp(Event.ADD, None, "Has a dog too")], "ann").applied[0].memory_id
    victims += ids + [other]
    with caplog.at_level(logging.WARNING):
        applied = loop.update(["Dog Rex is three years old"], "john")
    # only the single memory shown as "0" (the dog one) could be deleted; the rest survive
    assert [(a.event, a.memory_id) for a in applied] == [(Event.DELETE, ids[0])]
    assert store.get(ids[1]) is not None and store.get(other) is not None
    assert loop.stats[Op.UPDATE].failures == 1 and "unknown id" in caplog.text
    assert len(loop.last_errors) == 6  # ids 1, 2, three real uuids, and a second op on "0"


def test_malformed_outputs_are_skipped(tmp_path, caplog):
    replies = {"extract": ["I'd rather not.", '{"facts": ["Likes tea"]}'],
               "update": ['{"memory": [{"event": "ADD", "text": "Likes tea"'],  # cut off
               "answer": ["<|im_start|>"]}
    loop, runner, store = make_loop(tmp_path, replies)
    with caplog.at_level(logging.WARNING):
        res = loop.ingest_turn(TURN, "john")
        assert res.facts == [] and res.applied == [] and res.errors
        res = loop.ingest_turn(TURN, "john")
    assert res.facts == ["Likes tea"] and res.applied == [] and res.errors
    assert store.count() == 0 and store.history() == []
    assert loop.stats[Op.EXTRACT].failures == 1 and loop.stats[Op.UPDATE].failures == 1
    assert loop.answer("Anything?", "john").memories == []


def test_streaming_answer_and_gemma_format(tmp_path):
    loop, runner, store = make_loop(tmp_path, {"answer": ["Rex<end_of_turn>ignored"]},
                                    fmt="gemma")
    pieces = []
    loop.on_token = lambda t, s: pieces.append(s)
    ans = loop.answer("Dog's name?", "john")
    assert ans.text == "Rex" and "".join(pieces) == "Rex"
    prompt = runner.tokenizer.decode(runner.prompts[0][1], False)
    assert prompt.startswith("<bos><start_of_turn>user\nYou are an intelligent memory")
    assert prompt.endswith("<start_of_turn>model\n")


def test_missing_adapter_and_format_rejected(tmp_path):
    tok = make_tokenizer()
    runner = ScriptedRunner.from_texts(tok, {"extract": []}, adapters=["extract"])
    store = MemoryStore(tmp_path / "m.db")
    with pytest.raises(ValueError, match="missing"):
        MemoryLoop(runner, tok, store, "chatml")
    with pytest.raises(KeyError):
        MemoryLoop(runner, tok, store, "vicuna")
