"""SQLite memory store: memories, their event history, and retrieval.

One file, stdlib ``sqlite3`` in WAL mode. :meth:`MemoryStore.apply` writes a batch of validated
operations in one transaction, so a crash leaves either the whole batch or none of it, and logs
each applied event in ``history``. Retrieval is cosine top-k over stored float32 embeddings when
the caller has an embedder, otherwise BM25 over an FTS5 index kept in sync by triggers; where the
SQLite build has no FTS5 a token-overlap scorer stands in (``text_search`` says which).
"""
from __future__ import annotations

import logging
import sqlite3
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from . import retrieval
from .parsing import Event, UpdateOp

log = logging.getLogger(__name__)

Embedder = Callable[[Sequence[str]], np.ndarray]
"""Maps n texts to a float array ``[n, dim]``."""

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
_COLS = "id, user, text, created_at, updated_at, embedding IS NOT NULL"


@dataclass(frozen=True)
class Memory:
    id: str
    user: str
    text: str
    created_at: str
    updated_at: str
    has_embedding: bool = False


@dataclass(frozen=True)
class SearchHit:
    memory: Memory
    score: float


@dataclass(frozen=True)
class AppliedOp:
    """An event the store applied (and logged)."""

    event: Event
    memory_id: str
    old_text: str | None
    new_text: str | None


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    memory_id: str
    event: str
    old_text: str | None
    new_text: str | None
    at: str
    actor: str


@dataclass
class ApplyResult:
    applied: list[AppliedOp]
    skipped: list[str]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


