"""Memory collections and their documents: whose they are, who else may read them.

A collection belongs to one user; its owner may share it, read-only, with other users. A
collection is named by its name (the caller's own) or `user/name` (one shared with the caller,
or, for an admin, anyone's: logged in admin_reads). `resolve` is the one place that decides which
collections a request reaches, in the query itself; a collection the caller may not read does not
exist for them (404), and one shared with them is read-only (403 on a write).

The chunks, vectors and keyword index behind a collection are memory/'s (memory/index.py); this
module keeps the rows people name and list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    column,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.exc import IntegrityError

from tenshu.core.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from tenshu.store.conversations import ON_DELETE, turn_sources
from tenshu.store.people import Principal, owner_of, users
from tenshu.store.sql import UTCDateTime, begin_write, utcnow

collections = table(
    "collections", column("id", Integer), column("owner_id", Integer), column("name", String),
    column("description", String), column("cloud", Boolean), column("index_id", Integer),
    column("created_at", UTCDateTime()), column("updated_at", UTCDateTime()),
)
shares = table(
    "collection_shares", column("collection_id", Integer), column("user_id", Integer),
    column("created_at", UTCDateTime()),
)
indexes = table(
    "memory_indexes", column("id", Integer), column("collection_id", Integer),
    column("embedder", String), column("dim", Integer), column("status", String),
    column("version", Integer), column("created_at", UTCDateTime()),
)
documents = table(
    "documents", column("id", Integer), column("collection_id", Integer),
    column("owner_id", Integer), column("source", String), column("title", String),
    column("kind", String), column("content_hash", String), column("status", String),
    column("error", String), column("chunks", Integer), column("bytes", Integer),
    column("created_at", UTCDateTime()), column("updated_at", UTCDateTime()),
)
# A Table (not a bare table clause) so that a batch insert can return its ids in order.
chunks = Table(
    "chunks", MetaData(), Column("id", Integer, primary_key=True), Column("collection_id", Integer),
    Column("document_id", Integer), Column("owner_id", Integer), Column("kind", String),
    Column("corrects", Integer), Column("turn_id", String), Column("seq", Integer),
    Column("text", String), Column("title", String), Column("section", String),
    Column("page", Integer), Column("char_start", Integer), Column("char_end", Integer),
    Column("created_at", UTCDateTime()),
)
vectors = table(
    "chunk_vectors", column("index_id", Integer), column("chunk_id", Integer),
    column("vector", LargeBinary),
)
STATUSES = ("pending", "indexing", "ready", "failed")


@dataclass(frozen=True, slots=True)
class Collection:
    id: int
    name: str  # as the caller names it: `notes`, or `ana/notes` for another user's
    owner: str
    owner_id: int
    description: str
    cloud: bool  # its chunks may go to cloud models
    index_id: int | None
    embedder: str | None  # the live index's
    writable: bool  # the caller owns it
    created_at: datetime
    updated_at: datetime
    documents: int = 0
    chunks: int = 0

    def to_json(self) -> dict:
        return {"name": self.name, "owner": self.owner, "description": self.description,
                "cloud": self.cloud, "embedder": self.embedder, "writable": self.writable,
                "documents": self.documents, "chunks": self.chunks,
                "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat()}


@dataclass(frozen=True, slots=True)
class DocumentRow:
    id: int
    collection_id: int
    source: str
    title: str
    kind: str
    content_hash: str | None
    status: str
    error: str | None
    chunks: int
    bytes: int
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict:
        return {"id": self.id, "source": self.source, "title": self.title, "kind": self.kind,
                "status": self.status, "error": self.error, "chunks": self.chunks,
                "bytes": self.bytes, "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat()}


_DOCUMENT = tuple(documents.c[name] for name in DocumentRow.__slots__)


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """One chunk as its reader sees it: where it sits in its document and collection."""

    id: int
    kind: str  # text | correction
    corrects: int | None
    text: str
    title: str
    section: str
    page: int | None
    start: int  # its character span in the document's text
    end: int
    document_id: int | None  # None: a correction
    source: str | None
    collection: str  # the collection's own name, without its owner
    owner: str
    writable: bool  # the reader owns it
    created_at: datetime

    def to_json(self) -> dict:
        document = None if self.document_id is None else {"id": self.document_id,
                                                          "source": self.source}
        return {"id": self.id, "kind": self.kind, "corrects": self.corrects, "text": self.text,
                "title": self.title, "section": self.section, "page": self.page,
                "start": self.start, "end": self.end, "document": document,
                "collection": {"name": self.collection, "owner": self.owner,
                               "writable": self.writable},
                "created_at": self.created_at.isoformat()}


@dataclass(frozen=True, slots=True)
class IndexRow:
    """A memory index of a collection: the live one, or one being built beside it (a reindex),
    with how many of the collection's chunks it has vectors for."""

    id: int
    embedder: str
    dim: int | None
    status: str  # building | ready
    version: int
    live: bool
    vectors: int
    chunks: int  # the collection's
    created_at: datetime

    def to_json(self) -> dict:
        return {"id": self.id, "embedder": self.embedder, "dim": self.dim,
                "status": self.status, "version": self.version, "live": self.live,
                "vectors": self.vectors, "chunks": self.chunks,
                "created_at": self.created_at.isoformat()}


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def split_name(name: str) -> tuple[str | None, str]:
    """`notes` -> (None, "notes"); `ana/notes` -> ("ana", "notes"). A name that cannot be a
    collection's is the client's mistake (400)."""
    user, _, own = name.strip().rpartition("/")
    for part, what in ((own, "a collection's name"), (user, "a user's name")):
        if (part or what.startswith("a c")) and not _NAME.fullmatch(part):
            raise InvalidRequestError(
                f"{what} is 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter "
                f"or digit, not {part[:70]!r}", field="collection")
    return (user or None), own


