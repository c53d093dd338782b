"""Conversations, turns and feedback in the store, on SQLite and PostgreSQL: ownership in every
query (another user's id answers as a missing one, and nothing is written), admins' reads
logged, turns numbered in order through the record writer, search and pages, deletion that
takes what was derived (hooks included), the export's prompts, and Open WebUI's export."""

from __future__ import annotations

import json

import pytest

from tenshu.core.errors import InvalidRequestError, NotFoundError
from tenshu.store import Principal, TurnRecord, open_store
from tenshu.store.conversations import ON_DELETE, state_hash
from tenshu.store.feedback import export_rows
from tenshu.store.openwebui import import_ratings


@pytest.fixture
def store(database):
    with open_store(database) as store:
        yield store


@pytest.fixture
def people(store):
    ana, ben = store.users.add("ana"), store.users.add("ben")
    return Principal.of(ana), Principal.of(ben), Principal.of(store.users.owner())


def text(role: str, words: str) -> dict:
    return {"role": role, "content": [{"type": "text", "text": words}]}


def record(who: Principal, conversation: str, n: int, words: str) -> TurnRecord:
    return TurnRecord(id=f"turn_{conversation[5:13]}{n:016x}", conversation_id=conversation,
                      owner_id=who.user_id, request_id=f"req_{n}", model="tenshu-tiny",
                      messages=[text("user", words)],
                      completion=[text("assistant", f"answer to {words}")],
                      state_hash=state_hash([words, n]), input_tokens=5, output_tokens=7,
                      duration_ms=12.5, trace=json.dumps({"reason": "model"}))


def answered(writer, turn: TurnRecord) -> None:
    """What the gateway does when a recorded request is answered."""
    writer.record(turn=turn, request_id=turn.request_id, protocol="openai",
                  route="/v1/chat/completions", model=turn.model)


async def recorded(store, who: Principal, words: list[str], title=None) -> tuple[str, list]:
    conversation = store.conversations.create(who, *([title] if title else [])).id
    writer = store.writer(batch_size=3)
    await writer.start()
    records = [record(who, conversation, i, w) for i, w in enumerate(words)]
    for r in records:
        answered(writer, r)
    await writer.close()
    return conversation, records


async def test_turns_are_numbered_in_the_order_they_were_recorded(store, people):
    ana, _, _ = people
    conv, records = await recorded(store, ana, [f"question {i}" for i in range(7)])
    turns = store.conversations.turns(ana, conv)
    assert [t.seq for t in turns] == list(range(1, 8))
    assert [t.id for t in turns] == [r.id for r in records]
    assert turns[0].messages == [text("user", "question 0")]
    assert turns[0].completion[0]["content"][0]["text"] == "answer to question 0"
    assert (turns[0].input_tokens, turns[0].output_tokens, turns[0].duration_ms) == (5, 7, 12.5)
    got = store.conversations.get(ana, conv)
    assert (got.title, got.turns) == ("question 0", 7)  # the first words became the title


async def test_another_users_record_answers_as_a_missing_one(store, people):
    ana, ben, _ = people
    conv, records = await recorded(store, ana, ["ana's secret plan"])
    turn = records[0].id
    assert store.conversations.get(ben, conv) is None
    assert store.conversations.turns(ben, conv) is None
    assert store.conversations.rename(ben, conv, "mine now") is None
    assert store.conversations.delete(ben, conv) is None
    assert store.conversations.list(ben) == ([], False)
    assert store.conversations.list(ben, query="secret") == ([], False)
    with pytest.raises(NotFoundError):  # a member cannot name another user
        store.conversations.list(ben, user="ana")
    with pytest.raises(NotFoundError):
        store.feedback.add(ben, "rating", turn, rating=-1)
    assert store.feedback.list(ben, turn_id=turn) == ([], False)
    # a turn written into someone else's conversation is dropped, not written
    writer = store.writer()
    await writer.start()
    answered(writer, record(ben, conv, 99, "ben writes into ana's"))
    await writer.close()
    assert [t.seq for t in store.conversations.turns(ana, conv)] == [1]
    # ana's record is as it was
    assert store.conversations.get(ana, conv).title == "ana's secret plan"
    assert store.feedback.list(ana) == ([], False)