class MemoryStore:
    """Memories of any number of users in one SQLite file (``":memory:"`` works for tests)."""

    def __init__(self, path: str | Path, use_fts: bool | None = None):
        self.path = str(path)
        self.con = sqlite3.connect(self.path, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=FULL")
        self.con.executescript(_SCHEMA)
        has_fts = fts5_available()
        if use_fts and not has_fts:
            raise RuntimeError("use_fts=True but this SQLite build lacks FTS5")
        self.use_fts = has_fts if use_fts is None else use_fts
        if self.use_fts and not self._table_exists("memories_fts"):
            self.con.executescript(f"BEGIN; {_FTS_SCHEMA} COMMIT;")
        if not has_fts:
            log.warning("memory store: this SQLite build has no FTS5; text search falls back to"
                        " token overlap")
        self.text_search = "fts5-bm25" if self.use_fts else "token-overlap"
        self.after_op_hook: Callable[[int, AppliedOp], None] | None = None
        """Test hook, called inside :meth:`apply`'s transaction after each op."""

    def _table_exists(self, name: str) -> bool:
        row = self.con.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone()
        return row is not None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def _log(self, memory_id: str, event: Event, old: str | None, new: str | None, at: str,
             actor: str) -> None:
        self.con.execute(
            "INSERT INTO history(memory_id, event, old_text, new_text, at, actor)"
            " VALUES (?, ?, ?, ?, ?, ?)", (memory_id, event.value, old, new, at, actor))

    def apply(self, ops: Sequence[UpdateOp], user: str, embed_fn: Embedder | None = None,
              at: str | None = None, actor: str = "loop") -> ApplyResult:
        """Apply validated ops for ``user`` in one transaction; log each applied event.

        ``embed_fn`` (if given) embeds ADD/UPDATE texts before the transaction opens. UPDATE or
        DELETE of an id that no longer exists for ``user``, NONE, and UPDATE to the same text are
        skipped (reported in ``skipped``, not logged). ``at`` overrides the timestamp.
        """
        at = at or now()
        live = [op for op in ops if op.event is not Event.NONE]
        texts = [op.text for op in live if op.event in (Event.ADD, Event.UPDATE)]
        vectors: list[bytes | None] = [None] * len(texts)
        if embed_fn is not None and texts:
            arr = np.asarray(embed_fn(texts), dtype=np.float32)
            if arr.ndim != 2 or arr.shape[0] != len(texts):
                raise ValueError(f"embedder returned shape {arr.shape} for {len(texts)} texts")
            vectors = [row.tobytes() for row in arr]
        vec_iter = iter(vectors)
        applied: list[AppliedOp] = []
        skipped = [f"NONE on {op.id}" for op in ops if op.event is Event.NONE]
        with self._transaction() as con:
            for op in live:
                vec = next(vec_iter) if op.event in (Event.ADD, Event.UPDATE) else None
                if op.event is Event.ADD:
                    mid = str(uuid.uuid4())
                    con.execute("INSERT INTO memories(id, user, text, created_at, updated_at,"
                                " embedding) VALUES (?, ?, ?, ?, ?, ?)",
                                (mid, user, op.text, at, at, vec))
                    done = AppliedOp(Event.ADD, mid, None, op.text)
                else:
                    row = con.execute("SELECT text FROM memories WHERE id = ? AND user = ?",
                                      (op.id, user)).fetchone()
                    if row is None:
                        skipped.append(f"{op.event.value} on missing id {op.id}")
                        continue
                    if op.event is Event.UPDATE:
                        if row[0] == op.text:
                            skipped.append(f"UPDATE on {op.id} with unchanged text")
                            continue
                        con.execute("UPDATE memories SET text = ?, updated_at = ?, embedding = ?"
                                    " WHERE id = ?", (op.text, at, vec, op.id))
                        done = AppliedOp(Event.UPDATE, op.id, row[0], op.text)
                    else:
                        con.execute("DELETE FROM memories WHERE id = ?", (op.id,))
                        done = AppliedOp(Event.DELETE, op.id, row[0], None)
                self._log(done.memory_id, done.event, done.old_text, done.new_text, at, actor)
                applied.append(done)
                if self.after_op_hook is not None:
                    self.after_op_hook(len(applied) - 1, done)
        return ApplyResult(applied, skipped)

    def delete(self, memory_id: str, actor: str = "user") -> bool:
        """Delete one memory (logged); ``False`` if it does not exist."""
        with self._transaction() as con:
            row = con.execute("SELECT text FROM memories WHERE id = ?", (memory_id,)).fetchone()
            if row is None:
                return False
            con.execute("DELETE FROM memories WHERE id = ?", (memory_id,))
            self._log(memory_id, Event.DELETE, row[0], None, now(), actor)
        return True

    def get(self, memory_id: str) -> Memory | None:
        row = self.con.execute(f"SELECT {_COLS} FROM memories WHERE id = ?",
                               (memory_id,)).fetchone()
        return Memory(*row[:5], bool(row[5])) if row else None

    def list(self, user: str | None = None, limit: int | None = None) -> list[Memory]:
        """Memories (of ``user``, or all), oldest first."""
        sql = f"SELECT {_COLS} FROM memories"
        args: list[object] = []
        if user is not None:
            sql += " WHERE user = ?"
            args.append(user)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [Memory(*r[:5], bool(r[5])) for r in self.con.execute(sql, args)]

    def count(self, user: str | None = None) -> int:
        if user is None:
            return self.con.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
        return self.con.execute("SELECT COUNT(*) FROM memories WHERE user = ?",
                                (user,)).fetchone()[0]

    def users(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT DISTINCT user FROM memories ORDER BY user")]

    def history(self, memory_id: str | None = None) -> list[HistoryEntry]:
        """Logged events (for one memory, or all), oldest first."""
        sql = "SELECT id, memory_id, event, old_text, new_text, at, actor FROM history"
        args = (memory_id,) if memory_id is not None else ()
        if memory_id is not None:
            sql += " WHERE memory_id = ?"
        return [HistoryEntry(*r) for r in self.con.execute(sql + " ORDER BY id", args)]

    def search(self, query_text: str, user: str, k: int = 5,
               query_embedding: np.ndarray | None = None) -> list[SearchHit]:
        """Top-``k`` memories of ``user``, best first.

        With ``query_embedding``: cosine similarity over memories that have an embedding of the
        same size (text search only if none has). Without: BM25 via FTS5, else token overlap.
        """
        if k <= 0:
            return []
        rows: list[tuple[tuple, float]] = []
        if query_embedding is not None:
            q = np.asarray(query_embedding, np.float32).ravel()
            rows = retrieval.vector_search(self.con, f"{_COLS}, embedding", q, user, k)
        if not rows and self.use_fts:
            rows = retrieval.fts_search(self.con, query_text, user, k)
        elif not rows:
            rows = retrieval.overlap_search(self.con, f"{_COLS}", query_text, user, k)
        return [SearchHit(Memory(*r[:5], bool(r[5])), score) for r, score in rows]

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