def visible(principal: Principal):
    """The SQL condition: the principal owns the collection, or it is shared with them."""
    shared = exists().where(shares.c.collection_id == collections.c.id,
                            shares.c.user_id == principal.user_id)
    return or_(collections.c.owner_id == principal.user_id, shared)


def _select(counts: bool = False):
    """Collections with their owners and embedders; with `counts`, their documents and chunks
    counted too (for listings: a count reads the collection's index, which the request path,
    resolving names, has no use for)."""
    if counts:
        n_documents = select(func.count()).where(
            documents.c.collection_id == collections.c.id).scalar_subquery()
        n_chunks = select(func.count()).where(
            chunks.c.collection_id == collections.c.id).scalar_subquery()
    else:
        n_documents = n_chunks = literal(0)
    return (select(collections, users.c.name.label("owner"), indexes.c.embedder,
                   n_documents.label("n_documents"), n_chunks.label("n_chunks"))
            .join(users, users.c.id == collections.c.owner_id)
            .outerjoin(indexes, indexes.c.id == collections.c.index_id))


def _collection(row, principal: Principal) -> Collection:
    own = row.owner_id == principal.user_id
    return Collection(row.id, row.name if own else f"{row.owner}/{row.name}", row.owner,
                      row.owner_id, row.description, bool(row.cloud), row.index_id,
                      row.embedder, own, row.created_at, row.updated_at, row.n_documents,
                      row.n_chunks)


def resolve(conn: Connection, principal: Principal, name: str, *,
            write: bool = False, counts: bool = False) -> Collection:
    """The collection `name` as the principal may reach it (NotFoundError when they may not
    read it; PermissionDeniedError when they may read but not write it and `write`)."""
    user, own = split_name(name)
    stmt = _select(counts).where(collections.c.name == own)
    if user is None or user == principal.name:
        stmt = stmt.where(collections.c.owner_id == principal.user_id)
    else:
        stmt = stmt.where(users.c.name == user)
        if principal.admin and not write:
            owner_of(conn, principal, user, "read", f"collection {own}")
        else:
            stmt = stmt.where(visible(principal))
    row = conn.execute(stmt).first()
    if row is None:
        raise NotFoundError(f"no collection named {name!r}")
    found = _collection(row, principal)
    if write and not found.writable:
        raise PermissionDeniedError(f"the collection {name!r} is {found.owner}'s, shared with "
                                    "you to read; only its owner may change it")
    return found


