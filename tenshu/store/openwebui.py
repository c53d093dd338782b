"""Open WebUI's feedback export, brought in: each rating becomes a conversation (the chat up to
the rated answer, from the export's snapshot), its turns, and the rating on the last turn.

An export is a JSON list of records: `type` "rating", `data` (rating 1 or -1, reason, comment,
model_id, sibling_model_ids), `meta` (chat_id, message_id, arena) and `snapshot.chat`, the chat
as it was, whose `chat.history.messages` map message ids to messages linked by `parentId`. The
rated message's branch, from the first message down, is what the person saw. In an arena, the
other answer (a sibling of the rated one) becomes a second turn in a conversation of its own,
and the rating a preference between the two as well.

Importing twice imports nothing new: each record's id is kept as the feedback's source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, insert

from tenshu.store.conversations import (
    TurnRecord,
    conversations,
    new_id,
    state_hash,
    write_turns,
)
from tenshu.store.feedback import feedback, imported
from tenshu.store.people import Principal
from tenshu.store.sql import begin_write, utcnow

SOURCE = "openwebui:"


@dataclass
class Rated:
    """One export record, read: the branch of messages ending in the rated answer."""

    source: str
    title: str
    branch: list[dict]  # {"role", "content" (text), "model"}, oldest first; the last is rated
    rating: int
    reason: str
    created_at: datetime
    sibling: dict | None = None  # the arena's other answer
    skipped: str = ""  # why it cannot be imported, when it cannot
    turns: list[tuple[list[dict], dict]] = field(default_factory=list)


def read(entries) -> list[Rated]:
    """The records of an export (a parsed JSON list); unusable ones come back with `skipped`."""
    if not isinstance(entries, list):
        raise ValueError("an Open WebUI feedback export is a JSON list of feedback records")
    return [_read(e) for e in entries]


def _read(entry) -> Rated:
    if not isinstance(entry, dict):
        return Rated("", "", [], 0, "", utcnow(), skipped="not a feedback record")
    data, meta = entry.get("data") or {}, entry.get("meta") or {}
    source = SOURCE + str(entry.get("id", ""))
    when = _time(entry.get("created_at"))
    rating = data.get("rating")
    rated = Rated(source, "", [], rating if rating in (1, -1) else 0,
                  "\n".join(str(t) for t in (data.get("reason"), data.get("comment")) if t),
                  when)
    if entry.get("type", "rating") != "rating" or rated.rating == 0:
        rated.skipped = "not a +1/-1 rating"
        return rated
    chat = ((entry.get("snapshot") or {}).get("chat") or {})
    rated.title = str(chat.get("title") or (chat.get("chat") or {}).get("title") or "")
    body = chat.get("chat") if isinstance(chat.get("chat"), dict) else chat
    messages = ((body.get("history") or {}).get("messages")) or {}
    if not isinstance(messages, dict) or not messages:
        rated.skipped = "no chat snapshot"
        return rated
    rated_id = meta.get("message_id") or (body.get("history") or {}).get("currentId")
    target = messages.get(rated_id)
    if not isinstance(target, dict) or target.get("role") != "assistant":
        rated.skipped = "the rated answer is not in the snapshot"
        return rated
    branch, seen, node = [], set(), target
    while isinstance(node, dict) and node.get("id") not in seen:
        seen.add(node.get("id"))
        branch.append(node)
        node = messages.get(node.get("parentId"))
    rated.branch = [_message(m, data.get("model_id")) for m in reversed(branch)]
    if meta.get("arena"):
        parent = messages.get(target.get("parentId")) or {}
        others = [messages.get(i) for i in parent.get("childrenIds") or ()
                  if i != target.get("id") and isinstance(messages.get(i), dict)]
        if others:
            rated.sibling = _message(others[0], None)
    rated.turns = _turns(rated.branch)
    if not rated.turns:
        rated.skipped = "no question before the answer"
    return rated


def _message(m: dict, model: str | None) -> dict:
    content = m.get("content")
    if isinstance(content, list):  # a list of parts: their text
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return {"role": m.get("role"), "content": str(content or ""),
            "model": m.get("model") or model or "open-webui"}


def _turns(branch: list[dict]) -> list[tuple[list[dict], dict]]:
    """Turns: the user (and system) messages since the last answer, then the answer."""
    out, pending = [], []
    for m in branch:
        block = {"role": m["role"], "content": [{"text": m["content"], "type": "text"}]}
        if m["role"] == "assistant":
            if pending:
                out.append((pending, block))
            pending = []
        elif m["role"] in ("user", "system"):
            pending.append(block)
    return out


def import_ratings(engine: Engine, principal: Principal, entries) -> dict[str, int]:
    """Bring an export's ratings in as the principal's conversations and feedback (the ones
    imported before are skipped). Counts of what was imported and skipped."""
    counts = {"imported": 0, "already": 0, "skipped": 0}
    records = read(entries)
    with engine.connect() as conn:
        already = imported(conn, principal, [r.source for r in records if not r.skipped])
    for rated in records:
        if rated.skipped:
            counts["skipped"] += 1
            continue
        if rated.source in already:
            counts["already"] += 1
            continue
        with begin_write(engine) as conn:
            turn_ids = _write(conn, principal, rated.title, rated.turns, rated.branch[-1],
                              rated.created_at)
            last = turn_ids[-1]
            rows = [dict(kind="rating", turn_id=last, rating=rated.rating,
                         text=rated.reason or None)]
            if rated.sibling is not None:
                other = _write(conn, principal, rated.title, [
                    (rated.turns[-1][0], {"role": "assistant", "content": [
                        {"text": rated.sibling["content"], "type": "text"}]})],
                    rated.sibling, rated.created_at)[-1]
                rows.append(dict(kind="preference", turn_id=last, other_turn_id=other,
                                 preference="a" if rated.rating > 0 else "b"))
            for row in rows:
                conn.execute(insert(feedback).values(
                    id=new_id("fb"), owner_id=principal.user_id, source=rated.source,
                    created_at=rated.created_at, **row))
        counts["imported"] += 1
    return counts


def _write(conn, principal: Principal, title: str, turns: list[tuple[list[dict], dict]],
           answer: dict, when: datetime) -> list[str]:
    conversation = new_id("conv")
    conn.execute(insert(conversations).values(
        id=conversation, owner_id=principal.user_id, title=(title or "Open WebUI chat")[:200],
        created_at=when, updated_at=when))
    records, before = [], []
    for messages, completion in turns:
        turn = new_id("turn")
        before = [*before, *messages, completion]
        records.append(TurnRecord(
            id=turn, conversation_id=conversation, owner_id=principal.user_id,
            request_id="req_" + turn.removeprefix("turn_"), model=answer["model"],
            messages=messages, completion=[completion], state_hash=state_hash(before),
            routed="open-webui", trace=json.dumps({"reason": "imported from Open WebUI"}),
            created_at=when))
    write_turns(conn, records)
    return [r.id for r in records]


def _time(value) -> datetime:
    if isinstance(value, (int, float)) and value > 0:
        seconds = value / 1000 if value > 1e11 else value  # seconds, or milliseconds
        return datetime.fromtimestamp(seconds, UTC)
    return utcnow()
