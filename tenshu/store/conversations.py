"""Conversations and their turns: what was said, kept for the person who said it.

A conversation belongs to one user; a turn is one request in it and its answer, with the
request id, the model and route that answered, the exact messages the client sent new that
turn, the completion, tokens, latency and trace. Turns are recorded off the request path, in the
batches of the record writer (store/writer.py), numbered in the order they finish.

Every read and write here takes the principal and filters on owner_id in the same query (see
people.owner_of): another user's conversation answers as one that does not exist.

Deleting a conversation deletes what was derived from it: its turns, the feedback on them, and
whatever a later subsystem registered in ON_DELETE (memory chunks, datasets); the caller gets
the counts of each.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    String,
    Text,
    bindparam,
    column,
    delete,
    func,
    insert,
    or_,
    select,
    table,
    update,
)

from tenshu.store.people import Principal, access, owner_of
from tenshu.store.sql import UTCDateTime, begin_write, insert_many, page_after, utcnow

MAX_TITLE = 200
NEW_TITLE = "New conversation"

conversations = table(
    "conversations", column("id", String), column("owner_id", Integer), column("title", String),
    column("created_at", UTCDateTime()), column("updated_at", UTCDateTime()),
    column("kind", String),
)
KINDS = ("chat", "arena")  # the arena's answers are conversations of their own kind
turns = table(
    "turns", column("id", String), column("conversation_id", String),
    column("owner_id", Integer), column("seq", Integer), column("request_id", String),
    column("key_id", Integer), column("model", String), column("routed", String),
    column("backend", String), column("messages", Text), column("completion", Text),
    column("text", Text), column("state_hash", String), column("input_tokens", Integer),
    column("output_tokens", Integer), column("ttft_ms", Float), column("duration_ms", Float),
    column("trace", Text), column("created_at", UTCDateTime()),
    column("superseded_by", String), column("adapter", String),
)
# Which memory chunks each answer was given (memory/stage.py), so its ratings reach them.
turn_sources = table(
    "turn_sources", column("turn_id", String), column("chunk_id", Integer),
    column("owner_id", Integer), column("rank", Integer),
)

# What else a deleted conversation takes with it: functions (conn, owner_id, conversation ids)
# -> {what: how many}, run in the deleting transaction. Memory and the learning loop add theirs.
OnDelete = Callable[[Connection, int, list[str]], dict[str, int]]
ON_DELETE: list[OnDelete] = []


def new_id(prefix: str) -> str:
    """An id nobody can guess (96 random bits), e.g. conv_5f0c..."""
    return f"{prefix}_{secrets.token_hex(12)}"


def state_hash(messages: Iterable[dict]) -> str:
    """A conversation's state: the hash of its messages (as core.messages.to_dict writes them,
    always with their keys in the same order), so a client that sends the whole history again
    can be matched to the conversation it continues."""
    text = json.dumps(list(messages), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    title: str
    created_at: datetime
    updated_at: datetime
    kind: str = "chat"
    turns: int = 0

    def to_json(self) -> dict:
        return {"id": self.id, "object": "conversation", "title": self.title, "kind": self.kind,
                "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat(), "turns": self.turns}


@dataclass
class TurnRecord:
    """One answered request in a conversation, as the gateway hands it to the record writer.
    `messages` and `completion` are message dicts ({"role", "content": [blocks]}). (No slots:
    the writer journals its __dict__.)"""

    id: str
    conversation_id: str
    owner_id: int
    request_id: str
    model: str
    messages: list[dict]
    completion: list[dict]
    state_hash: str
    key_id: int | None = None
    routed: str | None = None
    backend: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    trace: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    new: bool = False  # the first turn of a conversation the request started: make it too
    kind: str = "chat"  # of the conversation it makes, when new
    sources: list[int] = field(default_factory=list)  # memory chunks it was given, best first
    replaces: list[str] = field(default_factory=list)  # turns it regenerates (x-tenshu-rewind)
    adapter: str | None = None  # the LoRA adapter version that answered ("NAME@vN")


@dataclass(frozen=True, slots=True)
class Turn:
    id: str
    conversation_id: str
    seq: int
    request_id: str
    model: str
    routed: str | None
    backend: str | None
    messages: list[dict]
    completion: list[dict]
    input_tokens: int
    output_tokens: int
    ttft_ms: float | None
    duration_ms: float
    trace: str | None
    created_at: datetime
    superseded_by: str | None = None  # the turn that regenerated it: no longer on the path
    adapter: str | None = None  # the LoRA adapter version that answered ("NAME@vN")

    def to_json(self) -> dict:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        out["trace"] = json.loads(self.trace) if self.trace else None
        return {"object": "turn", **out}


TURN_COLUMNS = (turns.c.id, turns.c.conversation_id, turns.c.seq, turns.c.request_id,
                turns.c.model, turns.c.routed, turns.c.backend, turns.c.messages,
                turns.c.completion, turns.c.input_tokens, turns.c.output_tokens,
                turns.c.ttft_ms, turns.c.duration_ms, turns.c.trace, turns.c.created_at,
                turns.c.superseded_by, turns.c.adapter)
_CONVERSATION = (conversations.c.id, conversations.c.title, conversations.c.created_at,
                 conversations.c.updated_at, conversations.c.kind)


def history(turns: Iterable[Turn]) -> list[dict]:
    """A conversation's messages through these turns: each turn's new messages, then its
    answer (the first choice). Turns that a regenerated answer replaced are not on its path."""
    out: list[dict] = []
    for turn in current(turns):
        out += turn.messages
        out += turn.completion[:1]
    return out


def current(turns: Iterable[Turn]) -> list[Turn]:
    """The turns on the conversation's path: those no regenerated answer replaced."""
    return [turn for turn in turns if turn.superseded_by is None]


