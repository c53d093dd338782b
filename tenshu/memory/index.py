"""The two legs of retrieval over the store's chunks: keywords (BM25) and vectors.

    SQLite       keywords: FTS5 (bm25)           vectors: ExactVectors (in this process)
    PostgreSQL   keywords: tsvector (memory/pg)  vectors: pgvector HNSW where the server has it,
                                                          else ExactVectors over the stored bytes

Each leg takes a Scope (which indexes, and the filters on source and date) and applies it inside
its query, before its top n, never after: a filter never leaves a leg with fewer hits than it
could have had.

Why exact vectors by default: the default store must work on Python builds that cannot load
SQLite extensions (pyenv's, macOS's system Python), which rules out sqlite-vec in the default
path. An exact matrix-vector product over every row loses no recall to an approximate graph,
needs no build (usearch's HNSW took 81 s to build at 100k rows here, and found 77% of the true
top 10 with its defaults), and a filter is a mask on the same arrays rather than a walk that
may come back short. Its costs are memory and a time linear in the rows: they are kept as
float16 (768 bytes per chunk, 75 MB at 100k), loaded on first search and kept in step by the
index's version counter, which every write bumps. benchmarks/memory_vectors.py measures the
options side by side (docs/memory.md has the figures); past a few million chunks, PostgreSQL
with pgvector is the path.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import Connection, Engine, and_, bindparam, insert, select, text, update

from tenshu.store.collections import chunks, documents, indexes, vectors

Hits = list[tuple[int, float]]  # (chunk id, the leg's score), best first


@dataclass(frozen=True, slots=True)
class Scope:
    """Where to look: the live index of each collection searched, and the filters."""

    collection_ids: tuple[int, ...]
    index_ids: tuple[int, ...]
    source: str | None = None  # a glob over documents' sources (`*` and `?`)
    since: datetime | None = None  # documents changed at or after
    until: datetime | None = None  # documents changed before

    @property
    def filtered(self) -> bool:
        return self.source is not None or self.since is not None or self.until is not None

    def document_condition(self):
        """The filters as a condition on `documents` (None: no filter)."""
        conditions = []
        if self.source is not None:
            conditions.append(documents.c.source.like(glob_to_like(self.source), escape="\\"))
        if self.since is not None:
            conditions.append(documents.c.updated_at >= self.since)
        if self.until is not None:
            conditions.append(documents.c.updated_at < self.until)
        return and_(*conditions) if conditions else None


def glob_to_like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def note_dim(conn: Connection, index_id: int, dim: int) -> None:
    """Record an index's dimension with its first vectors; refuse vectors of another (they
    would be another model's, and an index never mixes two)."""
    known = conn.execute(select(indexes.c.dim).where(indexes.c.id == index_id)).scalar()
    if known is None:
        conn.execute(update(indexes).where(indexes.c.id == index_id).values(dim=dim))
    elif known != dim:
        raise ValueError(f"memory index {index_id} holds {known}-dimensional vectors, not {dim}"
                         "; its embedder changed: run `tenshu memory reindex`")


# -- keywords -------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)
# Words so common that matching them ranks nothing but costs a pass over most of the index.
_COMMON = ("a an and are as at be but by can do does for from has have how i if in into is it "
           "its of on or that the their then there these this to was what when where which who "
           "why will with you your")
STOPWORDS = frozenset(_COMMON.split())


COMMON = 0.1  # a word in more than this share of all chunks is too common to search by...
LARGE = 50_000  # ...in an index of more chunks than this


def keyword_terms(query: str) -> list[str]:
    words = [w.lower() for w in _WORD.findall(query)]
    kept = [w for w in words if w not in STOPWORDS]
    return list(dict.fromkeys(kept or words))[:64]