async def test_an_admin_reads_anyones_record_and_the_read_is_logged(store, people):
    ana, _, owner = people
    conv, _ = await recorded(store, ana, ["hello"])
    assert store.conversations.get(owner, conv) is None  # not the admin's own
    assert store.conversations.get(owner, conv, user="ana").id == conv
    assert len(store.conversations.turns(owner, conv, user="ana")) == 1
    reads = store.users.admin_reads()
    assert [(r["admin"], r["user"], r["action"]) for r in reads] == \
        [("owner", "ana", "read"), ("owner", "ana", "read")]
    assert reads[0]["resource"] == f"conversation {conv}"
    with pytest.raises(NotFoundError):
        store.conversations.get(owner, conv, user="nobody")


async def test_pages_and_search(store, people):
    ana, _, _ = people
    ids = []
    for i in range(5):
        conv, _ = await recorded(store, ana, [f"topic {i}: {'castle' if i % 2 else 'moat'}"])
        ids.append(conv)
    first, more = store.conversations.list(ana, limit=2)
    assert [c.id for c in first] == ids[::-1][:2] and more
    second, more = store.conversations.list(ana, limit=2, after=first[-1].id)
    assert [c.id for c in second] == ids[::-1][2:4] and more
    last, more = store.conversations.list(ana, limit=2, after=second[-1].id)
    assert [c.id for c in last] == [ids[0]] and not more
    found, _ = store.conversations.list(ana, query="CASTLE")
    assert sorted(c.id for c in found) == sorted([ids[1], ids[3]])
    assert store.conversations.list(ana, query="100%_") == ([], False)  # LIKE's wildcards
    renamed = store.conversations.rename(ana, ids[0], "  the   moat  ")
    assert renamed.title == "the moat"


async def test_deleting_takes_turns_feedback_and_what_hooks_derived(store, people):
    ana, _, _ = people
    conv, records = await recorded(store, ana, ["a", "b"])
    other, _ = await recorded(store, ana, ["c"])
    store.feedback.add(ana, "rating", records[0].id, rating=1, text="good")
    store.feedback.add(ana, "correction", records[1].id, text="better")
    seen = []

    def memory_chunks(conn, owner_id, ids):
        seen.append((owner_id, ids))
        return {"memory_chunks": 3}

    ON_DELETE.append(memory_chunks)
    try:
        removed = store.conversations.delete(ana, conv)
    finally:
        ON_DELETE.remove(memory_chunks)
    assert removed == {"conversations": 1, "turns": 2, "feedback": 2, "memory_chunks": 3}
    assert seen == [(ana.user_id, [conv])]
    assert store.conversations.get(ana, conv) is None
    assert store.conversations.get(ana, other) is not None
    assert store.conversations.delete(ana, conv) is None


async def test_feedback_of_every_kind_and_its_checks(store, people):
    ana, _, _ = people
    conv, (first, second) = await recorded(store, ana, ["same prompt", "same prompt"])
    _, (elsewhere,) = await recorded(store, ana, ["another prompt"])
    items = [
        store.feedback.add(ana, "rating", first.id, rating=-1, text="too short"),
        store.feedback.add(ana, "correction", first.id, text="the right answer"),
        store.feedback.add(ana, "comment", first.id, text="hm"),
        store.feedback.add(ana, "preference", first.id, other_turn_id=second.id,
                           preference="b"),
    ]
    listed, _ = store.feedback.list(ana, conversation_id=conv)
    assert [f.id for f in listed] == [i.id for i in reversed(items)]
    page, more = store.feedback.list(ana, limit=3)
    rest, last = store.feedback.list(ana, limit=3, after=page[-1].id)
    assert [f.id for f in page + rest] == [i.id for i in reversed(items)] and more and not last
    assert store.feedback.list(ana, after="fb_" + "0" * 24) == ([], False)
    bad = [
        dict(kind="rating", rating=7), dict(kind="rating", rating=True),
        dict(kind="rating", rating=None), dict(kind="correction", text=" "),
        dict(kind="correction", text="x" * 70_000), dict(kind="comment"),
        dict(kind="preference", other_turn_id=second.id, preference="c"),
        dict(kind="preference", preference="a"),
        dict(kind="preference", other_turn_id=first.id, preference="a"),
        dict(kind="preference", other_turn_id=elsewhere.id, preference="a"),
        dict(kind="vibe"),
        dict(kind="comment", text="x", rating=1),
    ]
    for case in bad:
        kind = case.pop("kind")
        with pytest.raises(InvalidRequestError):
            store.feedback.add(ana, kind, first.id, **case)
    with pytest.raises(NotFoundError):
        store.feedback.add(ana, "rating", "turn_" + "0" * 24, rating=1)
    assert len(store.feedback.list(ana)[0]) == 4  # nothing more was written


