"""What feedback does to memory (the seeds' passive learning loop, 002 §4.1).

A rating of an answer reaches the chunks the answer was given through turn_sources; the weight
it earns is computed where chunks are ranked (memory/retrieval.py), so a changed or deleted
rating is never out of step. A correction becomes a memory item of its own: a chunk in each of
the person's collections the answer drew on, holding the question and the corrected answer, linked
to the chunk it corrects, and ranked above it. `review` lists the chunks that keep being rated
down, for a person to fix or delete their source.
"""

from __future__ import annotations

import json

from sqlalchemy import Engine, case, func, insert, select

from tenshu.memory.index import note_dim
from tenshu.memory.ingest import embedding_text
from tenshu.store.collections import (
    Collection,
    bump,
    chunks,
    collections,
    documents,
    indexes,
    turn_sources,
)
from tenshu.store.conversations import turns
from tenshu.store.feedback import Feedback, feedback
from tenshu.store.people import Principal
from tenshu.store.sql import begin_write, utcnow

CORRECTION_TITLE = "Correction"


def correction_targets(engine: Engine, principal: Principal, turn_id: str) -> list[tuple]:
    """For a correction of the principal's turn: (collection id, index id, the chunk to
    correct, the question, the index's embedder), one per collection of theirs the answer drew
    on, with the best of its chunks the answer was given."""
    with engine.connect() as conn:
        question = conn.execute(select(turns.c.messages).where(
            turns.c.id == turn_id, turns.c.owner_id == principal.user_id)).scalar()
        if question is None:
            return []
        rows = conn.execute(
            select(chunks.c.collection_id, collections.c.index_id, turn_sources.c.chunk_id,
                   indexes.c.embedder)
            .join(chunks, chunks.c.id == turn_sources.c.chunk_id)
            .join(collections, collections.c.id == chunks.c.collection_id)
            .join(indexes, indexes.c.id == collections.c.index_id)
            .where(turn_sources.c.turn_id == turn_id,
                   turn_sources.c.owner_id == principal.user_id,
                   collections.c.owner_id == principal.user_id)  # theirs to write into
            .order_by(turn_sources.c.rank)).all()
    text = _last_user_text(json.loads(question))
    best: dict[int, tuple] = {}
    for collection_id, index_id, chunk_id, embedder in rows:
        best.setdefault(collection_id, (collection_id, index_id, chunk_id, text, embedder))
    return list(best.values())


def write_correction(engine: Engine, vectors, principal: Principal, item: Feedback,
                     targets: list[tuple], matrix) -> list[int]:
    """The correction's chunks (one per target) with their vectors; their ids."""
    now = utcnow()
    ids = []
    with begin_write(engine) as conn:
        for (collection_id, index_id, corrected, question, _), vector in zip(targets, matrix,
                                                                              strict=True):
            chunk_id = conn.execute(insert(chunks).values(
                collection_id=collection_id, document_id=None, owner_id=principal.user_id,
                kind="correction", corrects=corrected, turn_id=item.turn_id, seq=0,
                text=item.text, title=CORRECTION_TITLE, section=question[:300], page=None,
                char_start=0, char_end=len(item.text or ""), created_at=now)
                .returning(chunks.c.id)).scalar()
            note_dim(conn, index_id, len(vector))
            vectors.write(conn, index_id, [chunk_id], vector[None, :])
            bump(conn, collection_id)
            ids.append(chunk_id)
    return ids


def correction_text(question: str, text: str) -> str:
    return embedding_text(CORRECTION_TITLE, question[:300], text)


def review(engine: Engine, collection: Collection, limit: int = 20) -> list[dict]:
    """The collection's chunks rated down more than up, most down first."""
    up = func.sum(case((feedback.c.rating > 0, 1), else_=0)).label("up")
    down = func.sum(case((feedback.c.rating < 0, 1), else_=0)).label("down")
    stmt = (select(chunks.c.id, documents.c.source, chunks.c.section, chunks.c.page,
                   chunks.c.text, chunks.c.kind, up, down)
            .select_from(turn_sources)
            .join(feedback, (feedback.c.turn_id == turn_sources.c.turn_id)
                  & (feedback.c.kind == "rating"))
            .join(chunks, chunks.c.id == turn_sources.c.chunk_id)
            .outerjoin(documents, documents.c.id == chunks.c.document_id)
            .where(chunks.c.collection_id == collection.id)
            .group_by(chunks.c.id, documents.c.source, chunks.c.section, chunks.c.page,
                      chunks.c.text, chunks.c.kind)
            .having(down > up)
            .order_by(down.desc(), chunks.c.id)
            .limit(limit))
    with engine.connect() as conn:
        return [{"chunk_id": r.id, "source": r.source or r.kind, "section": r.section,
                 "page": r.page, "text": r.text, "up": int(r.up), "down": int(r.down)}
                for r in conn.execute(stmt)]


def _last_user_text(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(b.get("text", "") for b in content or []
                            if isinstance(b, dict) and b.get("type") == "text")
    return ""
