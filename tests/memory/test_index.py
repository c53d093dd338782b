"""The SQLite legs on their own: the keyword leg's two passes give the scope's true best,
and in a large index it leaves out words too common to rank by."""

from __future__ import annotations

import pytest

from tenshu.memory import index
from tenshu.memory.index import Fts5Keywords, Scope
from tests.memory.conftest import owner_of
from tests.memory.test_memory import write


@pytest.fixture
async def memory(make_memory, tmp_path):
    memory = make_memory(str(tmp_path / "state.db"))
    folder = tmp_path / "docs"
    # a.md's chunks match the query best; b.md's match it less well
    write(folder, {
        "a.md": "\n\n".join(f"## A{i}\n\nkestrel kestrel kestrel falcon {i}" for i in range(12)),
        "b.md": "\n\n".join(f"## B{i}\n\nA kestrel was seen over the long "
                            f"{'meadow' if i == 0 else 'field'} by the river and the old "
                            f"barn, {i}." for i in range(3))})
    await memory.ingest(owner_of(memory), "birds", [folder])
    return memory, folder


def scope_of(memory, source=None) -> Scope:
    c = memory.store.collections.get(owner_of(memory), "birds")
    return Scope((c.id,), (c.index_id,), source=source)


async def test_a_scope_the_first_pass_misses_is_searched_whole(memory):
    memory, folder = memory
    leg = Fts5Keywords()
    with memory.store.engine.connect() as conn:
        everything = leg.search(conn, scope_of(memory), "kestrel", 40)
        # the best 4 x 2 are all a.md's: the second pass finds b.md's within the filter
        best = leg.search(conn, scope_of(memory, "*/b.md"), "kestrel", 2)
    b_ids = [i for i, _ in everything if i not in {h for h, _ in everything[:12]}]
    assert len(everything) == 15 and len(best) == 2
    assert {i for i, _ in best} <= set(b_ids)
    assert [i for i, _ in best] == b_ids[:2]  # in the order the whole ranking has them


async def test_a_large_index_leaves_out_words_in_most_chunks(memory, monkeypatch):
    memory, _ = memory
    leg = Fts5Keywords()
    with memory.store.engine.connect() as conn:
        assert leg._discriminating(conn, ["kestrel", "meadow"]) == ["kestrel", "meadow"]
        monkeypatch.setattr(index, "LARGE", 0)
        # kestrel is in every chunk, meadow in one: meadow alone decides
        assert leg._discriminating(conn, ["kestrel", "meadow"]) == ["meadow"]
        assert leg._discriminating(conn, ["kestrel", "falcon"]) == ["kestrel", "falcon"]
        hits = leg.search(conn, scope_of(memory), "kestrel meadow", 5)
    assert len(hits) == 1  # the one chunk that says meadow