async def test_the_export_pairs_each_judgement_with_its_prompt_and_answers(store, people):
    ana, _, owner = people
    conv, (first, second) = await recorded(store, ana, ["hi", "tell me more"])
    store.feedback.add(ana, "rating", second.id, rating=1)
    (row,) = list(export_rows(store.engine, owner, user="ana"))
    assert row["kind"] == "rating" and row["rating"] == 1 and row["conversation_id"] == conv
    assert row["prompt"] == [text("user", "hi"), text("assistant", "answer to hi"),
                             text("user", "tell me more")]
    assert row["answer"] == text("assistant", "answer to tell me more")


def openwebui_export() -> list[dict]:
    messages = {
        "u1": {"id": "u1", "parentId": None, "childrenIds": ["a1"], "role": "user",
               "content": "What is a moat?"},
        "a1": {"id": "a1", "parentId": "u1", "childrenIds": ["u2"], "role": "assistant",
               "content": "Water around a castle.", "model": "llama3"},
        "u2": {"id": "u2", "parentId": "a1", "childrenIds": ["a2", "a3"], "role": "user",
               "content": "Why?"},
        "a2": {"id": "a2", "parentId": "u2", "childrenIds": [], "role": "assistant",
               "content": "To keep attackers out.", "model": "llama3"},
        "a3": {"id": "a3", "parentId": "u2", "childrenIds": [], "role": "assistant",
               "content": "Because.", "model": "qwen"},
    }
    snapshot = {"chat": {"id": "chat1", "title": "Moats", "chat": {
        "title": "Moats", "history": {"messages": messages, "currentId": "a2"}}}}
    return [
        {"id": "f1", "user_id": "x", "version": 0, "type": "rating",
         "data": {"rating": 1, "model_id": "llama3", "sibling_model_ids": ["qwen"],
                  "reason": "Accurate information", "comment": "clear", "details": {"rating": 9}},
         "meta": {"arena": True, "chat_id": "chat1", "message_id": "a2"},
         "snapshot": snapshot, "created_at": 1700000000, "updated_at": 1700000000},
        {"id": "f2", "type": "rating", "data": {"rating": -1}, "meta": {"message_id": "zz"},
         "snapshot": snapshot},  # the rated message is not in the snapshot
        {"id": "f3", "type": "rating", "data": {"rating": 5}},
        "not a record",
    ]


async def test_open_webui_ratings_come_in_once(store, people):
    ana, _, _ = people
    counts = import_ratings(store.engine, ana, openwebui_export())
    assert counts == {"imported": 1, "already": 0, "skipped": 3}
    (conversation, arena), _ = store.conversations.list(ana)
    turns = store.conversations.turns(ana, arena.id) + store.conversations.turns(
        ana, conversation.id)
    words = sorted(t.completion[0]["content"][0]["text"] for t in turns)
    assert words == ["Because.", "To keep attackers out.", "Water around a castle."]
    kinds = sorted((f.kind, f.rating, f.preference, f.text)
                   for f in store.feedback.list(ana)[0])
    assert kinds == [("preference", None, "a", None),
                     ("rating", 1, None, "Accurate information\nclear")]
    again = import_ratings(store.engine, ana, openwebui_export())
    assert again == {"imported": 0, "already": 1, "skipped": 3}
