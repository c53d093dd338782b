"""Rebuilding a collection's index: its chunks embedded again (by a new embedder, or the same
one) into a new index built beside the live one, then swapped in.

While the new index is built, searches use the old one and ingests go on writing to it; what
they add meanwhile is embedded into the new index before the swap, which happens in one
transaction that finds nothing left to embed. The old index's vectors are then deleted. Vectors
of two embedders are never searched together.
"""

from __future__ import annotations

from sqlalchemy import Engine, and_, delete, insert, select, update

from tenshu.memory.embedders import MemoryEmbedder
from tenshu.memory.index import note_dim
from tenshu.memory.ingest import embedding_text
from tenshu.store.collections import (
    Collection,
    bump,
    chunks,
    collections,
    documents,
    drop_index,
    indexes,
    vectors,
)
from tenshu.store.sql import begin_write, utcnow

BATCH = 256
MAX_ROUNDS = 20  # catching up with concurrent ingests, before giving up on the swap


async def rebuild(engine: Engine, collection: Collection, embedder: MemoryEmbedder, leg, *,
                  progress=None) -> dict:
    """Build and swap in a new index of `collection` with `embedder`; what was done."""
    import asyncio

    index_id = await asyncio.to_thread(_new_index, engine, collection, embedder.name)
    embedded = 0
    try:
        for _ in range(MAX_ROUNDS):
            while batch := await asyncio.to_thread(_missing, engine, collection, index_id):
                matrix = await embedder.embed([embedding_text(t, s, x) for _, t, s, x in batch])
                await asyncio.to_thread(_write, engine, leg, index_id, [r[0] for r in batch],
                                        matrix)
                embedded += len(batch)
                if progress is not None:
                    progress(len(batch))
            if await asyncio.to_thread(_swap, engine, collection, index_id):
                return {"collection": collection.name, "embedder": embedder.name,
                        "chunks": embedded, "index": index_id}
        raise RuntimeError("the collection kept changing while it was reindexed; try again")
    except BaseException:
        await asyncio.to_thread(_drop, engine, index_id)
        raise


def _new_index(engine: Engine, collection: Collection, embedder: str) -> int:
    with begin_write(engine) as conn:
        return conn.execute(insert(indexes).values(
            collection_id=collection.id, embedder=embedder, status="building", version=0,
            created_at=utcnow()).returning(indexes.c.id)).scalar()


def _missing(engine: Engine, collection: Collection, index_id: int) -> list[tuple]:
    """Up to BATCH of the collection's chunks the new index has no vector for."""
    has = select(vectors.c.chunk_id).where(vectors.c.index_id == index_id,
                                           vectors.c.chunk_id == chunks.c.id).exists()
    with engine.connect() as conn:
        return conn.execute(select(chunks.c.id, chunks.c.title, chunks.c.section, chunks.c.text)
                            .where(chunks.c.collection_id == collection.id, ~has)
                            .order_by(chunks.c.id).limit(BATCH)).all()


def _write(engine: Engine, leg, index_id: int, ids: list[int], matrix) -> None:
    with begin_write(engine) as conn:
        note_dim(conn, index_id, matrix.shape[1])
        leg.write(conn, index_id, ids, matrix)


def _swap(engine: Engine, collection: Collection, index_id: int) -> bool:
    """Make the new index live, if it has every chunk; whether it did."""
    with begin_write(engine) as conn:
        has = select(vectors.c.chunk_id).where(vectors.c.index_id == index_id,
                                               vectors.c.chunk_id == chunks.c.id).exists()
        if conn.execute(select(chunks.c.id).where(chunks.c.collection_id == collection.id,
                                                  ~has).limit(1)).first() is not None:
            return False
        old = conn.execute(select(collections.c.index_id)
                           .where(collections.c.id == collection.id)).scalar()
        conn.execute(update(collections).where(collections.c.id == collection.id)
                     .values(index_id=index_id, updated_at=utcnow()))
        conn.execute(update(indexes).where(indexes.c.id == index_id).values(status="ready"))
        bump(conn, collection.id)
        if old is not None and old != index_id:
            conn.execute(delete(vectors).where(vectors.c.index_id == old))
            conn.execute(delete(indexes).where(indexes.c.id == old))
            drop_index(conn, old)  # last: it locks chunk_vectors until the commit
    return True


def _drop(engine: Engine, index_id: int) -> None:
    with begin_write(engine) as conn:
        conn.execute(delete(vectors).where(vectors.c.index_id == index_id))
        conn.execute(delete(indexes).where(and_(indexes.c.id == index_id,
                                                indexes.c.status == "building")))
        drop_index(conn, index_id)


def fail_unfinished(engine: Engine) -> int:
    """Documents a stopped server left pending or indexing: failed, so nobody waits on them."""
    with begin_write(engine) as conn:
        return conn.execute(update(documents).where(
            documents.c.status.in_(("pending", "indexing"))).values(
            status="failed", error="the server stopped before it was indexed; add it again",
            updated_at=utcnow())).rowcount
