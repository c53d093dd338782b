"""Ingestion: files, folders, uploads, URLs and conversations into a collection's index.

    walk ──▶ read + hash ──▶ unchanged? skip ──▶ parse + chunk ──▶ embed (batched) ──▶ write
                 (a worker thread, ahead of the embedder)              (one transaction a batch)

Incremental: each document keeps the hash of what was indexed; a document whose bytes did not
change is skipped before it is parsed, and a document gone from a folder that was ingested is
removed. A batch of documents is written in one transaction — its chunks, their vectors and the
documents' rows together — so a run killed at any point leaves each document either as it was
or wholly replaced, and running it again resumes without duplicates. A file that cannot be read
is a failure of its own (recorded as a failed document, listed in the summary); the run goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, delete, insert, select, update

from tenshu.memory.chunking import Chunk, chunk
from tenshu.memory.embedders import MemoryEmbedder
from tenshu.memory.index import note_dim
from tenshu.memory.readers import Document, ReadError, read_bytes, walk
from tenshu.store.collections import (
    Collection,
    bump,
    chunks,
    delete_chunks_where,
    documents,
)
from tenshu.store.sql import begin_write, utcnow

BATCH_CHUNKS = 128  # chunks embedded together, and written in one transaction
AHEAD = 4  # documents parsed ahead of the embedder


@dataclass
class Failure:
    source: str
    error: str


@dataclass
class Summary:
    collection: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failed: list[Failure] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"collection": self.collection, "added": self.added, "updated": self.updated,
                "unchanged": self.unchanged, "removed": self.removed, "chunks": self.chunks,
                "bytes": self.bytes, "seconds": round(self.seconds, 3),
                "failed": [{"source": f.source, "error": f.error} for f in self.failed]}


@dataclass
class Parsed:
    """A document read and chunked, ready to embed."""

    source: str
    content_hash: str
    size: int
    document: Document
    chunks: list[Chunk]


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def embedding_text(title: str, section: str, text: str) -> str:
    """What is embedded for a chunk: where it sits, then its words."""
    head = " — ".join(part for part in (title, section) if part)
    return f"{head}\n{text}" if head else text


class Ingester:
    """Fills one collection (the caller's own, resolved for writing)."""

    def __init__(self, engine, collection: Collection, embedder: MemoryEmbedder, vectors, *,
                 chunk_tokens: int, overlap_tokens: int, max_bytes: int) -> None:
        self.engine = engine
        self.collection = collection
        self.embedder = embedder
        self.vectors = vectors  # the vector leg: it writes vectors its own way
        self.chunk_tokens, self.overlap_tokens = chunk_tokens, overlap_tokens
        self.max_bytes = max_bytes

    # -- what is there --------------------------------------------------------------------------

    def indexed(self) -> dict[str, tuple[int, str | None, str]]:
        """The collection's documents: source -> (id, content hash, status)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(documents.c.source, documents.c.id,
                                       documents.c.content_hash, documents.c.status)
                                .where(documents.c.collection_id == self.collection.id))
            return {r.source: (r.id, r.content_hash, r.status) for r in rows}

    # -- paths ----------------------------------------------------------------------------------

    async def ingest_paths(self, paths: Iterable[Path], *,
                           progress: Callable[[int], None] | None = None,
                           total: Callable[[int], None] | None = None) -> Summary:
        """Ingest files and folders; remove what is gone from the folders. `total` is told how
        many files there are, `progress` how many more are done."""
        began = time.perf_counter()
        summary = Summary(self.collection.name)
        roots = [p.expanduser().absolute() for p in paths]
        known = await asyncio.to_thread(self.indexed)
        present = [r for r in roots if r.exists() or r.is_symlink()]
        for root in roots:
            if root not in present and not any(_under(s, [root]) for s in known):
                summary.failed.append(Failure(str(root), f"{root}: no such file or directory"))
        # (a root that is gone and was ingested before: its documents are removed below)
        listed = await asyncio.to_thread(lambda: list(walk(present, max_bytes=self.max_bytes)))
        if total is not None:
            total(len(listed))
        seen: set[str] = set()
        queue: asyncio.Queue = asyncio.Queue(AHEAD)

        async def produce() -> None:
            try:
                for path, error in listed:
                    source = str(path)
                    seen.add(source)
                    if error is None:
                        item = await asyncio.to_thread(self._parse_file, path,
                                                       known.get(source))
                    else:
                        item = error
                    await queue.put((source, item))
            finally:
                await queue.put(None)

        producer = asyncio.create_task(produce())
        try:
            await self._consume(queue, known, summary, progress)
            await producer  # its failure, if it failed
        finally:
            producer.cancel()
        gone = [s for s in known if s not in seen and _under(s, roots)]
        if gone:
            summary.removed = await asyncio.to_thread(self.remove, gone)
        summary.seconds = time.perf_counter() - began
        return summary

    def _parse_file(self, path: Path, known) -> Parsed | str | ReadError:
        """The file parsed and chunked; "unchanged" when its bytes are what was indexed."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            return ReadError(f"{path}: cannot be read ({exc.strerror or exc})")
        if len(data) > self.max_bytes:  # it grew since it was listed
            return ReadError(f"{path}: larger than the {self.max_bytes // 2**20} MB limit "
                             "([memory] max_file_mb)")
        digest = content_hash(data)
        if known is not None and known[1] == digest and known[2] == "ready":
            return "unchanged"
        return self.parse(data, str(path), digest)

    def parse(self, data: bytes, source: str, digest: str | None = None,
              content_type: str | None = None) -> Parsed | ReadError:
        try:
            document = read_bytes(data, source, content_type=content_type)
        except ReadError as exc:
            return exc
        pieces = chunk(document, max_tokens=self.chunk_tokens, overlap=self.overlap_tokens,
                       count=self.embedder.counter())
        if not pieces:
            return ReadError(f"{source}: no text in it")
        return Parsed(source, digest or content_hash(data), len(data), document, pieces)

    async def _consume(self, queue: asyncio.Queue, known, summary: Summary,
                       progress: Callable[[int], None] | None) -> None:
        batch: list[Parsed] = []
        while (item := await queue.get()) is not None:
            source, parsed = item
            if parsed == "unchanged":
                summary.unchanged += 1
            elif isinstance(parsed, ReadError):
                summary.failed.append(Failure(source, str(parsed)))
                await asyncio.to_thread(self.fail, source, str(parsed))
            else:
                batch.append(parsed)
                if sum(len(p.chunks) for p in batch) >= BATCH_CHUNKS:
                    await self.index(batch, known, summary)
                    if progress is not None:
                        progress(len(batch))
                    batch = []
                continue
            if progress is not None:
                progress(1)
        if batch:
            await self.index(batch, known, summary)
            if progress is not None:
                progress(len(batch))

    # -- embedding and writing ------------------------------------------------------------------

    async def index(self, batch: list[Parsed], known, summary: Summary) -> list[int]:
        """Embed the documents' chunks and write them, with their documents, in one
        transaction; their document ids."""
        texts = [embedding_text(p.document.title, c.section, c.text)
                 for p in batch for c in p.chunks]
        matrix = await self.embedder.embed(texts)
        ids = await asyncio.to_thread(self._write, batch, matrix)
        for p in batch:
            if p.source in known:
                summary.updated += 1
            else:
                summary.added += 1
            summary.chunks += len(p.chunks)
            summary.bytes += p.size
        return ids

    def _write(self, batch: list[Parsed], matrix) -> list[int]:
        now = utcnow()
        index_id = self.collection.index_id
        with begin_write(self.engine) as conn:
            ids, at = [], 0
            for p in batch:
                doc_id = self._document_row(conn, p, now)
                rows = [dict(collection_id=self.collection.id, document_id=doc_id,
                             owner_id=self.collection.owner_id, kind="text", corrects=None,
                             turn_id=None, seq=i, text=c.text, title=p.document.title,
                             section=c.section, page=c.page, char_start=c.start,
                             char_end=c.end, created_at=now)
                        for i, c in enumerate(p.chunks)]
                chunk_ids = list(conn.execute(
                    insert(chunks).returning(chunks.c.id, sort_by_parameter_order=True),
                    rows).scalars())
                note_dim(conn, index_id, matrix.shape[1])
                self.vectors.write(conn, index_id, chunk_ids, matrix[at:at + len(rows)])
                at += len(rows)
                ids.append(doc_id)
            bump(conn, self.collection.id)
        return ids

    def _document_row(self, conn: Connection, p: Parsed, now) -> int:
        """The document's row, emptied of its old chunks (or made), as indexed now."""
        values = dict(title=p.document.title, kind=p.document.kind, content_hash=p.content_hash,
                      status="ready", error=None, chunks=len(p.chunks), bytes=p.size,
                      updated_at=now)
        mine = (documents.c.collection_id == self.collection.id) & (documents.c.source == p.source)
        doc_id = conn.execute(select(documents.c.id).where(mine)).scalar()
        if doc_id is None:
            return conn.execute(insert(documents).values(
                collection_id=self.collection.id, owner_id=self.collection.owner_id,
                source=p.source, created_at=now, **values).returning(documents.c.id)).scalar()
        delete_chunks_where(conn, chunks.c.document_id == doc_id)
        conn.execute(update(documents).where(documents.c.id == doc_id).values(**values))
        return doc_id

    def pending(self, source: str) -> int:
        """A document waiting to be indexed (an upload): its id. One indexed before keeps its
        chunks, searchable, until the new ones replace them."""
        return self._mark(source, "pending", None)

    def set_status(self, source: str, status: str) -> None:
        self._mark(source, status, None)

    def fail(self, source: str, error: str) -> None:
        """Record that `source` could not be read. What was indexed of it before stays."""
        self._mark(source, "failed", error)

    def _mark(self, source: str, status: str, error: str | None) -> int:
        now = utcnow()
        with begin_write(self.engine) as conn:
            mine = (documents.c.collection_id == self.collection.id) & \
                (documents.c.source == source)
            found = conn.execute(select(documents.c.id).where(mine)).scalar()
            if found is not None:
                conn.execute(update(documents).where(documents.c.id == found).values(
                    status=status, error=error, updated_at=now))
                return found
            return conn.execute(insert(documents).values(
                collection_id=self.collection.id, owner_id=self.collection.owner_id,
                source=source, title="", kind="", status=status, error=error, created_at=now,
                updated_at=now).returning(documents.c.id)).scalar()

    def remove(self, sources: list[str]) -> int:
        """Remove documents (with their chunks) by source; how many went."""
        with begin_write(self.engine) as conn:
            ids = select(documents.c.id).where(documents.c.collection_id == self.collection.id,
                                               documents.c.source.in_(sources))
            delete_chunks_where(conn, chunks.c.document_id.in_(ids))
            gone = conn.execute(delete(documents).where(
                documents.c.collection_id == self.collection.id,
                documents.c.source.in_(sources))).rowcount
            bump(conn, self.collection.id)
        return gone


def _under(source: str, roots: list[Path]) -> bool:
    """Whether a document's source is one of the roots, or inside one."""
    for root in roots:
        text = str(root)
        if source == text or source.startswith(text.rstrip("/") + "/"):
            return True
    return False