class Fts5Keywords:
    """BM25 over SQLite's FTS5 table chunks_fts (title weighs twice the text).

    Two passes, both exact. FTS5 scores every match before it sorts, and joining each match to
    its chunk to check the scope doubles that; so the first pass ranks the whole index alone
    and keeps its best WIDE x n, and then checks only those against the scope. The best n that
    pass are the scope's best n (anything the scope allows further down ranks below them);
    where fewer than n pass, the second pass ranks within the scope, joined, as before.
    """

    WIDE = 4

    def search(self, conn: Connection, scope: Scope, query: str, n: int) -> Hits:
        terms = keyword_terms(query)
        if not terms or not scope.collection_ids:
            return []
        terms = self._discriminating(conn, terms)
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        best = conn.execute(text(
            "SELECT rowid, bm25(chunks_fts, 2.0, 1.0, 1.0) AS score FROM chunks_fts "
            "WHERE chunks_fts MATCH :match ORDER BY score LIMIT :n"),
            {"match": match, "n": n * self.WIDE}).all()
        allowed = self._within(conn, scope, [rowid for rowid, _ in best])
        kept = [(rowid, -score) for rowid, score in best if rowid in allowed]
        if len(kept) >= n or len(best) < n * self.WIDE:  # enough, or every match was seen
            return kept[:n]
        return self._scoped(conn, scope, match, n)

    def _discriminating(self, conn: Connection, terms: list[str]) -> list[str]:
        """In a LARGE index, the terms without those in more than COMMON of the chunks, when
        any rarer one is left (as Elasticsearch's cutoff_frequency did): a word in a fifth of
        the index adds little to a chunk's rank (its BM25 weight is a third of a rare word's)
        and most of the cost, since every chunk holding it is scored. On 1,000 man pages it
        cost 0.009 of hybrid nDCG@10 (0.831 -> 0.822); at 100k chunks it makes the keyword
        leg 2-4x faster (docs/memory.md). Smaller indexes are searched with every term."""
        if len(terms) < 2:
            return terms
        # the highest id, not a count (which reads the whole table): deleted chunks make it
        # larger, and a word only more likely to be kept
        total = conn.execute(text("SELECT max(id) FROM chunks")).scalar() or 0
        if total <= LARGE:
            return terms
        # counted by FTS5 itself, so a word is stemmed as the index was (a few ms in all)
        count = text("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH :term")
        rare = [t for t in terms if conn.execute(
            count, {"term": '"' + t.replace('"', '""') + '"'}).scalar() <= COMMON * total]
        return rare or terms

    def _within(self, conn: Connection, scope: Scope, ids: list[int]) -> set[int]:
        """Those of the chunks `ids` that the scope allows."""
        if not ids:
            return set()
        stmt = select(chunks.c.id).where(chunks.c.id.in_(ids),
                                         chunks.c.collection_id.in_(scope.collection_ids))
        if scope.filtered:
            stmt = stmt.join(documents, documents.c.id == chunks.c.document_id).where(
                scope.document_condition())
        return set(conn.execute(stmt).scalars())

    def _scoped(self, conn: Connection, scope: Scope, match: str, n: int) -> Hits:
        sql = ("SELECT c.id, bm25(chunks_fts, 2.0, 1.0, 1.0) AS score FROM chunks_fts "
               "JOIN chunks c ON c.id = chunks_fts.rowid ")
        params: dict = {"match": match, "n": n, "ids": list(scope.collection_ids)}
        where = "chunks_fts MATCH :match AND c.collection_id IN :ids"
        if scope.filtered:
            sql += "JOIN documents d ON d.id = c.document_id "
            where += " AND " + _document_filters(scope, params)
        stmt = text(sql + "WHERE " + where + " ORDER BY score LIMIT :n").bindparams(
            bindparam("ids", expanding=True))
        return [(row.id, -row.score) for row in conn.execute(stmt, params)]


def _document_filters(scope: Scope, params: dict) -> str:
    parts = []
    if scope.source is not None:
        parts.append("d.source LIKE :source ESCAPE '\\'")
        params["source"] = glob_to_like(scope.source)
    if scope.since is not None:
        parts.append("d.updated_at >= :since")
        params["since"] = _sql_time(scope.since)
    if scope.until is not None:
        parts.append("d.updated_at < :until")
        params["until"] = _sql_time(scope.until)
    return " AND ".join(parts)


def _sql_time(value: datetime) -> str:
    from tenshu.store.sql import _sqlite_time

    return _sqlite_time(value)


# -- vectors --------------------------------------------------------------------------------------

@dataclass
class _Matrix:
    version: int
    ids: np.ndarray  # (n,) int64 chunk ids
    docs: np.ndarray  # (n,) int64 document ids, -1 for corrections
    vectors: np.ndarray  # (n, dim) float16, normalized