def reading(engine: Engine, principal: Principal, name: str):
    """A connection to read collection `name` through: a write transaction where an admin
    reads another user's, since resolve logs that."""
    user, _ = split_name(name)
    if principal.admin and user not in (None, principal.name):
        return begin_write(engine)
    return engine.connect()


class CollectionStore:
    """Collections and their documents in one database. Database I/O: not for the event loop."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, principal: Principal, name: str, *, embedder: str, description: str = "",
               cloud: bool = False, exist_ok: bool = False) -> Collection:
        """A new collection of the principal's, indexed by `embedder`. With `exist_ok`, an
        existing one of that name is returned as it is."""
        user, own = split_name(name)
        if user is not None and user != principal.name:
            raise PermissionDeniedError("a collection is made by its owner; name it without "
                                        "a user")
        now = utcnow()
        try:
            with begin_write(self._engine) as conn:
                collection_id = conn.execute(insert(collections).values(
                    owner_id=principal.user_id, name=own, description=description,
                    cloud=cloud, created_at=now, updated_at=now)
                    .returning(collections.c.id)).scalar()
                index_id = conn.execute(insert(indexes).values(
                    collection_id=collection_id, embedder=embedder, status="ready",
                    version=0, created_at=now).returning(indexes.c.id)).scalar()
                conn.execute(update(collections).where(collections.c.id == collection_id)
                             .values(index_id=index_id))
        except IntegrityError:
            if exist_ok:
                return self.get(principal, own)
            raise ConflictError(f"there is already a collection named {own!r}") from None
        return self.get(principal, own)

    def get(self, principal: Principal, name: str) -> Collection:
        with reading(self._engine, principal, name) as conn:
            return resolve(conn, principal, name, counts=True)

    def list(self, principal: Principal) -> list[Collection]:
        """The principal's collections, then those shared with them, by name."""
        with self._engine.connect() as conn:
            rows = conn.execute(_select(counts=True).where(visible(principal))
                                .order_by(collections.c.owner_id != principal.user_id,
                                          users.c.name, collections.c.name))
            return [_collection(row, principal) for row in rows]

    def update(self, principal: Principal, name: str, *, description: str | None = None,
               cloud: bool | None = None) -> Collection:
        values = {k: v for k, v in (("description", description), ("cloud", cloud))
                  if v is not None}
        with begin_write(self._engine) as conn:
            found = resolve(conn, principal, name, write=True)
            conn.execute(update(collections).where(collections.c.id == found.id)
                         .values(**values, updated_at=utcnow()))
        return self.get(principal, name)

    def delete(self, principal: Principal, name: str) -> dict[str, int]:
        """The collection, its documents, chunks and vectors, and its shares; what went."""
        with begin_write(self._engine) as conn:
            found = resolve(conn, principal, name, write=True)
            gone = _delete_chunks(conn, chunks.c.collection_id == found.id)
            gone["documents"] = conn.execute(
                delete(documents).where(documents.c.collection_id == found.id)).rowcount
            conn.execute(delete(shares).where(shares.c.collection_id == found.id))
            _drop_indexes(conn, [found.id])
            conn.execute(delete(collections).where(collections.c.id == found.id))
        return gone

    def share(self, principal: Principal, name: str, user: str, *, shared: bool = True) -> None:
        """Let `user` read the collection (or, with shared=False, no longer)."""
        with begin_write(self._engine) as conn:
            found = resolve(conn, principal, name, write=True)
            other = conn.execute(select(users.c.id).where(users.c.name == user)).scalar()
            if other is None:
                raise NotFoundError(f"no user named {user!r}")
            if other == principal.user_id:
                raise PermissionDeniedError("a collection is always its owner's to read")
            conn.execute(delete(shares).where(shares.c.collection_id == found.id,
                                              shares.c.user_id == other))
            if shared:
                conn.execute(insert(shares).values(collection_id=found.id, user_id=other,
                                                   created_at=utcnow()))

    def shared_with(self, principal: Principal, name: str) -> list[str]:
        with self._engine.connect() as conn:
            found = resolve(conn, principal, name, write=True)
            rows = conn.execute(select(users.c.name).join(shares, shares.c.user_id == users.c.id)
                                .where(shares.c.collection_id == found.id)
                                .order_by(users.c.name))
            return list(rows.scalars())

    # -- documents ------------------------------------------------------------------------------

    def documents(self, principal: Principal, name: str, *, status: str | None = None,
                  limit: int = 1000, offset: int = 0) -> list[DocumentRow]:
        with reading(self._engine, principal, name) as conn:
            found = resolve(conn, principal, name)
            stmt = select(*_DOCUMENT).where(documents.c.collection_id == found.id)
            if status is not None:
                stmt = stmt.where(documents.c.status == status)
            rows = conn.execute(stmt.order_by(documents.c.source).limit(limit).offset(offset))
            return [DocumentRow(*row) for row in rows]

    def document(self, principal: Principal, name: str, document_id: int) -> DocumentRow:
        with reading(self._engine, principal, name) as conn:
            found = resolve(conn, principal, name)
            row = conn.execute(select(*_DOCUMENT).where(
                documents.c.collection_id == found.id,
                documents.c.id == document_id)).first()
        if row is None:
            raise NotFoundError(f"no document {document_id} in {name!r}")
        return DocumentRow(*row)

    def delete_document(self, principal: Principal, name: str, document_id: int) -> int:
        """The document and its chunks; how many chunks went."""
        with begin_write(self._engine) as conn:
            found = resolve(conn, principal, name, write=True)
            doc = (documents.c.collection_id == found.id) & (documents.c.id == document_id)
            if conn.execute(select(documents.c.id).where(doc)).first() is None:
                raise NotFoundError(f"no document {document_id} in {name!r}")
            gone = _delete_chunks(conn, and_(chunks.c.collection_id == found.id,
                                             chunks.c.document_id == document_id))
            conn.execute(delete(documents).where(doc))
            bump(conn, found.id)
        return gone["chunks"]

    # -- chunks and indexes (the memory pages) ------------------------------------------------

    def chunk(self, principal: Principal, chunk_id: int) -> ChunkRow:
        """One chunk of a collection the principal owns or has been shared; any other chunk
        answers as a missing one (NotFoundError), decided in the query."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(chunks.c.id, chunks.c.kind, chunks.c.corrects, chunks.c.text,
                       chunks.c.title, chunks.c.section, chunks.c.page, chunks.c.char_start,
                       chunks.c.char_end, chunks.c.document_id, documents.c.source,
                       collections.c.name, users.c.name,
                       (collections.c.owner_id == principal.user_id).label("mine"),
                       chunks.c.created_at)
                .join(collections, collections.c.id == chunks.c.collection_id)
                .join(users, users.c.id == collections.c.owner_id)
                .outerjoin(documents, documents.c.id == chunks.c.document_id)
                .where(chunks.c.id == chunk_id, visible(principal))).first()
        if row is None:
            raise NotFoundError(f"no chunk {chunk_id}")
        return ChunkRow(*row[:13], bool(row.mine), row.created_at)

    def indexes(self, principal: Principal, name: str) -> list[IndexRow]:
        """The collection's memory indexes, the live one first: what its reindex status is."""
        with reading(self._engine, principal, name) as conn:
            found = resolve(conn, principal, name)
            n_vectors = select(func.count()).where(
                vectors.c.index_id == indexes.c.id).scalar_subquery()
            total = conn.execute(select(func.count()).where(
                chunks.c.collection_id == found.id)).scalar()
            rows = conn.execute(
                select(indexes.c.id, indexes.c.embedder, indexes.c.dim, indexes.c.status,
                       indexes.c.version, n_vectors.label("vectors"), indexes.c.created_at)
                .where(indexes.c.collection_id == found.id).order_by(indexes.c.id))
            found_rows = [IndexRow(r.id, r.embedder, r.dim, r.status, r.version,
                                   r.id == found.index_id, r.vectors, total, r.created_at)
                          for r in rows]
        return sorted(found_rows, key=lambda i: not i.live)


