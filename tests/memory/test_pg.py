"""Memory on PostgreSQL (tenshu/memory/pg.py): the tsvector and pgvector legs, through the real
Memory API and the default embedder, on a PostgreSQL that pgserver starts (it ships pgvector).

One server and one database for the module, and the session's embedder (conftest.py); each test
that changes what is stored works in a collection of its own.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from sqlalchemy import insert, make_url, select, text

from tenshu.backends.embedding import DEFAULT_EMBEDDER
from tenshu.core.errors import NotFoundError
from tenshu.memory import Memory
from tenshu.memory.index import ExactVectors, Scope, note_dim
from tenshu.memory.pg import (
    PgVectors,
    nearest,
    nearest_exact,
    tsquery_text,
    vector_literal,
)
from tenshu.store import open_store
from tenshu.store.collections import chunks, documents, drop_index, index_name
from tenshu.store.people import Principal
from tenshu.store.sql import begin_write, utcnow

NOTES = {
    "a.md": "# Garden\n\n## Tomatoes\nTomatoes want full sun, deep pots and a cane to climb.\n\n"
            "## Compost\nTurn the compost heap weekly so the kitchen peelings rot evenly.\n\n"
            "## Roses\nPrune climbing roses in late winter, just above an outward bud.\n",
    "b.md": "# Kubernetes\n\n## Restarts\nA pod stuck in CrashLoopBackOff keeps restarting: read "
            "its logs with kubectl logs --previous and check the liveness probe.\n",
    "bread.md": "# Sourdough\n\n## Starter\nFeed the starter with rye flour every morning and "
                "wait until it doubles.\n\n## Baking\nBake the loaf at 250 degrees in a "
                "preheated dutch oven for forty minutes.\n",
    "tides.md": "# Tide pools\n\nAt low tide, anemones and hermit crabs shelter in rock pools "
                "along the shore, under kelp and barnacles.\n",
}


@pytest.fixture(scope="module")
def server():
    """A PostgreSQL server for the module, in a temporary directory."""
    pgserver = pytest.importorskip("pgserver")
    root = Path(tempfile.mkdtemp(prefix="tenshu-pgserver-"))
    try:
        srv = pgserver.get_server(root, cleanup_mode="stop")
    except Exception as exc:  # pgserver raises whatever initdb or pg_ctl did
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"pgserver could not start PostgreSQL here: {exc}")
    yield srv
    srv.cleanup()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def store(server):
    server.psql("CREATE DATABASE tenshu_memory;")
    url = make_url(server.get_uri("tenshu_memory")).set(drivername="postgresql+psycopg")
    with open_store(url.render_as_string(hide_password=False)) as opened:
        yield opened


@pytest.fixture(scope="module")
def memory(store, embedder):
    """Memory over the module's database, with the session's all-MiniLM-L6-v2 (conftest)."""
    made = Memory(store, embedders={DEFAULT_EMBEDDER: embedder})
    if not isinstance(made.vectors, PgVectors):
        pytest.skip("this PostgreSQL has no pgvector")
    yield made
    made.close()


@pytest.fixture(scope="module")
def owner(store) -> Principal:
    return Principal.of(store.users.owner())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def notes(memory, owner, tmp_path_factory) -> Path:
    """The owner's collection `notes`, of NOTES: the folder it was ingested from."""
    folder = write(tmp_path_factory.mktemp("notes"), NOTES)
    summary = await memory.ingest(owner, "notes", [folder])
    assert (summary.added, summary.failed) == (len(NOTES), [])
    return folder


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, body in files.items():
        (folder / name).write_text(body)
    return folder


def scope_of(memory, owner, name: str, **filters) -> Scope:
    c = memory.store.collections.get(owner, name)
    return Scope((c.id,), (c.index_id,), **filters)


def names(hits) -> list[str]:
    return [Path(h.source).name for h in hits]


# -- keywords and vectors -------------------------------------------------------------------------

