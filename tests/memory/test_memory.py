"""Memory end to end on a real state database (SQLite, then PostgreSQL) with the real
embedder: ingest, hybrid search, incremental re-ingest, bad files, filters, ownership, feedback,
corrections and reindexing."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from tenshu.core.errors import NotFoundError, PermissionDeniedError
from tenshu.store.collections import chunks, documents, vectors
from tenshu.store.conversations import TurnRecord, write_turns
from tenshu.store.sql import begin_write
from tests.memory.conftest import member, owner_of

NOTES = {
    "ops.md": "# Operations\n\n## Keys\n\nRotate the API keys every 90 days with `tenshu keys "
              "revoke`; the new key goes into the password manager.\n\n## Backups\n\nThe state "
              "database is copied to the NAS every night at 02:00.\n",
    "garden.md": "# Garden\n\nTomatoes need six hours of sun and deep watering twice a week. "
                 "Basil wilts when the nights fall below ten degrees.\n",
    "errors.txt": "Error XJ-2041 means the flux capacitor lost calibration; recalibrate it from "
                  "the service menu.\n",
}


def write(folder, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def count(memory, table) -> int:
    with memory.store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


@pytest.fixture
def notes(tmp_path):
    folder = tmp_path / "notes"
    write(folder, NOTES)
    return folder


async def test_search_finds_the_section_that_answers(make_memory, database, notes):
    memory = make_memory(database)
    me = owner_of(memory)
    summary = await memory.ingest(me, "notes", [notes])
    assert (summary.added, summary.failed) == (3, [])
    keys = await memory.search(me, "how often should API keys be rotated", ["notes"], k=3)
    assert keys[0].source == str(notes / "ops.md")
    assert keys[0].section == "Operations > Keys"
    assert "90 days" in keys[0].text
    # meaning alone: no word of the query is in the answer
    plants = await memory.search(me, "which herb suffers in cold evenings", ["notes"], k=3)
    assert plants[0].source == str(notes / "garden.md")
    # a code only keywords know
    code = await memory.search(me, "XJ-2041", ["notes"], k=3)
    assert code[0].source == str(notes / "errors.txt")


async def test_reingest_skips_what_did_not_change_and_follows_what_did(make_memory, database,
                                                                       notes):
    memory = make_memory(database)
    me = owner_of(memory)
    await memory.ingest(me, "notes", [notes])
    again = await memory.ingest(me, "notes", [notes])
    assert (again.added, again.updated, again.unchanged, again.removed) == (0, 0, 3, 0)

    (notes / "garden.md").write_text("# Garden\n\nThe roses are pruned in March.\n")
    (notes / "errors.txt").unlink()
    changed = await memory.ingest(me, "notes", [notes])
    assert (changed.added, changed.updated, changed.unchanged, changed.removed) == (0, 1, 1, 1)
    hits = await memory.search(me, "tomatoes sun watering", ["notes"], k=5)
    assert all("Tomatoes" not in h.text for h in hits)
    assert all(h.source != str(notes / "errors.txt") for h in hits)
    # nothing left behind: every chunk has its document and one vector
    docs = memory.store.collections.documents(me, "notes")
    assert sorted(d.source for d in docs) == [str(notes / "garden.md"), str(notes / "ops.md")]
    assert count(memory, chunks) == sum(d.chunks for d in docs) == count(memory, vectors)


async def test_a_bad_file_fails_alone(make_memory, database, tmp_path):
    memory = make_memory(database, max_file_mb=0.01)
    me = owner_of(memory)
    folder = tmp_path / "mixed"
    write(folder, {"good.md": "# Good\n\nA readable note about sailing boats.\n"})
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a PDF" + os.urandom(64))
    (folder / "blob.dat").write_bytes(bytes(range(256)) * 4)
    (folder / "huge.txt").write_text("word " * 5000)  # 25 KB, over the 10 KB limit
    os.symlink(folder, folder / "loop")
    summary = await memory.ingest(me, "notes", [folder, tmp_path / "missing"])
    assert summary.added == 1
    failed = {os.path.basename(f.source): f.error for f in summary.failed}
    assert set(failed) >= {"broken.pdf", "blob.dat", "huge.txt", "missing"}
    assert "binary" in failed["blob.dat"]
    assert "MB limit" in failed["huge.txt"]
    assert "no such file" in failed["missing"]
    docs = {os.path.basename(d.source): d for d in memory.store.collections.documents(me,
                                                                                         "notes")}
    assert docs["good.md"].status == "ready"
    assert docs["broken.pdf"].status == "failed" and docs["broken.pdf"].chunks == 0
    hits = await memory.search(me, "sailing boats", ["notes"], k=5)
    assert [os.path.basename(h.source) for h in hits] == ["good.md"]


async def test_filters_apply_inside_both_legs(make_memory, database, tmp_path):
    memory = make_memory(database)
    me = owner_of(memory)
    folder = tmp_path / "f"
    # the best matches are in a.md; b.md's chunks match less well, but are the ones wanted
    write(folder, {"a.md": "\n\n".join(f"## A{i}\n\nBackups of the database run nightly, "
                                         f"backup {i}." for i in range(6)),
                   "b.md": "\n\n".join(f"## B{i}\n\nA note on database copies, {i}."
                                       for i in range(4))})
    await memory.ingest(me, "notes", [folder])
    hits = await memory.search(me, "database backups nightly", ["notes"], k=4,
                               source="*/b.md")
    assert len(hits) == 4
    assert {h.source for h in hits} == {str(folder / "b.md")}
    future = datetime.now(UTC) + timedelta(days=1)
    assert await memory.search(me, "database backups", ["notes"], since=future) == []
    assert len(await memory.search(me, "database backups", ["notes"], k=3,
                                   until=future)) == 3


async def test_another_users_collection_does_not_exist_for_them(make_memory, database, notes):
    memory = make_memory(database)
    me, ana = owner_of(memory), member(memory, "ana")
    await memory.ingest(me, "notes", [notes])
    for name in ("notes", "owner/notes"):
        with pytest.raises(NotFoundError):
            await memory.search(ana, "keys", [name])
        with pytest.raises(NotFoundError):
            memory.store.collections.documents(ana, name)
    assert memory.store.collections.list(ana) == []
    with pytest.raises(NotFoundError):  # writing into it finds nothing either
        await memory.ingest(ana, "owner/notes", [notes])

    memory.store.collections.share(me, "notes", "ana")
    hits = await memory.search(ana, "rotate keys", ["owner/notes"], k=1)
    assert hits[0].collection == "owner/notes"
    assert [c.name for c in memory.store.collections.list(ana)] == ["owner/notes"]
    with pytest.raises(PermissionDeniedError):  # shared to read, not to change
        memory.store.collections.delete(ana, "owner/notes")
    with pytest.raises(PermissionDeniedError):
        await memory.ingest(ana, "owner/notes", [notes])

    memory.store.collections.share(me, "notes", "ana", shared=False)
    with pytest.raises(NotFoundError):
        await memory.search(ana, "keys", ["owner/notes"])
    # ana's own collection of the same name is hers alone
    await memory.ingest(ana, "notes", [notes / "garden.md"])
    assert {h.source for h in await memory.search(ana, "keys", ["notes"], k=5)} == \
        {str(notes / "garden.md")}


def answered(memory, principal, chunk_ids: list[int], question: str, n: int = 1) -> list[str]:
    """Record n answers to `question` that were given these chunks; their turn ids."""
    ids = [f"turn_{os.urandom(12).hex()}" for _ in range(n)]
    records = [TurnRecord(id=t, conversation_id=f"conv_{os.urandom(12).hex()}",
                          owner_id=principal.user_id, request_id=t, model="m",
                          messages=[{"role": "user",
                                     "content": [{"type": "text", "text": question}]}],
                          completion=[{"role": "assistant",
                                       "content": [{"type": "text", "text": "..."}]}],
                          state_hash=os.urandom(8).hex(), new=True, sources=chunk_ids)
               for t in ids]
    with begin_write(memory.store.engine) as conn:
        write_turns(conn, records)
    return ids


async def test_ratings_move_a_chunk_a_little_and_never_hide_it(make_memory, database, tmp_path):
    memory = make_memory(database)
    me = owner_of(memory)
    folder = tmp_path / "twins"
    write(folder, {"one.md": "The office wifi password is on the fridge.\n",
                   "two.md": "The office wifi password is on the fridge door.\n"})
    await memory.ingest(me, "notes", [folder])
    query = "where is the office wifi password"
    first, second = await memory.search(me, query, ["notes"], k=2)
    # a few votes down: still there
    for turn in answered(memory, me, [first.chunk_id], query, n=2):
        memory.store.feedback.add(me, "rating", turn, rating=-1)
    assert {h.chunk_id for h in await memory.search(me, query, ["notes"], k=2)} == \
        {first.chunk_id, second.chunk_id}
    # many more: it sinks below its twin, and is still found
    for turn in answered(memory, me, [first.chunk_id], query, n=8):
        memory.store.feedback.add(me, "rating", turn, rating=-1)
    hits = await memory.search(me, query, ["notes"], k=2)
    assert [h.chunk_id for h in hits] == [second.chunk_id, first.chunk_id]
    assert hits[1].score >= 0.5 * first.score  # bounded: never below half
    review = memory.review(me, "notes")
    assert [(r["chunk_id"], r["down"]) for r in review] == [(first.chunk_id, 10)]


async def test_a_correction_is_found_before_what_it_corrects(make_memory, database, notes):
    memory = make_memory(database)
    me = owner_of(memory)
    await memory.ingest(me, "notes", [notes])
    question = "how often should API keys be rotated"
    wrong = (await memory.search(me, question, ["notes"], k=1))[0]
    (turn,) = answered(memory, me, [wrong.chunk_id], question)
    item = memory.store.feedback.add(me, "correction", turn,
                                     text="Keys are rotated every 30 days since the audit.")
    made = await memory.absorb(me, item)
    assert len(made) == 1
    for asked in (question, "what is the key rotation period"):
        hits = await memory.search(me, asked, ["notes"], k=3)
        assert hits[0].kind == "correction" and hits[0].corrects == wrong.chunk_id, asked
        assert "30 days" in hits[0].text
        assert wrong.chunk_id in [h.chunk_id for h in hits[1:]]
    # deleting the conversation takes the correction with it
    conversation = memory.store.conversations.list(me)[0][0].id
    gone = memory.store.conversations.delete(me, conversation)
    assert gone["memory chunks"] == 1
    assert (await memory.search(me, question, ["notes"], k=1))[0].kind == "text"


async def test_reindex_with_another_embedder_swaps_a_whole_index(make_memory, database, notes,
                                                                 tiny_embedder):
    memory = make_memory(database)
    me = owner_of(memory)
    await memory.ingest(me, "notes", [notes])
    before = memory.store.collections.get(me, "notes")
    done = await memory.reindex(me, "notes", str(tiny_embedder))
    after = memory.store.collections.get(me, "notes")
    assert after.embedder == str(tiny_embedder) and after.index_id != before.index_id
    assert done["chunks"] == after.chunks
    with memory.store.engine.connect() as conn:  # only the new index's vectors remain
        kept = conn.execute(select(vectors.c.index_id).distinct()).scalars().all()
        assert kept == [after.index_id]
    # search embeds the query with the new model (32 dimensions) and still finds by keywords
    hits = await memory.search(me, "XJ-2041", ["notes"], k=1)
    assert hits[0].source == str(notes / "errors.txt")
    # a later ingest writes with the collection's embedder, not the default
    write(notes, {"new.md": "A new note about calibration of the flux capacitor.\n"})
    assert (await memory.ingest(me, "notes", [notes])).added == 1


async def test_conversations_are_ingested_only_when_asked(make_memory, database):
    memory = make_memory(database)
    me = owner_of(memory)
    answered(memory, me, [], "What is the capital of Burkina Faso?")
    summary = await memory.ingest_conversations(me, "chats")
    assert summary.added == 1
    hits = await memory.search(me, "Burkina Faso capital", ["chats"], k=1)
    assert hits[0].source.startswith("conversation:conv_")
    assert (await memory.ingest_conversations(me, "chats")).unchanged == 1
    memory.store.conversations.delete(me, hits[0].source.removeprefix("conversation:"))
    assert await memory.search(me, "Burkina Faso capital", ["chats"], k=1) == []
    with memory.store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(documents)).scalar() == 0