def turn_from_row(row) -> Turn:
    values = list(row)
    values[7], values[8] = json.loads(values[7]), json.loads(values[8])
    return Turn(*values)


def _count():
    return (select(func.count()).select_from(turns)
            .where(turns.c.conversation_id == conversations.c.id,
                   turns.c.superseded_by.is_(None)).scalar_subquery())


class ConversationStore:
    """Conversations in one database. Database I/O: not for the event loop."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, principal: Principal, title: str = NEW_TITLE,
               conversation_id: str | None = None) -> Conversation:
        now = utcnow()
        conv = Conversation(conversation_id or new_id("conv"), _title(title), now, now)
        with begin_write(self._engine) as conn:
            conn.execute(insert(conversations).values(
                id=conv.id, owner_id=principal.user_id, title=conv.title, created_at=now,
                updated_at=now, kind=conv.kind))
        return conv

    def get(self, principal: Principal, conversation_id: str, *,
            user: str | None = None) -> Conversation | None:
        with access(self._engine, principal, user, "read",
                    f"conversation {conversation_id}") as (conn, owner):
            row = conn.execute(select(*_CONVERSATION, _count()).where(
                conversations.c.id == conversation_id,
                conversations.c.owner_id == owner)).first()
        return Conversation(*row) if row else None

    def list(self, principal: Principal, *, user: str | None = None, limit: int = 20,
             after: str | None = None, query: str | None = None, kind: str = "chat"
             ) -> tuple[list[Conversation], bool]:
        """The owner's conversations of `kind`, most recently updated first: a page of `limit`
        after the conversation `after` (the last id of the previous page), and whether more
        follow. `query` matches titles and the words of turns, case-insensitively."""
        with access(self._engine, principal, user, "read", "conversations") as (conn, owner):
            stmt = (select(*_CONVERSATION, _count())
                    .where(conversations.c.owner_id == owner, conversations.c.kind == kind)
                    .order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())
                    .limit(limit + 1))
            if after is not None:
                stmt = page_after(conn, stmt, conversations.c.updated_at, after, owner)
                if stmt is None:
                    return [], False
            if query:
                pattern = f"%{_escape_like(query.lower())}%"
                said = select(turns.c.conversation_id).where(
                    turns.c.owner_id == owner, func.lower(turns.c.text).like(pattern, "\\"))
                stmt = stmt.where(or_(func.lower(conversations.c.title).like(pattern, "\\"),
                                      conversations.c.id.in_(said)))
            rows = conn.execute(stmt).all()
        return [Conversation(*row) for row in rows[:limit]], len(rows) > limit

    def turns(self, principal: Principal, conversation_id: str, *,
              user: str | None = None) -> list[Turn] | None:
        """The conversation's turns in order; None when it is not the owner's (or not at all)."""
        with access(self._engine, principal, user, "read",
                    f"conversation {conversation_id}") as (conn, owner):
            if not _owns(conn, owner, conversation_id):
                return None
            rows = conn.execute(select(*TURN_COLUMNS).where(
                turns.c.conversation_id == conversation_id, turns.c.owner_id == owner)
                .order_by(turns.c.seq))
            return [turn_from_row(row) for row in rows]

    def sources(self, principal: Principal, turn_ids: list[str]) -> dict[str, list[dict]]:
        """The memory chunks each of the principal's turns was given, best first: {turn id:
        [{chunk_id, title, section, page, collection}]} (a chunk deleted since keeps its id,
        with no title)."""
        from tenshu.store.collections import chunks, collections

        out: dict[str, list[dict]] = {}
        if not turn_ids:
            return out
        stmt = (select(turn_sources.c.turn_id, turn_sources.c.chunk_id, chunks.c.title,
                       chunks.c.section, chunks.c.page, collections.c.name)
                .select_from(turn_sources
                             .outerjoin(chunks, chunks.c.id == turn_sources.c.chunk_id)
                             .outerjoin(collections, collections.c.id == chunks.c.collection_id))
                .where(turn_sources.c.owner_id == principal.user_id,
                       turn_sources.c.turn_id.in_(turn_ids))
                .order_by(turn_sources.c.turn_id, turn_sources.c.rank))
        with self._engine.connect() as conn:
            for turn_id, chunk_id, title, section, page, collection in conn.execute(stmt):
                out.setdefault(turn_id, []).append(dict(
                    chunk_id=chunk_id, title=title, section=section, page=page,
                    collection=collection))
        return out

    def continued_by(self, principal: Principal, state: str) -> str | None:
        """The principal's conversation whose latest turn left it in `state` (a client sending
        the whole history again continues it), if any."""
        with self._engine.connect() as conn:
            return conn.execute(
                select(turns.c.conversation_id)
                .where(turns.c.owner_id == principal.user_id, turns.c.state_hash == state)
                .order_by(turns.c.created_at.desc()).limit(1)).scalar()

    def rename(self, principal: Principal, conversation_id: str, title: str, *,
               user: str | None = None) -> Conversation | None:
        with begin_write(self._engine) as conn:
            owner = owner_of(conn, principal, user, "rename", f"conversation {conversation_id}")
            done = conn.execute(update(conversations).where(
                conversations.c.id == conversation_id, conversations.c.owner_id == owner)
                .values(title=_title(title), updated_at=utcnow())).rowcount
            if not done:
                return None
            row = conn.execute(select(*_CONVERSATION, _count()).where(
                conversations.c.id == conversation_id)).first()
        return Conversation(*row)

    def delete(self, principal: Principal, conversation_id: str, *,
               user: str | None = None) -> dict[str, int] | None:
        """Delete the conversation and what was derived from it; how many of each were removed,
        or None when it is not the owner's."""
        with begin_write(self._engine) as conn:
            owner = owner_of(conn, principal, user, "delete", f"conversation {conversation_id}")
            if not _owns(conn, owner, conversation_id):
                return None
            return delete_conversations(conn, owner, [conversation_id])


