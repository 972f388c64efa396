"""Scorers behind :meth:`memlora.memory.store.MemoryStore.search`.

Each returns ``(row, score)`` pairs, best first, where ``row`` starts with the columns the store
asked for. Cosine over stored float32 embeddings; BM25 over the FTS5 index; and a token-overlap
scorer for SQLite builds without FTS5 (``overlap / sqrt(memory length)``).
"""
from __future__ import annotations

import math
import re
import sqlite3

import numpy as np


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens, as both text scorers see them."""
    return re.findall(r"\w+", text.lower())


def vector_search(con: sqlite3.Connection, cols: str, q: np.ndarray, user: str,
                  k: int) -> list[tuple[tuple, float]]:
    """Cosine top-``k``; ``cols`` must end with the embedding column. Vectors of another size
    (a different embedder) are ignored."""
    rows = con.execute(f"SELECT {cols} FROM memories WHERE user = ? AND embedding IS NOT NULL"
                       " ORDER BY seq", (user,)).fetchall()
    rows = [r for r in rows if len(r[-1]) == q.nbytes]
    if not rows:
        return []
    mat = np.stack([np.frombuffer(r[-1], dtype=np.float32) for r in rows])
    denom = np.linalg.norm(mat, axis=1) * max(float(np.linalg.norm(q)), 1e-12)
    sims = mat @ q / np.maximum(denom, 1e-12)
    order = np.argsort(-sims, kind="stable")[:k]
    return [(rows[i], float(sims[i])) for i in order]


def fts_search(con: sqlite3.Connection, query: str, user: str,
               k: int) -> list[tuple[tuple, float]]:
    """BM25 top-``k`` over ``memories_fts``: any query word may match (OR of quoted terms)."""
    toks = list(dict.fromkeys(tokens(query)))
    if not toks:
        return []
    match = " OR ".join('"' + t.replace('"', '""') + '"' for t in toks)
    rows = con.execute(
        "SELECT m.id, m.user, m.text, m.created_at, m.updated_at, m.embedding IS NOT NULL,"
        " bm25(memories_fts) FROM memories_fts JOIN memories m ON m.seq = memories_fts.rowid"
        " WHERE memories_fts MATCH ? AND m.user = ? ORDER BY bm25(memories_fts), m.seq"
        " LIMIT ?", (match, user, k)).fetchall()
    return [(r, -float(r[6])) for r in rows]


def overlap_search(con: sqlite3.Connection, cols: str, query: str, user: str,
                   k: int) -> list[tuple[tuple, float]]:
    """Token-overlap top-``k``: shared distinct words over sqrt(memory length in words)."""
    q = set(tokens(query))
    scored = []
    for row in con.execute(f"SELECT {cols}, text FROM memories WHERE user = ? ORDER BY seq",
                           (user,)):
        words = tokens(row[-1])
        overlap = len(q & set(words))
        if overlap:
            scored.append((row, overlap / math.sqrt(len(words))))
    scored.sort(key=lambda rs: -rs[1])
    return scored[:k]