def delete_chunks_where(conn: Connection, condition) -> int:
    return _delete_chunks(conn, condition)["chunks"]


def _delete_chunks(conn: Connection, condition) -> dict[str, int]:
    ids = select(chunks.c.id).where(condition).scalar_subquery()
    conn.execute(delete(vectors).where(vectors.c.chunk_id.in_(ids)))
    conn.execute(delete(turn_sources).where(turn_sources.c.chunk_id.in_(ids)))
    return {"chunks": conn.execute(delete(chunks).where(condition)).rowcount}


def index_name(index_id: int) -> str:
    """The name of a memory index's HNSW index on PostgreSQL (memory/pg.py makes it)."""
    if int(index_id) < 1:
        raise ValueError(f"expected a memory index's id, not {index_id!r}")
    return f"ix_chunk_vectors_hnsw_{int(index_id)}"


def drop_index(conn: Connection, index_id: int) -> None:
    """Drop a memory index's HNSW index with its vectors (nothing on a database other than
    PostgreSQL, nor where there is none). It locks chunk_vectors until the transaction ends."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index_name(index_id)}")


def _drop_indexes(conn: Connection, collection_ids) -> None:
    """The memory indexes of collections, with their HNSW indexes."""
    found = conn.execute(select(indexes.c.id).where(
        indexes.c.collection_id.in_(collection_ids))).scalars().all()
    conn.execute(delete(indexes).where(indexes.c.collection_id.in_(collection_ids)))
    for index_id in found:
        drop_index(conn, index_id)


def bump(conn: Connection, collection_id: int) -> None:
    """Tell every process's vector cache that the collection's indexes changed."""
    conn.execute(update(indexes).where(indexes.c.collection_id == collection_id)
                 .values(version=indexes.c.version + 1))


def delete_user_collections(conn: Connection, owner_id: int) -> int:
    """A departing user's collections, with everything in them (UserStore.remove)."""
    ids = select(collections.c.id).where(collections.c.owner_id == owner_id).scalar_subquery()
    _delete_chunks(conn, chunks.c.collection_id.in_(ids))
    conn.execute(delete(documents).where(documents.c.collection_id.in_(ids)))
    conn.execute(delete(shares).where(or_(shares.c.collection_id.in_(ids),
                                          shares.c.user_id == owner_id)))
    _drop_indexes(conn, ids)
    conn.execute(delete(turn_sources).where(turn_sources.c.owner_id == owner_id))
    return conn.execute(delete(collections).where(collections.c.owner_id == owner_id)).rowcount