async def test_a_keyword_query_ranks_its_document_first(memory, owner, notes):
    hits = await memory.search(owner, "rye flour in a dutch oven", ["notes"], k=3)
    assert names(hits)[0] == "bread.md"

    with memory.store.engine.connect() as conn:  # the keyword leg alone agrees
        found = memory.keywords.search(conn, scope_of(memory, owner, "notes"),
                                       "rye flour in a dutch oven", 10)
    assert found and all(score > 0 for _, score in found)
    sources = chunk_sources(memory, [i for i, _ in found])
    assert set(sources) == {"bread.md"}  # OR semantics, and only chunks with the words


async def test_a_paraphrase_with_no_shared_word_is_found_by_meaning(memory, owner, notes):
    query = "where do little marine animals hide when the sea retreats"
    with memory.store.engine.connect() as conn:
        assert memory.keywords.search(conn, scope_of(memory, owner, "notes"), query, 10) == []
    hits = await memory.search(owner, query, ["notes"], k=3)
    assert names(hits)[0] == "tides.md"
    assert hits[0].score > 0


async def test_a_source_filter_applies_inside_both_legs(memory, owner, notes):
    query = "kubernetes pod restarting, read the logs"
    assert names(await memory.search(owner, query, ["notes"], k=3))[0] == "b.md"

    hits = await memory.search(owner, query, ["notes"], k=3, source="*/a.md")
    assert names(hits) == ["a.md"] * 3  # all three of a.md's chunks, none of the better ones

    scope = scope_of(memory, owner, "notes", source="*/a.md")
    vector = (await memory.embedder().embed([query]))[0]
    with memory.store.engine.connect() as conn:
        by_vector = memory.vectors.search(conn, scope, vector, 3)
        by_word = memory.keywords.search(conn, scope, "kubernetes roses", 3)
    assert len(by_vector) == 3 and set(chunk_sources(memory, [i for i, _ in by_vector])) == {"a.md"}
    assert chunk_sources(memory, [i for i, _ in by_word]) == ["a.md"]  # not b.md's kubernetes


def test_user_text_never_changes_the_tsquery(store):
    terms = ["it's", "back\\slash", "x|y", "!not", "p:*", "&"]
    assert tsquery_text(["it's"]) == "'it''s'"
    with store.engine.connect() as conn:
        parsed = conn.execute(text("SELECT to_tsquery('english', :q)::text"),
                              {"q": tsquery_text(terms)}).scalar()
    assert "!" not in parsed and "&" not in parsed.replace("<->", "")  # each a lexeme, ORed


# -- filters and the HNSW graph -------------------------------------------------------------------

def test_a_selective_filter_is_searched_exactly_when_the_graph_walk_falls_short(memory, owner):
    """300 vectors near the query in one document, 5 far from it in another: the HNSW walk
    (ef_search 100) finds only the near ones, which the filter then drops; the leg must still
    give the 5 the filter allows."""
    store, leg = memory.store, memory.vectors
    c = store.collections.create(owner, "synthetic", embedder="synthetic")
    rng = np.random.default_rng(7)
    q = unit(rng.normal(size=384))
    near = [unit(q + 0.3 * unit(rng.normal(size=384))) for _ in range(300)]
    far = [unit(-q + 0.3 * unit(rng.normal(size=384))) for _ in range(5)]
    with begin_write(store.engine) as conn:
        for source, rows in (("/x/common.md", near), ("/x/rare.md", far)):
            ids = synthetic_chunks(conn, c, source, len(rows))
            note_dim(conn, c.index_id, 384)
            leg.write(conn, c.index_id, ids, np.stack(rows))
    everything = Scope((c.id,), (c.index_id,))
    rare = Scope((c.id,), (c.index_id,), source="*/rare.md")
    with store.engine.connect() as conn:
        # No scans and no sorts: the planner walks the graph for the filtered query too (as it
        # would on a large table, where this filter's rows are not a handful).
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        conn.execute(text("SET LOCAL enable_sort = off"))
        best = leg.search(conn, everything, q, 5)
        found = leg.search(conn, rare, q, 5)
        through_graph = nearest(rare, c.index_id, 384, vector_literal(q), 5)
        assert index_name(c.index_id) in explain(conn, through_graph)
        walked = conn.execute(through_graph).all()
    assert len(best) == 5 and all(score > 0.8 for _, score in best)
    assert len(walked) < 5  # what pgvector 0.6 gives through the graph alone
    assert len(found) == 5 and all(score < 0 for _, score in found)