def delete_conversations(conn: Connection, owner_id: int,
                         ids: list[str] | None) -> dict[str, int]:
    """Delete the owner's conversations `ids` (None: all of them) with their turns, the
    feedback on those turns, and what ON_DELETE's functions remove. Counts per kind."""
    from tenshu.store.feedback import feedback

    if ids is None:
        ids = list(conn.execute(select(conversations.c.id)
                                .where(conversations.c.owner_id == owner_id)).scalars())
    removed = {"conversations": 0, "turns": 0, "feedback": 0}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        gone = select(turns.c.id).where(turns.c.owner_id == owner_id,
                                        turns.c.conversation_id.in_(chunk))
        removed["feedback"] += conn.execute(delete(feedback).where(
            feedback.c.owner_id == owner_id,
            or_(feedback.c.turn_id.in_(gone), feedback.c.other_turn_id.in_(gone)))).rowcount
        for hook in ON_DELETE:
            for what, count in hook(conn, owner_id, chunk).items():
                removed[what] = removed.get(what, 0) + count
        removed["turns"] += conn.execute(delete(turns).where(
            turns.c.owner_id == owner_id, turns.c.conversation_id.in_(chunk))).rowcount
        removed["conversations"] += conn.execute(delete(conversations).where(
            conversations.c.owner_id == owner_id, conversations.c.id.in_(chunk))).rowcount
    return removed