def _forget_conversations(conn: Connection, owner_id: int, ids: list[str]) -> dict[str, int]:
    """What memory derived from deleted conversations: the conversations as documents, the
    corrections made on their turns, and the record of which chunks their answers used."""
    from tenshu.store.conversations import turns

    gone = select(turns.c.id).where(turns.c.owner_id == owner_id,
                                    turns.c.conversation_id.in_(ids))
    conn.execute(delete(turn_sources).where(turn_sources.c.owner_id == owner_id,
                                            turn_sources.c.turn_id.in_(gone)))
    corrections = and_(chunks.c.owner_id == owner_id, chunks.c.kind == "correction",
                       chunks.c.turn_id.in_(gone))
    removed = _delete_chunks(conn, corrections)["chunks"]
    docs = select(documents.c.id).where(
        documents.c.owner_id == owner_id,
        documents.c.source.in_([CONVERSATION_SOURCE + i for i in ids]))
    removed += _delete_chunks(conn, chunks.c.document_id.in_(docs))["chunks"]
    conn.execute(delete(documents).where(documents.c.id.in_(docs)))
    if not removed:
        return {}
    mine = select(collections.c.id).where(collections.c.owner_id == owner_id)
    conn.execute(update(indexes).where(indexes.c.collection_id.in_(mine))
                 .values(version=indexes.c.version + 1))
    return {"memory chunks": removed}


CONVERSATION_SOURCE = "conversation:"  # a conversation ingested into memory: its source
ON_DELETE.append(_forget_conversations)