def test_the_hnsw_index_is_made_by_the_first_write_and_used(memory, owner, notes):
    c = memory.store.collections.get(owner, "notes")
    with memory.store.engine.connect() as conn:
        made = conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                            {"n": index_name(c.index_id)}).scalar()
        assert made is not None, "no HNSW index after the first ingest"
        assert "USING hnsw" in made and f"WHERE (index_id = {c.index_id})" in made, made

        # A dozen rows cost less to scan and sort than to walk: forbid both, to show that the
        # index matches the query's expression and predicate (else no plan could use it).
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        conn.execute(text("SET LOCAL enable_sort = off"))
        q = vector_literal(np.full(384, 384 ** -0.5, np.float32))
        plan = explain(conn, nearest(Scope((c.id,), (c.index_id,)), c.index_id, 384, q, 5))
        assert f"Index Scan using {index_name(c.index_id)}" in plan, plan
        exact = explain(conn, nearest_exact(Scope((c.id,), (c.index_id,), source="*/a.md"),
                                            c.index_id, q, 5))
        assert "hnsw" not in exact, exact  # the exact pass never goes through the graph


# -- documents, people, reindexing ----------------------------------------------------------------

async def test_a_deleted_file_leaves_the_results_when_its_folder_is_ingested_again(
        memory, owner, tmp_path):
    folder = write(tmp_path, {"bread.md": NOTES["bread.md"], "tides.md": NOTES["tides.md"]})
    await memory.ingest(owner, "pantry", [folder])
    query = "rye flour sourdough starter"
    assert names(await memory.search(owner, query, ["pantry"], k=3))[0] == "bread.md"

    (folder / "bread.md").unlink()
    summary = await memory.ingest(owner, "pantry", [folder])
    assert (summary.removed, summary.unchanged) == (1, 1)
    assert names(await memory.search(owner, query, ["pantry"], k=3)) == ["tides.md"]
    c = memory.store.collections.get(owner, "pantry")
    with memory.store.engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM chunk_vectors WHERE index_id = :i"),
                            {"i": c.index_id}).scalar()
    assert left == c.chunks == 1  # the vectors went with the chunks


async def test_another_user_reads_a_collection_only_once_it_is_shared(memory, store, owner,
                                                                      notes):
    store.users.add("ana")
    ana = Principal.of(store.users.get("ana"))
    for name in ("notes", "owner/notes"):
        with pytest.raises(NotFoundError):
            await memory.search(ana, "rye flour", [name], k=3)

    store.collections.share(owner, "notes", "ana")
    hits = await memory.search(ana, "rye flour", ["owner/notes"], k=3)
    assert names(hits)[0] == "bread.md" and hits[0].collection == "owner/notes"
    with pytest.raises(NotFoundError):  # her own `notes` is still not the owner's
        await memory.search(ana, "rye flour", ["notes"], k=3)


async def test_reindex_swaps_in_a_new_index_that_search_uses(memory, owner, tmp_path):
    await memory.ingest(owner, "shelf", [write(tmp_path, {"b.md": NOTES["b.md"],
                                                          "tides.md": NOTES["tides.md"]})])
    old = memory.store.collections.get(owner, "shelf").index_id

    done = await memory.reindex(owner, "shelf")
    new = memory.store.collections.get(owner, "shelf").index_id
    assert new == done["index"] != old
    assert done["chunks"] == memory.store.collections.get(owner, "shelf").chunks > 0
    with memory.store.engine.connect() as conn:
        assert has_index(conn, new)
    hits = await memory.search(owner, "where do little marine animals hide", ["shelf"], k=2)
    assert names(hits)[0] == "tides.md"


