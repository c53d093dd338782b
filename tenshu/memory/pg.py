"""The two legs of retrieval on PostgreSQL: full-text search over chunks.tsv, and pgvector.

memory/index.py's `legs_for` comes here when the store is PostgreSQL; the legs have the same
interface as SQLite's (Fts5Keywords, ExactVectors), and each applies the Scope inside its query,
before its LIMIT.

Keywords: an OR of the query's words (index.keyword_terms) as a tsquery, matched against the
generated `tsv` column (title weight A, section B, text D; GIN index ix_chunks_tsv), ranked by
ts_rank with normalization 1. Not ts_rank_cd: with an OR query nearly every cover is one word,
so cover density degenerates to counting occurrences, and a chunk that repeats one query word
outranks one that holds several. ts_rank saturates each word's count (sum of w / i^2) and adds
across distinct words, the two BM25 behaviours that matter to rank fusion; normalization 1
divides by 1 + log(length), a mild form of BM25's length normalization. (Neither has IDF.)

Vectors: where migration m005 made the `embedding vector` column (the server has pgvector),
each memory index gets a partial HNSW index over its own rows, made by its first write:

    CREATE INDEX ix_chunk_vectors_hnsw_<index id> ON chunk_vectors
        USING hnsw ((embedding::vector(<dim>)) vector_cosine_ops) WHERE index_id = <index id>

The column has no fixed dimension (indexes of two embedders share it), so the index is on the
expression cast to the index's dimension, and a search orders by that same expression with the
index id as a literal in its WHERE: the planner uses a partial index only where it can prove
the predicate at plan time, which a bound parameter would not let it do once psycopg prepares
the statement (after 5 runs) and PostgreSQL switches to a generic plan. Both numbers are ints
from the database, formatted by Python; no user text reaches the SQL. A dropped memory index
leaves its partial index behind: store/collections.drop_index removes it (reindexing and
deleting a collection call it).

Filters and HNSW: pgvector 0.6 applies a WHERE to the rows the graph walk found (ef_search of
them), so a selective filter can leave fewer than n. A filtered search therefore first asks the
HNSW index (with the filter joined in), and where that gives fewer than n, searches again
exactly: the chunks the filter allows (a CTE over chunks and documents), each compared with the
query by `embedding <=> q`, an expression no index has, so nothing is missed. The exact pass is
linear in the chunks the filter allows, and it runs mostly when they are few.

Without pgvector, `legs` gives index.ExactVectors, which reads the float32 bytes that every
write stores beside the embedding.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

import numpy as np
from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    String,
    any_,
    bindparam,
    cast,
    column,
    func,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, TSVECTOR
from sqlalchemy.types import UserDefinedType

from tenshu.memory.index import ExactVectors, Hits, Scope, keyword_terms, to_bytes
from tenshu.store.collections import chunks, documents, index_name, indexes

CONFIG = "english"  # the text search configuration, as in m005's generated tsv column
MAX_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search
_LOCK_CLASS = 0x74_68_6E  # pg_advisory_xact_lock(class, index id): "making this HNSW index"


def legs(engine: Engine):
    """The keyword and vector legs for a PostgreSQL store."""
    return PgKeywords(), (PgVectors() if has_embedding(engine) else ExactVectors())


# -- keywords -------------------------------------------------------------------------------------

_tsv = literal_column("chunks.tsv", TSVECTOR)


def tsquery_text(terms: Sequence[str]) -> str:
    """The words as to_tsquery's OR syntax, each a quoted lexeme: `'alpha' | 'beta'`. Quoting
    (with ' doubled and \\ escaped) keeps any character in a word from acting as an operator;
    the text is bound as a parameter, never put into the SQL."""
    quoted = ("'" + t.replace("\\", "\\\\").replace("'", "''") + "'" for t in terms)
    return " | ".join(quoted)


class PgKeywords:
    """Full-text search over chunks.tsv, ranked by ts_rank (normalization 1)."""

    def search(self, conn: Connection, scope: Scope, query: str, n: int) -> Hits:
        terms = keyword_terms(query)
        if not terms or not scope.collection_ids or n < 1:
            return []
        q = func.to_tsquery(CONFIG, bindparam("tsquery", tsquery_text(terms), type_=String))
        score = func.ts_rank(_tsv, q, 1).label("score")
        stmt = (select(chunks.c.id, score)
                .where(_tsv.bool_op("@@")(q),
                       chunks.c.collection_id == any_(_ints(scope.collection_ids))))
        if scope.filtered:
            stmt = (stmt.join(documents, documents.c.id == chunks.c.document_id)
                    .where(scope.document_condition()))
        stmt = stmt.order_by(score.desc(), chunks.c.id).limit(n)
        return [(int(i), float(s)) for i, s in conn.execute(stmt)]


def _ints(values: Sequence[int]):
    """A list of ints as one array parameter (one statement, whatever its length)."""
    return bindparam(None, [int(v) for v in values], type_=ARRAY(Integer))


# -- vectors --------------------------------------------------------------------------------------

class Vector(UserDefinedType):
    """pgvector's type, for casts: `vector` or `vector(dim)`."""

    cache_ok = True

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim

    def get_col_spec(self, **_kw) -> str:
        return "vector" if self.dim is None else f"vector({int(self.dim)})"

    def literal_processor(self, dialect):
        """The text form as an SQL string, for a statement compiled with its values in it
        (EXPLAIN in the tests)."""
        return lambda value: "'" + str(value).replace("'", "''") + "'"


_vectors = table("chunk_vectors", column("index_id", Integer), column("chunk_id", Integer),
                 column("embedding", Vector()))

_INSERT = text("INSERT INTO chunk_vectors (index_id, chunk_id, vector, embedding) "
               "VALUES (:index_id, :chunk_id, :vector, CAST(:embedding AS vector))")


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form, '[x,y,...]'; 9 significant digits give a float32 back exactly."""
    return "[" + ",".join(f"{x:.9g}" for x in np.asarray(vector, np.float32).tolist()) + "]"


def _positive(value) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"expected a positive id or dimension, not {value!r}")
    return number


class PgVectors:
    """pgvector search, through one partial HNSW index per memory index (cosine distance)."""

    def write(self, conn: Connection, index_id: int, chunk_ids: Sequence[int],
              matrix: np.ndarray) -> None:
        """Store the chunks' vectors, as bytes and as `embedding`; the index's first write
        makes its HNSW index (before the rows go in, so it is built over none)."""
        if len(chunk_ids) != len(matrix):
            raise ValueError(f"{len(chunk_ids)} chunk ids for {len(matrix)} vectors")
        if not len(chunk_ids):
            return
        ensure_index(conn, index_id, matrix.shape[1])
        conn.execute(_INSERT, [
            {"index_id": index_id, "chunk_id": int(i), "vector": to_bytes(v),
             "embedding": vector_literal(v)}
            for i, v in zip(chunk_ids, matrix, strict=True)])

    def search(self, conn: Connection, scope: Scope, query: np.ndarray, n: int) -> Hits:
        """The n chunks nearest `query` across the scope's indexes: (chunk id, cosine
        similarity), best first. Run inside a transaction (SQLAlchemy begins one), which
        hnsw.ef_search is set for."""
        if not scope.index_ids or n < 1:
            return []
        dims = dict(conn.execute(select(indexes.c.id, indexes.c.dim)
                                 .where(indexes.c.id == any_(_ints(scope.index_ids)))).all())
        # The walk keeps ef_search candidates; it must be at least n to give n back.
        ef = min(max(n * 2, 100), MAX_EF_SEARCH)
        conn.execute(text("SELECT set_config('hnsw.ef_search', :ef, true)"), {"ef": str(ef)})
        q = vector_literal(query)
        found: Hits = []
        for index_id in scope.index_ids:
            dim = dims.get(index_id)
            if dim is None:  # no vectors yet
                continue
            if dim != len(query):
                raise ValueError(f"memory index {index_id} holds {dim}-dimensional vectors; "
                                 f"the query has {len(query)}: its embedder changed, run "
                                 "`tenshu memory reindex`")
            hits = conn.execute(nearest(scope, index_id, dim, q, n)).all()
            if scope.filtered and len(hits) < n:
                hits = conn.execute(nearest_exact(scope, index_id, q, n)).all()
            found += [(int(i), float(s)) for i, s in hits]
        found.sort(key=lambda hit: -hit[1])
        return found[:n]


def nearest(scope: Scope, index_id: int, dim: int, q: str, n: int):
    """The query through the index's HNSW index: ordered by the indexed expression, with the
    index id a literal (module docstring). Filters are joined in, and applied by PostgreSQL to
    what the graph walk found."""
    dim = _positive(dim)
    indexed = cast(_vectors.c.embedding, Vector(dim))  # == the index's (embedding::vector(dim))
    distance = indexed.op("<=>", return_type=Float)(cast(_query(q), Vector(dim)))
    stmt = (select(_vectors.c.chunk_id, (1 - distance).label("score"))
            .where(_vectors.c.index_id == _literal_id(index_id)))
    if scope.filtered:
        stmt = (stmt.join(chunks, chunks.c.id == _vectors.c.chunk_id)
                .join(documents, documents.c.id == chunks.c.document_id)
                .where(chunks.c.collection_id == any_(_ints(scope.collection_ids)),
                       scope.document_condition()))
    return stmt.order_by(distance).limit(n)


def nearest_exact(scope: Scope, index_id: int, q: str, n: int):
    """The query over every chunk the filters allow, compared one by one: `embedding <=> q`
    matches no index, so PostgreSQL computes each distance and sorts."""
    allowed = select(chunks.c.id).where(
        chunks.c.collection_id == any_(_ints(scope.collection_ids)))
    if scope.filtered:
        allowed = (allowed.join(documents, documents.c.id == chunks.c.document_id)
                   .where(scope.document_condition()))
    allowed = allowed.cte("allowed")
    distance = _vectors.c.embedding.op("<=>", return_type=Float)(cast(_query(q), Vector()))
    return (select(_vectors.c.chunk_id, (1 - distance).label("score"))
            .join(allowed, allowed.c.id == _vectors.c.chunk_id)
            .where(_vectors.c.index_id == _literal_id(index_id))
            .order_by(distance).limit(n))


def _query(value: str):
    """The query vector's text, bound as a parameter of pgvector's type: PostgreSQL parses it
    once. (A VARCHAR parameter cast to vector, as a String bind renders, is parsed again for
    every row the distance is computed for: 10x slower for an exact scan.)"""
    return bindparam(None, value, type_=Vector())


def _literal_id(index_id: int):
    """The index id rendered into the statement (an int), where the planner can match it to the
    partial index's predicate."""
    return bindparam(None, _positive(index_id), type_=Integer, literal_execute=True)


