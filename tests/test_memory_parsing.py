"""Parsing untrusted model output: lenient JSON extraction, strict validation, id safety."""
import json

from hypothesis import given, settings, strategies as st

from memlora.memory.parsing import (Event, IdMap, UpdateOp, find_json_object, parse_extract,
                                    parse_update)

IDS = IdMap(["mem-a", "mem-b"])  # shown to the model as "0" and "1"


def test_idmap_round_trip():
    m = IdMap(["x", "y"])
    assert m.items() == [("0", "x"), ("1", "y")]
    assert m.add("x") == "0" and m.add("z") == "2"
    assert m.real("1") == "y" and m.real("9") is None and m.short("z") == "2"
    assert "2" in m and "x" not in m and len(m) == 3


def test_extract_fenced_with_prose():
    out = 'Sure! Here you go:\n```json\n{"facts": ["Name is John", " Likes tea ", ""]}\n```\nBye'
    res = parse_extract(out)
    assert res.facts == ["Name is John", "Likes tea"]
    assert len(res.errors) == 1 and "facts[2]" in res.errors[0]


def test_extract_trailing_text_and_braces_in_strings():
    res = parse_extract('{"facts": ["Uses {curly} braces", "Says \\"}\\""]} and then {oops')
    assert res.facts == ["Uses {curly} braces", 'Says "}"'] and res.errors == []


def test_extract_skips_unparseable_candidate():
    res = parse_extract('{not json} {"facts": ["A"]}')
    assert res.facts == ["A"]


def test_extract_garbage():
    for out in ["", "no json here", "[1, 2]", '{"facts": "A"}', '{"facts": [1, null, {}]}',
                "{" * 5000, '{"facts": [' * 3000]:
        res = parse_extract(out)
        assert res.facts == [] and res.errors, out[:20]


def test_extract_dedupes_and_limits_length():
    res = parse_extract(json.dumps({"facts": ["A", "A", "x" * 5000]}))
    assert res.facts == ["A"] and len(res.errors) == 1


def test_update_valid_ops_are_remapped():
    out = json.dumps({"memory": [
        {"id": "0", "text": "Loves cheese and chicken pizza", "event": "UPDATE",
         "old_memory": "Loves cheese pizza"},
        {"id": 1, "text": "x", "event": "delete"},
        {"id": "7", "text": "Name is John", "event": "ADD"},
    ]})
    res = parse_update(out, IDS)
    assert res.errors == []
    assert res.ops == [
        UpdateOp(Event.UPDATE, "mem-a", "Loves cheese and chicken pizza", "Loves cheese pizza"),
        UpdateOp(Event.DELETE, "mem-b", "x"),
        UpdateOp(Event.ADD, None, "Name is John"),
    ]


def test_update_rejects_unknown_ids_and_bad_items():
    out = json.dumps({"memory": [
        {"id": "mem-a", "text": "real id guessed", "event": "DELETE"},
        {"id": "2", "event": "DELETE"},
        {"id": True, "event": "DELETE"},
        {"id": "0", "event": "UPDATE"},
        {"id": "0", "text": "t", "event": "MERGE"},
        {"text": "", "event": "ADD"},
        "not an object",
        {"id": "1", "event": "NONE", "text": "same"},
        {"id": "1", "event": "DELETE"},
    ]})
    res = parse_update(out, IDS)
    assert res.ops == [UpdateOp(Event.NONE, "mem-b", "same")]
    assert len(res.errors) == 8
    assert any("unknown id 'mem-a'" in e for e in res.errors)
    assert any("second operation" in e for e in res.errors)


def test_update_hostile_output_with_no_memories_shown():
    out = '{"memory": [{"id": "0", "event": "DELETE"}, {"id": "0", "text": "pwn", "event": "UPDATE"}]}'
    res = parse_update(out, IdMap())
    assert res.ops == [] and len(res.errors) == 2


def test_update_garbage():
    for out in ["", "```json\n```", '{"memory": {}}', '{"memory": null}', "{]"]:
        res = parse_update(out, IDS)
        assert res.ops == [] and res.errors


def test_find_json_object_prefers_fence():
    obj, err = find_json_object('{"a": 1}\n```json\n{"b": 2}\n```')
    assert obj == {"b": 2} and err is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12)
    | st.sampled_from(["0", "1", "2", "mem-a", "ADD", "UPDATE", "DELETE", "NONE", "add"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "text", "event", "old_memory", "memory", "facts", "x"]), inner,
        max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(obj=json_values, prefix=st.text(max_size=20), suffix=st.text(max_size=20),
       fence=st.booleans())
def test_fuzz_parsers_never_raise_or_leak_ids(obj, prefix, suffix, fence):
    body = json.dumps(obj)
    out = prefix + (f"```json\n{body}\n```" if fence else body) + suffix
    res = parse_update(out, IDS)
    for op in res.ops:
        assert isinstance(op.event, Event)
        if op.event is Event.ADD:
            assert op.id is None and op.text.strip()
        else:
            assert op.id in ("mem-a", "mem-b")
        if op.event is Event.UPDATE:
            assert op.text.strip()
    assert len({op.id for op in res.ops if op.id}) == len([op for op in res.ops if op.id])
    ext = parse_extract(out)
    assert all(isinstance(f, str) and f.strip() == f and f for f in ext.facts)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(text):
    assert all(op.id in (None, "mem-a", "mem-b") for op in parse_update(text, IDS).ops)
    parse_extract(text)


update_items = st.lists(st.fixed_dictionaries({}, optional={
    "id": st.sampled_from(["0", "1", "2", "-1", "00", " 1 ", "mem-a", "mem-b", ""]) | st.integers(
        -2, 3) | st.none() | st.booleans(),
    "text": st.text(max_size=8) | st.none() | st.integers(),
    "event": st.sampled_from(["ADD", "UPDATE", "DELETE", "NONE", "update", " delete ", "MERGE"])
    | st.none(),
    "old_memory": st.text(max_size=8) | st.none(),
}), max_size=8)


@settings(max_examples=300, deadline=None)
@given(items=update_items, prose=st.sampled_from(["", "Sure:\n", "```json\n"]))
def test_fuzz_update_shaped_outputs(items, prose):
    res = parse_update(prose + json.dumps({"memory": items}), IDS)
    shown = {"0": "mem-a", "1": "mem-b", " 1 ": "mem-b", 0: "mem-a", 1: "mem-b"}
    for op in res.ops:
        assert op.id in (None, "mem-a", "mem-b")
    # every op maps back to an item whose id was really shown (or an ADD)
    assert len(res.ops) + len(res.errors) == len(items)
    for op in res.ops:
        if op.id is not None:
            assert any(shown.get(i.get("id")) == op.id for i in items if isinstance(
                i.get("id"), (str, int)) and not isinstance(i.get("id"), bool))
