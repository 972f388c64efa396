"""The memory store's SQLite schema, and opening a file as a store without harming it.

:func:`connect` refuses, before writing anything, a path that is a folder, a file that is not
SQLite, and an SQLite file of another program (tables memlora did not make, or a ``memories``
table with other columns): a memory store is never created inside someone else's database. A
store written by an older memlora gets the newer history columns on open (not in read-only mode).
"""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from ..core.errors import MemloraError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    user TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    embedding BLOB
);
CREATE INDEX IF NOT EXISTS memories_user ON memories(user);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id TEXT NOT NULL,
    event TEXT NOT NULL,
    old_text TEXT,
    new_text TEXT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_memory ON history(memory_id);
"""
_FTS_SCHEMA = """
CREATE VIRTUAL TABLE memories_fts USING fts5(text, content='memories', content_rowid='seq');
CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN
  INSERT INTO memories_fts(rowid, text) VALUES (new.seq, new.text); END;
CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN
  INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.seq, old.text); END;
CREATE TRIGGER memories_au AFTER UPDATE OF text ON memories BEGIN
  INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.seq, old.text);
  INSERT INTO memories_fts(rowid, text) VALUES (new.seq, new.text); END;
INSERT INTO memories_fts(memories_fts) VALUES ('rebuild');
"""

def fts5_available() -> bool:
    """Whether this Python's SQLite build has the FTS5 extension."""
    con = sqlite3.connect(":memory:")
    try:
        con.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        con.close()

# Added after the first release; a store written before gets them on open (ALTER TABLE).
# batch: one id per apply()/delete()/undo() call; user, old_embedding and old_created_at are what
# undo needs to restore a deleted or updated memory exactly; undone marks a reverted batch.
_HISTORY_COLUMNS = {"batch": "INTEGER", "user": "TEXT", "old_embedding": "BLOB", "old_created_at": "TEXT",
                    "undone": "INTEGER NOT NULL DEFAULT 0"}
_MEMORY_COLUMNS = {"seq", "id", "user", "text", "created_at", "updated_at", "embedding"}
_OWN_TABLES = {"memories", "history", "memories_fts", "sqlite_sequence"}
_FIX_DB = "pass a memory store written by memlora chat or locomo --db, or a new file name"


def _tables(con: sqlite3.Connection, path: str) -> set[str]:
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    except sqlite3.DatabaseError as e:
        con.close()
        raise MemloraError(f"not an SQLite database ({e})", path, _FIX_DB) from None


def _check_foreign(con: sqlite3.Connection, path: str, tables: set[str]) -> None:
    """Refuse a database memlora did not make (before any table is added to it)."""
    foreign = sorted(t for t in tables - _OWN_TABLES if not t.startswith("memories_fts"))
    cols = {r[1] for r in con.execute("PRAGMA table_info(memories)")} if "memories" in tables else set()
    if foreign or ("memories" in tables and not _MEMORY_COLUMNS <= cols):
        con.close()
        what = f"tables {', '.join(foreign[:5])}" if foreign else "a memories table with other columns"
        raise MemloraError(f"an SQLite file of another program ({what})", path,
                           "pass a new file name: memlora never adds its tables to another database")


def _migrate(con: sqlite3.Connection) -> None:
    have = {r[1] for r in con.execute("PRAGMA table_info(history)")}
    for name, decl in _HISTORY_COLUMNS.items():
        if name not in have:
            con.execute(f"ALTER TABLE history ADD COLUMN {name} {decl}")


def connect(path: str, use_fts: bool | None, readonly: bool) -> tuple[sqlite3.Connection, bool]:
    """Open ``path`` as a memory store; returns the connection and whether FTS5 is used."""
    p = Path(path)
    if path != ":memory:":
        if p.is_dir():
            raise MemloraError("is a folder, not a memory store", path, "pass a file path such as memories.db")
        if readonly and not p.is_file():
            raise MemloraError("memory store not found", path, "pass the --db file of memlora chat")
    try:
        con = (sqlite3.connect(f"file:{p.resolve()}?mode=ro", uri=True, isolation_level=None) if readonly
               else sqlite3.connect(path, isolation_level=None))
    except sqlite3.Error as e:
        raise MemloraError(f"cannot open the memory store ({e})", path, _FIX_DB) from None
    tables = _tables(con, path)
    _check_foreign(con, path, tables)
    has_fts = fts5_available()
    if readonly:
        if "memories" not in tables:
            con.close()
            raise MemloraError("not a memlora memory store (no memories table)", path, _FIX_DB)
        return con, "memories_fts" in tables and has_fts
    if use_fts and not has_fts:
        con.close()
        raise RuntimeError("use_fts=True but this SQLite build lacks FTS5")
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.executescript(_SCHEMA)
        _migrate(con)
        fts = has_fts if use_fts is None else use_fts
        if fts and "memories_fts" not in tables:
            con.executescript(f"BEGIN; {_FTS_SCHEMA} COMMIT;")
    except sqlite3.Error as e:
        con.close()
        raise MemloraError(f"cannot write the memory store ({e})", path, _FIX_DB) from None
    if not has_fts:
        log.warning("memory store: this SQLite build has no FTS5; text search falls back to token overlap")
    return con, fts