def write_turns(conn: Connection, records: list[TurnRecord]) -> None:
    """Insert turns (the record writer's batch), each numbered after the last of its
    conversation, and bring their conversations' updated_at (and a default title) along; the
    first turn of a new conversation makes the conversation. A turn whose conversation is not
    its owner's is dropped: it cannot be written into someone else's. A few statements per
    batch, not per turn."""
    if not records:
        return
    ids = sorted({r.conversation_id for r in records})
    known = {row.id: row for start in range(0, len(ids), 500) for row in conn.execute(
        select(conversations.c.id, conversations.c.owner_id, conversations.c.title)
        .where(conversations.c.id.in_(ids[start:start + 500])))}
    made: dict[str, dict] = {}  # conversations this batch starts, written whole
    for r in records:
        if r.new and r.conversation_id not in known and r.conversation_id not in made:
            made[r.conversation_id] = dict(
                id=r.conversation_id, owner_id=r.owner_id,
                title=_first_words(r.messages) or NEW_TITLE, created_at=r.created_at,
                updated_at=r.created_at, kind=r.kind)
    mine = [r for r in records if (r.conversation_id in made
                                   and made[r.conversation_id]["owner_id"] == r.owner_id)
            or (r.conversation_id in known
                and known[r.conversation_id].owner_id == r.owner_id)]
    if not mine:
        return
    old = sorted({r.conversation_id for r in mine} - set(made))
    last = {row[0]: row[1] for start in range(0, len(old), 500) for row in conn.execute(
        select(turns.c.conversation_id, func.max(turns.c.seq))
        .where(turns.c.conversation_id.in_(old[start:start + 500]))
        .group_by(turns.c.conversation_id))}
    rows, touched = [], {}
    for r in mine:
        seq = last[r.conversation_id] = last.get(r.conversation_id, 0) + 1
        rows.append(dict(
            id=r.id, conversation_id=r.conversation_id, owner_id=r.owner_id, seq=seq,
            request_id=r.request_id, key_id=r.key_id, model=r.model, routed=r.routed,
            backend=r.backend, messages=_dumps(r.messages), completion=_dumps(r.completion),
            text=_words(r.messages, r.completion), state_hash=r.state_hash,
            input_tokens=r.input_tokens, output_tokens=r.output_tokens, ttft_ms=r.ttft_ms,
            duration_ms=r.duration_ms, trace=r.trace, created_at=r.created_at,
            adapter=r.adapter))
        if r.conversation_id in made:
            made[r.conversation_id]["updated_at"] = max(made[r.conversation_id]["updated_at"],
                                                        r.created_at)
            continue
        title = known[r.conversation_id].title
        update_ = touched.setdefault(r.conversation_id, {"cid": r.conversation_id,
                                                          "at": r.created_at, "title": title})
        update_["at"] = max(update_["at"], r.created_at)
        if update_["title"] == NEW_TITLE and (first := _first_words(r.messages)):
            update_["title"] = first
    insert_many(conn, conversations, list(made.values()))
    insert_many(conn, turns, rows)
    insert_many(conn, turn_sources, [
        dict(turn_id=r.id, chunk_id=chunk_id, owner_id=r.owner_id, rank=rank)
        for r in mine for rank, chunk_id in enumerate(r.sources, start=1)])
    replaced = [dict(tid=old, by=r.id, owner=r.owner_id, cid=r.conversation_id)
                for r in mine for old in r.replaces]
    if replaced:  # only the owner's turns of the same conversation: nobody else's path moves
        conn.execute(update(turns).where(
            turns.c.id == bindparam("tid"), turns.c.owner_id == bindparam("owner"),
            turns.c.conversation_id == bindparam("cid")).values(superseded_by=bindparam("by")),
            replaced)
    if touched:
        conn.execute(update(conversations).where(conversations.c.id == bindparam("cid"))
                     .values(updated_at=bindparam("at"), title=bindparam("title")),
                     list(touched.values()))


@dataclass(frozen=True, slots=True)
class _Known:
    id: str
    owner_id: int
    title: str


def known_turns(conn: Connection, ids: list[str]) -> set[str]:
    """Which of these turn ids are written already (the journal's replay skips them)."""
    return {row[0] for start in range(0, len(ids), 500) for row in conn.execute(
        select(turns.c.id).where(turns.c.id.in_(ids[start:start + 500])))}


def _owns(conn: Connection, owner: int, conversation_id: str) -> bool:
    return conn.execute(select(conversations.c.id).where(
        conversations.c.id == conversation_id,
        conversations.c.owner_id == owner)).first() is not None


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _words(*message_lists: list[dict]) -> str:
    """The text of messages (their text blocks), for search."""
    return "\n".join(block.get("text", "") for messages in message_lists for m in messages
                     for block in m.get("content", ()) if block.get("type") == "text")


def _first_words(messages: list[dict]) -> str:
    for m in messages:
        if m.get("role") == "user":
            text = " ".join(_words([m]).split())
            if text:
                return _title(text[:80])
    return ""


def _title(title: str) -> str:
    title = " ".join(str(title).split())[:MAX_TITLE]
    return title or NEW_TITLE


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
