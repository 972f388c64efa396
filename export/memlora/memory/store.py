"""SQLite memory store: memories, their event history (undoable per batch), and retrieval.

One file, stdlib ``sqlite3`` in WAL mode (schema and safe opening in :mod:`.schema`).
:meth:`MemoryStore.apply` writes a batch of validated operations in one transaction, so a crash
leaves either the whole batch or none of it, logs each applied event in ``history``, and
:meth:`MemoryStore.undo_last` reverts the newest batch. Retrieval is cosine top-k over stored float32 embeddings when
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
from ..core.errors import MemloraError
from .parsing import MAX_TEXT_CHARS, Event, UpdateOp
from .schema import connect, fts5_available  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)
Embedder = Callable[[Sequence[str]], np.ndarray]
"""Maps n texts to a float array ``[n, dim]``."""

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
    batch: int | None = None
    undone: bool = False


@dataclass
class ApplyResult:
    applied: list[AppliedOp]
    skipped: list[str]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class MemoryStore:
    """Memories of any number of users in one SQLite file (``":memory:"`` works for tests)."""

    def __init__(self, path: str | Path, use_fts: bool | None = None, readonly: bool = False):
        """Open (or create) the store at ``path``.

        A file that is not SQLite, a folder, or another program's database is refused with a
        :class:`~memlora.errors.MemloraError` before anything is written; ``readonly`` opens an
        existing store without creating or migrating anything (for commands that only read).
        """
        self.path = str(path)
        self.con, self.use_fts = connect(self.path, use_fts, readonly)
        self.readonly = readonly
        self.text_search = "fts5-bm25" if self.use_fts else "token-overlap"
        self.after_op_hook: Callable[[int, AppliedOp], None] | None = None
        """Test hook, called inside :meth:`apply`'s transaction after each op."""

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise MemloraError("memory store opened read-only", self.path, "open it without readonly to change it")
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def _next_batch(self) -> int:
        return int(self.con.execute("SELECT COALESCE(MAX(batch), 0) + 1 FROM history").fetchone()[0])

    def _log(self, done: AppliedOp, at: str, actor: str, batch: int, user: str,
             old: tuple | None = None) -> None:
        """One history row; ``old`` = (embedding, created_at) of the row before an UPDATE/DELETE."""
        old_vec, old_created = old if old is not None else (None, None)
        self.con.execute(
            "INSERT INTO history(memory_id, event, old_text, new_text, at, actor, batch, user, old_embedding,"
            " old_created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (done.memory_id, done.event.value, done.old_text, done.new_text, at, actor, batch, user,
             old_vec, old_created))

    def _apply_one(self, op: UpdateOp, user: str, vec: bytes | None, at: str
                   ) -> tuple[AppliedOp | None, str | None, tuple | None]:
        """Apply one op inside the open transaction: (applied, reason skipped, old row state)."""
        con = self.con
        if op.event in (Event.ADD, Event.UPDATE) and len(op.text) > MAX_TEXT_CHARS:
            return None, f"{op.event.value} text of {len(op.text)} chars (over {MAX_TEXT_CHARS})", None
        if op.event is Event.ADD:
            dup = con.execute("SELECT id FROM memories WHERE user = ? AND text = ?", (user, op.text)).fetchone()
            if dup is not None:  # an exact duplicate would only crowd the top-k
                return None, f"ADD duplicate of {dup[0]}", None
            mid = str(uuid.uuid4())
            con.execute("INSERT INTO memories(id, user, text, created_at, updated_at, embedding)"
                        " VALUES (?, ?, ?, ?, ?, ?)", (mid, user, op.text, at, at, vec))
            return AppliedOp(Event.ADD, mid, None, op.text), None, None
        row = con.execute("SELECT text, embedding, created_at FROM memories WHERE id = ? AND user = ?",
                          (op.id, user)).fetchone()
        if row is None:
            return None, f"{op.event.value} on missing id {op.id}", None
        if op.event is Event.UPDATE:
            if row[0] == op.text:
                return None, f"UPDATE on {op.id} with unchanged text", None
            con.execute("UPDATE memories SET text = ?, updated_at = ?, embedding = ? WHERE id = ?",
                        (op.text, at, vec, op.id))
            return AppliedOp(Event.UPDATE, op.id, row[0], op.text), None, (row[1], row[2])
        con.execute("DELETE FROM memories WHERE id = ?", (op.id,))
        return AppliedOp(Event.DELETE, op.id, row[0], None), None, (row[1], row[2])

    def apply(self, ops: Sequence[UpdateOp], user: str, embed_fn: Embedder | None = None,
              at: str | None = None, actor: str = "loop") -> ApplyResult:
        """Apply validated ops for ``user`` in one transaction (one history batch); log each event.

        ``embed_fn`` (if given) embeds ADD/UPDATE texts before the transaction opens. Skipped and
        reported in ``skipped`` (not logged): NONE, UPDATE or DELETE of an id that no longer exists
        for ``user``, UPDATE to the same text, an ADD of a text ``user`` already has, and texts over
        ``MAX_TEXT_CHARS``. ``at`` overrides the timestamp.
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
        with self._transaction():
            batch = self._next_batch()
            for op in live:
                vec = next(vec_iter) if op.event in (Event.ADD, Event.UPDATE) else None
                done, why, old = self._apply_one(op, user, vec, at)
                if done is None:
                    skipped.append(why)
                    continue
                self._log(done, at, actor, batch, user, old)
                applied.append(done)
                if self.after_op_hook is not None:
                    self.after_op_hook(len(applied) - 1, done)
        return ApplyResult(applied, skipped)

    def delete(self, memory_id: str, actor: str = "user") -> bool:
        """Delete one memory (logged as its own batch); ``False`` if it does not exist."""
        with self._transaction() as con:
            row = con.execute("SELECT text, embedding, created_at, user FROM memories WHERE id = ?",
                              (memory_id,)).fetchone()
            if row is None:
                return False
            con.execute("DELETE FROM memories WHERE id = ?", (memory_id,))
            self._log(AppliedOp(Event.DELETE, memory_id, row[0], None), now(), actor, self._next_batch(), row[3],
                      (row[1], row[2]))
        return True

    def undo_last(self, actor: str = "undo") -> list[AppliedOp]:
        """Revert the newest batch not yet undone (a loop update, a delete), in one transaction.

        Events are reverted newest first: an ADD is deleted, an UPDATE gets its old text and
        embedding back, a DELETE is re-inserted with its id, text, embedding and creation time.
        The reverting events are logged (``actor``) as a new batch; returns them, [] if nothing to undo.
        """
        out: list[AppliedOp] = []
        with self._transaction() as con:
            row = con.execute("SELECT MAX(batch) FROM history WHERE undone = 0 AND actor != ?", (actor,)).fetchone()
            if row is None or row[0] is None:
                return out
            target, batch, at = row[0], self._next_batch(), now()
            events = con.execute("SELECT memory_id, event, old_text, new_text, user, old_embedding, old_created_at"
                                 " FROM history WHERE batch = ? ORDER BY id DESC", (target,)).fetchall()
            for mid, event, old_text, new_text, user, old_vec, old_created in events:
                done = self._revert(mid, Event(event), old_text, new_text, user, old_vec, old_created, at)
                if done is not None:
                    self._log(done, at, actor, batch, user)
                    out.append(done)
            con.execute("UPDATE history SET undone = 1 WHERE batch = ?", (target,))
        return out

    def _revert(self, mid: str, event: Event, old_text, new_text, user, old_vec, old_created,
                at: str) -> AppliedOp | None:
        con = self.con
        cur = con.execute("SELECT text FROM memories WHERE id = ?", (mid,)).fetchone()
        if event is Event.ADD and cur is not None:
            con.execute("DELETE FROM memories WHERE id = ?", (mid,))
            return AppliedOp(Event.DELETE, mid, cur[0], None)
        if event is Event.UPDATE and cur is not None:
            con.execute("UPDATE memories SET text = ?, updated_at = ?, embedding = ? WHERE id = ?",
                        (old_text, at, old_vec, mid))
            return AppliedOp(Event.UPDATE, mid, cur[0], old_text)
        if event is Event.DELETE and cur is None and user is not None:
            con.execute("INSERT INTO memories(id, user, text, created_at, updated_at, embedding)"
                        " VALUES (?, ?, ?, ?, ?, ?)", (mid, user, old_text, old_created or at, at, old_vec))
            return AppliedOp(Event.ADD, mid, None, old_text)
        return None  # changed since (or logged by an older memlora without the needed columns)
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
        sql = "SELECT id, memory_id, event, old_text, new_text, at, actor, batch, undone = 1 FROM history"
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