# -- the HNSW indexes -----------------------------------------------------------------------------

def ensure_index(conn: Connection, index_id: int, dim: int) -> None:
    """Make the memory index's HNSW index if it is not there. Checked by name first, which
    takes no lock, for CREATE INDEX (even one that finds the index there) holds a SHARE lock on
    chunk_vectors until this transaction ends: other writers wait, readers do not. Making it
    reads the whole table once (each row is tested against the predicate): once per memory
    index, at its first write. Two first writes at once take turns on an advisory lock, and the
    second finds the index made."""
    name = index_name(index_id)
    if _exists(conn, name):
        return
    index_id, dim = _positive(index_id), _positive(dim)
    conn.execute(text("SELECT pg_advisory_xact_lock(:c, :i)"), {"c": _LOCK_CLASS, "i": index_id})
    if _exists(conn, name):
        return
    conn.exec_driver_sql(
        f"CREATE INDEX IF NOT EXISTS {name} ON chunk_vectors USING hnsw "
        f"((embedding::vector({dim})) vector_cosine_ops) WHERE index_id = {index_id}")


def _exists(conn: Connection, name: str) -> bool:
    return conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name}).scalar()


# -- whether the server has pgvector --------------------------------------------------------------

_has_embedding: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def has_embedding(engine: Engine) -> bool:
    """Whether chunk_vectors has m005's `embedding` column, asked once per engine."""
    with _lock:
        known = _has_embedding.get(engine)
    if known is not None:
        return known
    with engine.connect() as conn:
        found = conn.execute(text(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'chunk_vectors' AND column_name = 'embedding'")).first()
    with _lock:
        _has_embedding[engine] = found is not None
    return found is not None