async def test_reindex_drops_the_old_hnsw_index(memory, owner, tmp_path):
    await memory.ingest(owner, "attic", [write(tmp_path, {"b.md": NOTES["b.md"]})])
    old = memory.store.collections.get(owner, "attic").index_id
    await memory.reindex(owner, "attic")
    with memory.store.engine.connect() as conn:
        assert not has_index(conn, old)


async def test_drop_index_removes_a_memory_indexs_hnsw_index(memory, owner, tmp_path):
    await memory.ingest(owner, "cellar", [write(tmp_path, {"b.md": NOTES["b.md"]})])
    index_id = memory.store.collections.get(owner, "cellar").index_id
    with begin_write(memory.store.engine) as conn:
        assert has_index(conn, index_id)
        drop_index(conn, index_id)
        drop_index(conn, index_id)  # already gone: nothing to do
        assert not has_index(conn, index_id)


async def test_without_pgvector_the_bytes_are_searched_exactly(server, embedder, tmp_path):
    """A server without the extension has no `embedding` column (m005): the vector leg is
    ExactVectors over the stored bytes, and search works the same."""
    server.psql("CREATE DATABASE tenshu_plain;")
    url = make_url(server.get_uri("tenshu_plain")).set(drivername="postgresql+psycopg")
    with open_store(url.render_as_string(hide_password=False)) as plain:
        with begin_write(plain.engine) as conn:
            conn.exec_driver_sql("ALTER TABLE chunk_vectors DROP COLUMN embedding")
        bare = Memory(plain, embedders={DEFAULT_EMBEDDER: embedder})
        assert isinstance(bare.vectors, ExactVectors)
        owner = Principal.of(plain.users.owner())
        await bare.ingest(owner, "notes", [write(tmp_path, {"b.md": NOTES["b.md"],
                                                            "tides.md": NOTES["tides.md"]})])
        hits = await bare.search(owner, "where do little marine animals hide", ["notes"], k=2)
        assert names(hits)[0] == "tides.md"


# -- helpers --------------------------------------------------------------------------------------

def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def synthetic_chunks(conn, c, source: str, count: int) -> list[int]:
    now = utcnow()
    doc = conn.execute(insert(documents).values(
        collection_id=c.id, owner_id=c.owner_id, source=source, title="", kind="text",
        status="ready", chunks=count, bytes=0, created_at=now, updated_at=now)
        .returning(documents.c.id)).scalar()
    rows = [dict(collection_id=c.id, document_id=doc, owner_id=c.owner_id, kind="text",
                 seq=i, text=f"chunk {i}", title="", section="", char_start=0, char_end=0,
                 created_at=now) for i in range(count)]
    return list(conn.execute(insert(chunks).returning(chunks.c.id, sort_by_parameter_order=True),
                             rows).scalars())


def chunk_sources(memory, ids: list[int]) -> list[str]:
    """The file name of each chunk's document, in the order of `ids`."""
    with memory.store.engine.connect() as conn:
        rows = dict(conn.execute(select(chunks.c.id, documents.c.source)
                                 .join(documents, documents.c.id == chunks.c.document_id)
                                 .where(chunks.c.id.in_(ids))).all())
    return [Path(rows[i]).name for i in ids]


def has_index(conn, index_id: int) -> bool:
    return conn.execute(text("SELECT 1 FROM pg_indexes WHERE indexname = :n"),
                        {"n": index_name(index_id)}).first() is not None


def explain(conn, stmt) -> str:
    """The statement's plan, its vectors cut short."""
    sql = stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    plan = "\n".join(conn.exec_driver_sql(f"EXPLAIN {sql}").scalars())
    return re.sub(r"'\[[^\]]{40,}\]'", "'[...]'", plan)
