"""open_bundle (artifact choice, templates, errors), the chat and memories commands."""
from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

from loop_fixtures import bundle_without, loop_bundle  # noqa: F401 (fixture)
from memlora.cli import app
from memlora.core.errors import MemloraError
from memlora.memory import MemoryStore
from memlora.memory.ingest import remember_and_answer
from memlora.runtime import open_bundle, select_artifact

cli = CliRunner()


def run(*args, input=None):
    return cli.invoke(app, [str(a) for a in args], input=input)


def test_open_bundle_onnx(loop_bundle):
    bundle, manifest = loop_bundle
    session = open_bundle(bundle, "onnx")
    try:
        assert session.artifact.key == "onnx/external/none"
        assert list(session.runner.adapters) == ["extract", "update", "answer"]
        assert session.chat_format == manifest["model"]["chat_format"] == "chatml"
        assert session.templates_source == "bundle"
        assert session.tokenizer.token_to_id("<|im_end|>") in session.eos_ids
        assert session.embedder is not None
    finally:
        session.close()


def test_select_artifact_prefers_external_and_names_what_exists(loop_bundle):
    _, manifest = loop_bundle
    assert select_artifact(manifest, "onnx").adapter_mode == "external"
    with pytest.raises(MemloraError, match="bundle has no executorch artifact.*re-export with --backend executorch"):
        select_artifact(manifest, "executorch")
    with pytest.raises(MemloraError, match="adapter mode fused.*it has: external/none"):
        select_artifact(manifest, "onnx", adapter_mode="fused")


def test_unknown_backend_and_not_a_bundle(tmp_path, loop_bundle):
    with pytest.raises(MemloraError, match="unknown backend 'tflite'"):
        open_bundle(loop_bundle[0], "tflite")
    with pytest.raises(MemloraError, match="no manifest.json"):
        open_bundle(tmp_path, "onnx")


def test_templates_fall_back_with_a_warning(tmp_path, loop_bundle, caplog):
    copy = bundle_without(loop_bundle[0], tmp_path / "b", "prompts")
    with caplog.at_level(logging.WARNING, logger="memlora.runtime"):
        session = open_bundle(copy, "onnx", embedder=False)
    session.close()
    assert session.templates_source.startswith("package")
    assert "no prompts/ folder" in caplog.text


def test_remember_and_answer_with_fallback(loop_bundle):
    session = open_bundle(loop_bundle[0], "onnx", embedder=False)
    try:
        loop = session.loop(MemoryStore(":memory:"))
        result, answer = remember_and_answer(loop, "My name is John and I love hiking.", "john", raw_fallback=True)
        assert [op.new_text for op in result.applied] == ["My name is John and I love hiking."]
        assert result.errors  # random weights: the extract output never parses
        assert [m.text for m in answer.memories] == ["My name is John and I love hiking."]  # FTS5/BM25 hit
        assert loop.store.history()[0].actor == "fallback"
        assert result.stored_from == "raw-turn"  # nothing was extracted: the turn's own text
    finally:
        session.close()


def test_chat_session(tmp_path, loop_bundle):
    db = tmp_path / "chat.db"
    res = run("chat", loop_bundle[0], "--db", db, "--user", "ann", "--raw-fallback", "--max-new-tokens", "8",
              input="I adopted a cat named Miso.\n/memories\n/bogus\n\nWhat is my cat called?\n/quit\nnever read\n")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "memlora chat: onnx/external/none" in out and "0 memories for 'ann'" in out
    assert out.count("assistant> ") == 2
    assert "stored ADD: I adopted a cat named Miso." in out
    assert "1 memories for 'ann':" in out and "unknown command '/bogus'" in out
    assert "never read" not in out
    with MemoryStore(db) as store:
        assert [m.text for m in store.list("ann")] == ["I adopted a cat named Miso.", "What is my cat called?"]
    # the store outlives the session; end of input also ends the chat cleanly
    res = run("chat", loop_bundle[0], "--db", db, "--user", "ann", input="/memories\n")
    assert res.exit_code == 0 and "2 memories for 'ann'" in res.output


def test_chat_errors_are_one_line(tmp_path, loop_bundle):
    res = run("chat", loop_bundle[0], "--backend", "executorch", "--db", tmp_path / "x.db", input="/quit\n")
    assert res.exit_code == 2
    assert "bundle has no executorch artifact" in res.output and "Traceback" not in res.output
    res = run("chat", tmp_path / "missing", "--db", tmp_path / "x.db", input="/quit\n")
    assert res.exit_code == 2 and "no manifest.json" in res.output


def test_memories_command(tmp_path):
    db = tmp_path / "m.db"
    from memlora.memory.parsing import Event, UpdateOp

    with MemoryStore(db) as store:
        store.apply([UpdateOp(Event.ADD, None, "Likes hiking in the Alps"), UpdateOp(Event.ADD, None, "Owns a cat")],
                    "ann", at="2023-05-08")
        store.apply([UpdateOp(Event.ADD, None, "Plays chess")], "bob", at="2023-05-09")
        ids = {m.text: m.id for m in store.list()}
    res = run("memories", db)
    assert res.exit_code == 0 and "3 memories" in res.output and "Plays chess" in res.output
    res = run("memories", db, "--user", "ann")
    assert "2 memories of ann" in res.output and "Plays chess" not in res.output
    res = run("memories", db, "--search", "hiking")
    assert res.exit_code == 0 and "Likes hiking" in res.output and "Owns a cat" not in res.output
    res = run("memories", db, "--delete", ids["Owns a cat"][:12])
    assert res.exit_code == 0 and f"deleted {ids['Owns a cat']}" in res.output
    with MemoryStore(db) as store:
        assert store.count() == 2 and store.history()[-1].event == "DELETE"
    res = run("memories", db, "--delete", "nope")
    assert res.exit_code == 2 and "no memory with id 'nope'" in res.output
    res = run("memories", tmp_path / "absent.db")
    assert res.exit_code == 2 and "memory store not found" in res.output
    assert not (tmp_path / "absent.db").exists()
