"""The memory store refuses files it did not make, never modifies them, and can undo an update."""
from __future__ import annotations

import hashlib
import sqlite3

import numpy as np
import pytest

from memlora.core.errors import MemloraError
from memlora.memory import MemoryStore
from memlora.memory.display import printable
from memlora.memory.parsing import MAX_TEXT_CHARS, Event, UpdateOp


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _embed(texts):
    return np.array([[len(t), t.count("a"), 1.0] for t in texts], np.float32)


@pytest.mark.parametrize("kind", ["random", "text", "foreign", "other_memories"])
@pytest.mark.parametrize("readonly", [False, True])
def test_foreign_files_are_refused_untouched(tmp_path, kind, readonly):
    path = tmp_path / "x.db"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "text":
        path.write_text("hello, I am a text file\n" * 50)
    else:
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE contacts(name TEXT)" if kind == "foreign" else "CREATE TABLE memories(note TEXT)")
        con.commit()
        con.close()
    before = _sha(path)
    with pytest.raises(MemloraError) as e:
        MemoryStore(path, readonly=readonly)
    assert str(path) in e.value.one_line() and "fix:" in e.value.one_line()
    assert _sha(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.db"]  # no -wal/-shm left beside it


def test_folder_and_missing_file(tmp_path):
    with pytest.raises(MemloraError, match="is a folder"):
        MemoryStore(tmp_path)
    with pytest.raises(MemloraError, match="not found"):
        MemoryStore(tmp_path / "none.db", readonly=True)
    assert not (tmp_path / "none.db").exists()


def test_readonly_reads_without_writing(tmp_path):
    path = tmp_path / "m.db"
    with MemoryStore(path) as s:
        s.apply([UpdateOp(Event.ADD, None, "Likes tea")], "u")
    before = _sha(path)
    with MemoryStore(path, readonly=True) as s:
        assert [m.text for m in s.list()] == ["Likes tea"]
        assert s.search("tea", "u", 3)[0].memory.text == "Likes tea"
        with pytest.raises(MemloraError, match="read-only"):
            s.apply([UpdateOp(Event.ADD, None, "x")], "u")
    assert _sha(path) == before


def test_old_store_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript("""CREATE TABLE memories (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        user TEXT NOT NULL, text TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, embedding BLOB);
        CREATE TABLE history (id INTEGER PRIMARY KEY AUTOINCREMENT, memory_id TEXT NOT NULL, event TEXT NOT NULL,
        old_text TEXT, new_text TEXT, at TEXT NOT NULL, actor TEXT NOT NULL);
        INSERT INTO memories(id, user, text, created_at, updated_at) VALUES ('m1', 'u', 'Old fact', 't', 't');""")
    con.commit()
    con.close()
    with MemoryStore(path) as s:
        assert [m.text for m in s.list()] == ["Old fact"]
        s.apply([UpdateOp(Event.UPDATE, "m1", "New fact")], "u")
        assert [u.new_text for u in s.undo_last()] == ["Old fact"]
        assert [m.text for m in s.list()] == ["Old fact"]


def test_undo_reverts_a_whole_batch_exactly(tmp_path):
    with MemoryStore(tmp_path / "m.db") as s:
        first = s.apply([UpdateOp(Event.ADD, None, t) for t in ("Likes tea", "Has a cat", "Lives in Oslo")],
                        "u", _embed, at="2023-01-01T00:00:00+00:00").applied
        before = [(m.id, m.text, m.created_at) for m in s.list()]
        vec_before = s.con.execute("SELECT id, embedding FROM memories ORDER BY seq").fetchall()
        ids = [a.memory_id for a in first]
        # An obedient model deletes and rewrites everything it was shown.
        s.apply([UpdateOp(Event.DELETE, ids[0], ""), UpdateOp(Event.DELETE, ids[1], ""),
                 UpdateOp(Event.UPDATE, ids[2], "Lives in Bergen"), UpdateOp(Event.ADD, None, "Hates tea")],
                "u", _embed)
        assert [m.text for m in s.list()] == ["Lives in Bergen", "Hates tea"]
        reverted = s.undo_last()
        assert {r.event for r in reverted} == {Event.ADD, Event.UPDATE, Event.DELETE}
        # Same rows (re-inserted ones sort last: a new seq), same texts, creation times and vectors.
        assert sorted((m.id, m.text, m.created_at) for m in s.list()) == sorted(before)
        assert sorted(s.con.execute("SELECT id, embedding FROM memories").fetchall()) == sorted(vec_before)
        assert s.search("x", "u", 1, _embed(["Has a cat"])[0])[0].memory.text == "Has a cat"
        hist = s.history()
        assert sum(h.undone for h in hist) == 4 and {h.actor for h in hist[-4:]} == {"undo"}
        # Next undo takes the batch before (the three ADDs), never the undo itself.
        assert {r.event for r in s.undo_last()} == {Event.DELETE} and s.count() == 0
        assert s.undo_last() == []


def test_undo_is_transactional(tmp_path):
    with MemoryStore(tmp_path / "m.db") as s:
        mid = s.apply([UpdateOp(Event.ADD, None, "A")], "u").applied[0].memory_id
        s.apply([UpdateOp(Event.UPDATE, mid, "B")], "u")
        s.con.execute("CREATE TRIGGER boom BEFORE UPDATE ON memories BEGIN SELECT RAISE(ABORT, 'boom'); END")
        with pytest.raises(sqlite3.DatabaseError):
            s.undo_last()
        assert [m.text for m in s.list()] == ["B"] and not any(h.undone for h in s.history())


def test_duplicates_and_overlong_texts_are_skipped(tmp_path):
    with MemoryStore(tmp_path / "m.db") as s:
        s.apply([UpdateOp(Event.ADD, None, "Likes tea")], "u")
        res = s.apply([UpdateOp(Event.ADD, None, "Likes tea"), UpdateOp(Event.ADD, None, "x" * (MAX_TEXT_CHARS + 1)),
                       UpdateOp(Event.ADD, None, "Likes tea")], "other")
        assert [a.new_text for a in res.applied] == ["Likes tea"]  # another user may have the same memory
        assert any("duplicate" in r for r in res.skipped) and any("over" in r for r in res.skipped)
        assert s.count("u") == 1 and s.count("other") == 1


def test_printable_escapes_controls_not_emoji():
    assert printable("a\u202eevil\u202c\nb\x1b[31m") == "a\\u202eevil\\u202c\\u000ab\\u001b[31m"
    assert printable("👨‍👩‍👧 café 中文") == "👨‍👩‍👧 café 中文"


@pytest.mark.parametrize("content,match", [
    (b"PK\x03\x04 truncated", "not a readable zip"),
    (b"\x00\x01random bytes" * 100, "not a readable zip"),
    (None, "not found"),
])
def test_locomo_bad_files(tmp_path, content, match):
    from memlora.memory.locomo import load_locomo

    path = tmp_path / "locomo10.zip"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MemloraError, match=match) as e:
        load_locomo(path)
    assert "locomo10.zip" in e.value.one_line() and "fix:" in e.value.one_line()


def test_locomo_truncated_real_zip_and_bad_json(tmp_path):
    import zipfile

    from memlora.memory.locomo import load_locomo

    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.json", '{"x": ' + '"y" ' * 2000)
    with pytest.raises(MemloraError, match="invalid JSON"):
        load_locomo(good)
    cut = tmp_path / "cut.zip"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(MemloraError, match="not a readable zip"):
        load_locomo(cut)
    with pytest.raises(MemloraError, match="expected a .zip or .json"):
        (tmp_path / "data.csv").write_text("a,b")
        load_locomo(tmp_path / "data.csv")