class ExactVectors:
    """Exact cosine search over each index's vectors, held in this process as one matrix per
    index and refreshed when the index's version moves (another process may have written)."""

    def __init__(self) -> None:
        self._cache: dict[int, _Matrix] = {}
        self._lock = threading.Lock()

    def write(self, conn: Connection, index_id: int, chunk_ids: Sequence[int],
              matrix: np.ndarray) -> None:
        conn.execute(insert(vectors), [
            {"index_id": index_id, "chunk_id": i, "vector": to_bytes(v)}
            for i, v in zip(chunk_ids, matrix, strict=True)])

    def search(self, conn: Connection, scope: Scope, query: np.ndarray, n: int) -> Hits:
        allowed = None
        if scope.filtered:
            allowed = np.fromiter(conn.execute(
                select(documents.c.id).where(documents.c.collection_id.in_(scope.collection_ids),
                                             scope.document_condition())).scalars(), np.int64)
        found: Hits = []
        for index_id in scope.index_ids:
            m = self.matrix(conn, index_id)
            if not len(m.ids):
                continue
            scores = cosine_scores(m.vectors, query)  # (n,)
            if allowed is not None:
                scores = np.where(np.isin(m.docs, allowed), scores, -np.inf)
            top = min(n, len(scores))
            best = np.argpartition(-scores, top - 1)[:top]
            found += [(int(m.ids[i]), float(scores[i])) for i in best if scores[i] > -np.inf]
        found.sort(key=lambda hit: -hit[1])
        return found[:n]

    def matrix(self, conn: Connection, index_id: int) -> _Matrix:
        version = conn.execute(select(indexes.c.version)
                               .where(indexes.c.id == index_id)).scalar() or 0
        with self._lock:
            cached = self._cache.get(index_id)
            if cached is not None and cached.version == version:
                return cached
            self._cache[index_id] = fresh = _refresh(conn, index_id, version, cached)
            return fresh

    def forget(self, index_id: int) -> None:
        with self._lock:
            self._cache.pop(index_id, None)


def _refresh(conn: Connection, index_id: int, version: int, cached: _Matrix | None) -> _Matrix:
    """The index's matrix at `version`: the cached rows that are still there, and the rest read
    from the store (all of it in one query when nothing is cached)."""
    if cached is None or not len(cached.ids):
        rows = conn.execute(select(vectors.c.chunk_id, chunks.c.document_id, vectors.c.vector)
                            .join(chunks, chunks.c.id == vectors.c.chunk_id)
                            .where(vectors.c.index_id == index_id)).all()
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        docs = np.fromiter((-1 if r[1] is None else r[1] for r in rows), np.int64, len(rows))
        return _Matrix(version, ids, docs, _stack([r[2] for r in rows]))
    present = conn.execute(select(vectors.c.chunk_id, chunks.c.document_id).join(
        chunks, chunks.c.id == vectors.c.chunk_id).where(vectors.c.index_id == index_id)).all()
    ids = np.fromiter((r[0] for r in present), np.int64, len(present))
    docs = np.fromiter((-1 if r[1] is None else r[1] for r in present), np.int64, len(present))
    keep = np.isin(cached.ids, ids)
    have_ids, have = cached.ids[keep], cached.vectors[keep]
    missing = np.setdiff1d(ids, have_ids)
    read_ids, blobs = [], []
    for start in range(0, len(missing), 5000):
        part = [int(i) for i in missing[start:start + 5000]]
        for chunk_id, blob in conn.execute(select(vectors.c.chunk_id, vectors.c.vector).where(
                vectors.c.index_id == index_id, vectors.c.chunk_id.in_(part))):
            read_ids.append(chunk_id)
            blobs.append(blob)
    rows = np.concatenate([have_ids, np.asarray(read_ids, np.int64)])
    stacked = np.concatenate([have, _stack(blobs, have.shape[1])])
    order = np.argsort(rows, kind="stable")
    matrix = stacked[order[np.searchsorted(rows[order], ids)]]  # in the order of `ids`
    return _Matrix(version, ids, docs, matrix)


def _stack(blobs: list[bytes], dim: int | None = None) -> np.ndarray:
    """float32 rows' bytes as one float16 matrix: one buffer, no Python loop per row."""
    if not blobs:
        return np.empty((0, dim or 0), np.float16)
    dim = len(blobs[0]) // 4
    return np.frombuffer(b"".join(blobs), "<f4").reshape(len(blobs), dim).astype(np.float16)


def cosine_scores(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine scores of every row (both sides normalized), as float32. The rows are float16:
    the product reads half the memory of float32, which is what bounds it (about 2x faster at
    100k rows), and half-precision error (~1e-3) is far below the gaps fusion cares about.
    torch's matrix-vector product has fast float16 kernels; numpy's has none."""
    import torch

    product = torch.mv(torch.from_numpy(matrix), torch.from_numpy(query.astype(np.float16)))
    return product.float().numpy()


def legs_for(engine: Engine):
    """The keyword and vector legs for this store's database."""
    if engine.dialect.name == "postgresql":
        from tenshu.memory.pg import legs

        return legs(engine)
    return Fts5Keywords(), ExactVectors()
