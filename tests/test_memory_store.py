"""SQLite memory store: transactional batches, history, retrieval, crash safety."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from memlora.memory.parsing import Event, UpdateOp
from memlora.memory.store import MemoryStore, fts5_available
from memory_fixtures import hash_embedder

EXPORT = Path(__file__).resolve().parents[1] / "export"


def add(*texts):
    return [UpdateOp(Event.ADD, None, t) for t in texts]


@pytest.fixture
def store(tmp_path):
    with MemoryStore(tmp_path / "mem.db") as s:
        yield s


def test_apply_add_update_delete_with_history(store):
    res = store.apply(add("Name is John", "Likes tea"), "u1", at="2023-05-08")
    assert [a.event for a in res.applied] == [Event.ADD, Event.ADD]
    john, tea = (a.memory_id for a in res.applied)
    assert store.count("u1") == 2 and store.count("u2") == 0
    res = store.apply([UpdateOp(Event.UPDATE, tea, "Likes green tea", "Likes tea"),
                       UpdateOp(Event.DELETE, john, ""),
                       UpdateOp(Event.NONE, tea, "")], "u1", at="2023-06-01")
    assert [(a.event, a.old_text, a.new_text) for a in res.applied] == [
        (Event.UPDATE, "Likes tea", "Likes green tea"), (Event.DELETE, "Name is John", None)]
    mem = store.get(tea)
    assert (mem.text, mem.created_at, mem.updated_at) == ("Likes green tea", "2023-05-08",
                                                          "2023-06-01")
    assert store.get(john) is None
    assert [(h.event, h.new_text) for h in store.history(tea)] == [
        ("ADD", "Likes tea"), ("UPDATE", "Likes green tea")]
    assert [h.event for h in store.history()] == ["ADD", "ADD", "UPDATE", "DELETE"]
    assert all(h.actor == "loop" for h in store.history())


def test_apply_skips_missing_foreign_and_unchanged(store):
    mine = store.apply(add("Mine"), "u1").applied[0].memory_id
    theirs = store.apply(add("Theirs"), "u2").applied[0].memory_id
    res = store.apply([UpdateOp(Event.DELETE, theirs, ""), UpdateOp(Event.DELETE, "nope", ""),
                       UpdateOp(Event.UPDATE, mine, "Mine")], "u1")
    assert res.applied == [] and len(res.skipped) == 3
    assert store.get(theirs) is not None and len(store.history()) == 2


def test_batch_is_all_or_nothing(store):
    store.apply(add("Kept"), "u1")

    def boom(i, op):
        if i == 1:
            raise RuntimeError("crash in the middle")

    store.after_op_hook = boom
    with pytest.raises(RuntimeError):
        store.apply(add("A", "B", "C"), "u1")
    store.after_op_hook = None
    assert [m.text for m in store.list("u1")] == ["Kept"]
    assert len(store.history()) == 1
    store.apply(add("D"), "u1")  # the store is still usable
    assert store.count() == 2


def test_manual_delete_is_logged(store):
    mid = store.apply(add("Temp"), "u1").applied[0].memory_id
    assert store.delete(mid) and not store.delete(mid)
    assert [(h.event, h.actor, h.old_text) for h in store.history(mid)] == [
        ("ADD", "loop", None), ("DELETE", "user", "Temp")]


def test_persists_across_reopen(tmp_path):
    with MemoryStore(tmp_path / "m.db") as s:
        s.apply(add("Durable"), "u1")
    with MemoryStore(tmp_path / "m.db") as s:
        assert [m.text for m in s.list()] == ["Durable"] and s.users() == ["u1"]
        assert s.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_embedding_search(store):
    store.apply(add("Likes hiking in the mountains", "Works as a nurse", "Has a dog named Rex"),
                "u1", embed_fn=hash_embedder)
    store.apply(add("Likes hiking too"), "u2", embed_fn=hash_embedder)
    q = hash_embedder(["is her dog named Rex"])[0]
    hits = store.search("ignored", "u1", k=2, query_embedding=q)
    assert hits[0].memory.text == "Has a dog named Rex" and len(hits) == 2
    assert hits[0].score > hits[1].score and hits[0].memory.has_embedding
    assert all(h.memory.user == "u1" for h in store.search("", "u1", 10, q))
    # cosine against the stored vector of the same text is 1
    same = store.search("", "u1", 1, hash_embedder(["Works as a nurse"])[0])[0]
    assert same.memory.text == "Works as a nurse" and same.score == pytest.approx(1.0, abs=1e-5)


def test_update_refreshes_embedding(store):
    mid = store.apply(add("Likes tea"), "u1", embed_fn=hash_embedder).applied[0].memory_id
    store.apply([UpdateOp(Event.UPDATE, mid, "Owns a bicycle")], "u1", embed_fn=hash_embedder)
    hit = store.search("", "u1", 1, hash_embedder(["Owns a bicycle"])[0])[0]
    assert hit.score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("use_fts", [True, False])
def test_text_search(tmp_path, use_fts):
    if use_fts and not fts5_available():
        pytest.skip("SQLite without FTS5")
    with MemoryStore(tmp_path / "t.db", use_fts=use_fts) as s:
        assert s.text_search == ("fts5-bm25" if use_fts else "token-overlap")
        ids = [a.memory_id for a in s.apply(
            add("Likes hiking in the mountains", "Works as a nurse", "Has a dog named Rex",
                "Hiking boots are red"), "u1").applied]
        s.apply(add("Has a dog too"), "u2")
        hits = s.search("Does she have a dog?", "u1", k=3)
        assert hits[0].memory.text == "Has a dog named Rex"
        assert all(h.memory.user == "u1" for h in hits)
        assert {h.memory.text for h in s.search("hiking", "u1", 5)} == {
            "Likes hiking in the mountains", "Hiking boots are red"}
        assert s.search("?!", "u1", 5) == [] and s.search("zebra", "u1", 5) == []
        # the index follows updates and deletes
        s.apply([UpdateOp(Event.UPDATE, ids[1], "Works as a pilot"),
                 UpdateOp(Event.DELETE, ids[2], "")], "u1")
        assert s.search("nurse", "u1", 5) == [] and s.search("dog", "u1", 5) == []
        assert [h.memory.id for h in s.search("pilot", "u1", 5)] == [ids[1]]


def test_fts_index_built_for_existing_rows(tmp_path):
    if not fts5_available():
        pytest.skip("SQLite without FTS5")
    with MemoryStore(tmp_path / "x.db", use_fts=False) as s:
        s.apply(add("Plays the violin"), "u1")
    with MemoryStore(tmp_path / "x.db") as s:
        assert [h.memory.text for h in s.search("violin", "u1", 3)] == ["Plays the violin"]


CRASH = textwrap.dedent("""
    import os, sys
    from memlora.memory.parsing import Event, UpdateOp
    from memlora.memory.store import MemoryStore
    s = MemoryStore(sys.argv[1])
    s.apply([UpdateOp(Event.ADD, None, "batch1 a"), UpdateOp(Event.ADD, None, "batch1 b")], "u")
    first = s.list("u")[0].id
    def die(i, op):
        if i == 2:
            os._exit(17)  # killed mid-transaction: no rollback, no close, no atexit
    s.after_op_hook = die
    s.apply([UpdateOp(Event.ADD, None, "batch2 a"), UpdateOp(Event.DELETE, first, ""),
             UpdateOp(Event.ADD, None, "batch2 b")], "u")
    print("not reached")
""")


def test_kill_mid_update_loses_nothing_committed(tmp_path):
    db = tmp_path / "crash.db"
    env = dict(os.environ, PYTHONPATH=str(EXPORT))
    proc = subprocess.run([sys.executable, "-c", CRASH, str(db)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 17, proc.stderr
    assert "not reached" not in proc.stdout
    with MemoryStore(db) as s:
        assert sorted(m.text for m in s.list("u")) == ["batch1 a", "batch1 b"]
        assert [(h.event, h.new_text) for h in s.history()] == [
            ("ADD", "batch1 a"), ("ADD", "batch1 b")]
        if s.use_fts:
            assert [h.memory.text for h in s.search("batch1 a", "u", 1)] == ["batch1 a"]
            assert s.search("batch2", "u", 5) == []
            s.con.execute("INSERT INTO memories_fts(memories_fts) VALUES ('integrity-check')")
        assert s.con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
