"""Hybrid retrieval: the keyword and vector legs, fused, weighted by feedback, corrections first.

    query ──▶ keyword leg (BM25) ─┐
          └▶ embed ─▶ vector leg ─┴▶ reciprocal rank fusion ─▶ (cross-encoder rerank)
                                     ─▶ × feedback weight ─▶ corrections above what they correct

Fusion is by rank, not score (BM25 and cosine scores share no scale): each leg adds
weight / (rrf_k + rank). A chunk's weight comes from the ratings of answers it was given to:
1 + 0.5 (up - down) / (up + down + PRIOR), so it stays within 0.5..1.5 and a few votes move it
a little (one down vote: 0.9), never out of sight. A correction is a chunk of its own; where the
chunk it corrects is found, the correction is brought along and put just above it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, case, func, select

from tenshu.memory.index import Hits, Scope
from tenshu.store.collections import chunks, documents, turn_sources
from tenshu.store.feedback import feedback

PRIOR = 4  # votes of "no opinion" each chunk starts with
CORRECTION_BOOST = 1.5


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: int
    collection: str
    source: str  # the path or URL as ingested; "correction" for a correction
    title: str
    section: str
    page: int | None
    text: str
    score: float
    kind: str  # text | correction
    corrects: int | None  # a correction: the chunk it corrects
    start: int
    end: int

    def to_json(self) -> dict:
        return {"source": self.source, "title": self.title, "section": self.section,
                "page": self.page, "text": self.text, "score": round(self.score, 6),
                "chunk_id": self.chunk_id, "collection": self.collection, "kind": self.kind,
                "corrects": self.corrects, "start": self.start, "end": self.end}

    def citation(self) -> dict:
        """What an answer says it drew on (the response's `sources`)."""
        return {"source": self.source, "title": self.title, "section": self.section,
                "page": self.page, "chunk_id": self.chunk_id, "collection": self.collection}


def fuse(legs: list[tuple[Hits, float]], rrf_k: int) -> dict[int, float]:
    """Reciprocal rank fusion of each leg's hits (best first) with its weight."""
    fused: dict[int, float] = {}
    for hits, weight in legs:
        for rank, (chunk_id, _) in enumerate(hits, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (rrf_k + rank)
    return fused


def feedback_weights(conn: Connection, ids: list[int]) -> dict[int, float]:
    """Each chunk's weight from the ratings of the answers it was given to (1.0: no ratings)."""
    if not ids:
        return {}
    up = func.sum(case((feedback.c.rating > 0, 1), else_=0))
    down = func.sum(case((feedback.c.rating < 0, 1), else_=0))
    rows = conn.execute(
        select(turn_sources.c.chunk_id, up, down)
        .join(feedback, feedback.c.turn_id == turn_sources.c.turn_id)
        .where(turn_sources.c.chunk_id.in_(ids), feedback.c.kind == "rating")
        .group_by(turn_sources.c.chunk_id))
    return {chunk_id: weight(u or 0, d or 0) for chunk_id, u, d in rows}


def weight(up: int, down: int) -> float:
    return 1.0 + 0.5 * (up - down) / (up + down + PRIOR)


def corrections_of(conn: Connection, ids: list[int], collection_ids: tuple[int, ...]) -> dict:
    """The corrections (chunk id -> the chunk it corrects) of any of `ids`, in the collections
    searched."""
    if not ids:
        return {}
    # Looked up by `corrects` alone, the one index that narrows it to a few rows (given the
    # collection too, SQLite may prefer that index and read the whole collection).
    rows = conn.execute(select(chunks.c.id, chunks.c.corrects, chunks.c.kind,
                               chunks.c.collection_id).where(chunks.c.corrects.in_(ids)))
    return {r.id: r.corrects for r in rows
            if r.kind == "correction" and r.collection_id in collection_ids}


def load(conn: Connection, ids: list[int], names: dict[int, str]) -> dict[int, dict]:
    """The chunks' rows with their documents' sources, by id."""
    if not ids:
        return {}
    rows = conn.execute(
        select(chunks.c.id, chunks.c.collection_id, chunks.c.kind, chunks.c.corrects,
               chunks.c.text, chunks.c.title, chunks.c.section, chunks.c.page,
               chunks.c.char_start, chunks.c.char_end, documents.c.source)
        .outerjoin(documents, documents.c.id == chunks.c.document_id)
        .where(chunks.c.id.in_(ids)))
    return {row.id: {**row._mapping, "collection": names[row.collection_id]} for row in rows}


def rank(conn: Connection, scope: Scope, names: dict[int, str], fused: dict[int, float],
         k: int, rerank=None, query: str = "", rerank_top: int = 20) -> list[Hit]:
    """The k best chunks: fused scores, reranked, weighted by feedback, with corrections put
    above what they correct."""
    order = sorted(fused, key=lambda i: -fused[i])[:max(k * 3, rerank_top)]
    corrections = corrections_of(conn, order, scope.collection_ids) if not scope.filtered else {}
    for correction, corrected in corrections.items():
        fused.setdefault(correction, fused[corrected])
        if correction not in order:
            order.append(correction)
    rows = load(conn, order, names)
    order = [i for i in order if i in rows]  # deleted since the legs looked
    if rerank is not None and order:
        head = order[:rerank_top]
        scores = rerank(query, [rows[i]["text"] for i in head])
        head = [head[j] for j in np.argsort(-np.asarray(scores), kind="stable")]
        order = head + order[rerank_top:]
        fused = {i: 1.0 / (60 + r) for r, i in enumerate(order, start=1)}
    weights = feedback_weights(conn, order)
    score = {i: fused[i] * weights.get(i, 1.0)
             * (CORRECTION_BOOST if rows[i]["kind"] == "correction" else 1.0) for i in order}
    order.sort(key=lambda i: -score[i])
    for correction, corrected in corrections.items():  # a correction goes above what it corrects
        if correction in order and corrected in order and \
                order.index(correction) > order.index(corrected):
            order.remove(correction)
            order.insert(order.index(corrected), correction)
            score[correction] = max(score[correction], score[corrected])
    return [_hit(rows[i], score[i]) for i in order[:k]]


def _hit(row: dict, score: float) -> Hit:
    return Hit(row["id"], row["collection"], row["source"] or row["kind"], row["title"],
               row["section"], row["page"], row["text"], score, row["kind"], row["corrects"],
               row["char_start"], row["char_end"])
