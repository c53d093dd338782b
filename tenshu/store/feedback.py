"""Feedback: what a person thought of an answer, tied to the turn it judges.

    rating       +1 or -1, with an optional reason
    correction   the answer as it should have been
    preference   two answers to the same prompt: a, b, tie or both_bad
    comment      words about the answer

A turn carries its request id, model, route and trace, so a judgement reaches all of them. Every
read and write takes the principal and filters on owner_id in the query (people.owner_of):
feedback on a turn that is not the caller's is refused as if the turn did not exist, and nothing
is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    Text,
    column,
    insert,
    literal,
    or_,
    select,
    table,
)

from tenshu.core.errors import InvalidRequestError, NotFoundError
from tenshu.store.conversations import TURN_COLUMNS, history, new_id, turn_from_row, turns
from tenshu.store.people import Principal, access
from tenshu.store.sql import UTCDateTime, begin_write, page_after, utcnow

KINDS = ("rating", "correction", "preference", "comment")
PREFERENCES = ("a", "b", "tie", "both_bad")
MAX_TEXT = {"rating": 2_000, "comment": 4_000, "correction": 65_536, "preference": 2_000}

feedback = table(
    "feedback", column("id", String), column("owner_id", Integer), column("kind", String),
    column("turn_id", String), column("other_turn_id", String), column("rating", Integer),
    column("preference", String), column("text", Text), column("source", String),
    column("created_at", UTCDateTime()),
)
_ROW = (feedback.c.id, feedback.c.kind, feedback.c.turn_id, feedback.c.other_turn_id,
        feedback.c.rating, feedback.c.preference, feedback.c.text, feedback.c.source,
        feedback.c.created_at)


@dataclass(frozen=True, slots=True)
class Feedback:
    id: str
    kind: str
    turn_id: str
    other_turn_id: str | None
    rating: int | None
    preference: str | None
    text: str | None
    source: str | None
    created_at: datetime

    def to_json(self) -> dict:
        return {"id": self.id, "object": "feedback", "kind": self.kind, "turn_id": self.turn_id,
                "other_turn_id": self.other_turn_id, "rating": self.rating,
                "preference": self.preference, "text": self.text, "source": self.source,
                "created_at": self.created_at.isoformat()}


def check(kind: str, *, rating: int | None = None, text: str | None = None,
          other_turn_id: str | None = None, preference: str | None = None) -> None:
    """Refuse a judgement that does not make sense (400, naming the field): a rating of 7, a
    correction without its text, a preference without a second answer."""
    if kind not in KINDS:
        raise InvalidRequestError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}",
                                  field="kind")
    if kind == "rating" and (isinstance(rating, bool) or rating not in (1, -1)):
        raise InvalidRequestError(f"rating must be 1 or -1, not {rating!r}", field="rating")
    if kind != "rating" and rating is not None:
        raise InvalidRequestError("rating belongs to kind rating", field="rating")
    if kind in ("correction", "comment") and not (text or "").strip():
        raise InvalidRequestError(f"a {kind} needs its text", field="text")
    if text is not None and len(text) > MAX_TEXT[kind]:
        raise InvalidRequestError(f"the text of a {kind} may have at most {MAX_TEXT[kind]:,} "
                                  f"characters, not {len(text):,}", field="text")
    if kind == "preference":
        if preference not in PREFERENCES:
            raise InvalidRequestError(f"preference must be one of {', '.join(PREFERENCES)}, "
                                      f"not {preference!r}", field="preference")
        if not other_turn_id:
            raise InvalidRequestError("a preference needs other_turn_id: the second answer",
                                      field="other_turn_id")
    elif other_turn_id is not None or preference is not None:
        raise InvalidRequestError("other_turn_id and preference belong to kind preference",
                                  field="other_turn_id" if other_turn_id else "preference")


class FeedbackStore:
    """The feedback in one database. Database I/O: not for the event loop."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, principal: Principal, kind: str, turn_id: str, *, rating: int | None = None,
            text: str | None = None, other_turn_id: str | None = None,
            preference: str | None = None, source: str | None = None) -> Feedback:
        """Record a judgement of the principal's turn `turn_id` (NotFoundError when it is not
        theirs, or not at all)."""
        check(kind, rating=rating, text=text, other_turn_id=other_turn_id,
              preference=preference)
        item = Feedback(new_id("fb"), kind, turn_id, other_turn_id, rating, preference,
                        text, source, utcnow())
        with begin_write(self._engine) as conn:
            mine = select(turns.c.messages).where(turns.c.owner_id == principal.user_id)
            prompt = conn.execute(mine.where(turns.c.id == turn_id)).scalar()
            if prompt is None:
                raise NotFoundError(f"no turn {turn_id!r}")
            if other_turn_id is not None:
                other = conn.execute(mine.where(turns.c.id == other_turn_id)).scalar()
                if other is None:
                    raise NotFoundError(f"no turn {other_turn_id!r}")
                if other_turn_id == turn_id:
                    raise InvalidRequestError("a preference is between two different answers",
                                              field="other_turn_id")
                if json.loads(other) != json.loads(prompt):
                    raise InvalidRequestError("the two answers are to different prompts",
                                              field="other_turn_id")
            # the owner check is in the INSERT itself: no row without the principal's turn
            written = conn.execute(insert(feedback).from_select(
                [c.name for c in (feedback.c.id, feedback.c.owner_id, feedback.c.kind,
                                  feedback.c.turn_id, feedback.c.other_turn_id,
                                  feedback.c.rating, feedback.c.preference, feedback.c.text,
                                  feedback.c.source, feedback.c.created_at)],
                select(literal(item.id), literal(principal.user_id), literal(kind),
                       turns.c.id, literal(other_turn_id, String), literal(rating, Integer),
                       literal(preference, String), literal(text, Text),
                       literal(source, String), literal(item.created_at, UTCDateTime()))
                .where(turns.c.id == turn_id, turns.c.owner_id == principal.user_id))
                .returning(feedback.c.id)).first()
            if written is None:
                raise NotFoundError(f"no turn {turn_id!r}")
        return item

    def list(self, principal: Principal, *, user: str | None = None, turn_id: str | None = None,
             conversation_id: str | None = None, limit: int = 50, after: str | None = None
             ) -> tuple[list[Feedback], bool]:
        """The owner's feedback, newest first (on one turn, or the turns of one conversation,
        when asked), a page of `limit` after the item `after`."""
        with access(self._engine, principal, user, "read", "feedback") as (conn, owner):
            stmt = (select(*_ROW).where(feedback.c.owner_id == owner)
                    .order_by(feedback.c.created_at.desc(), feedback.c.id.desc())
                    .limit(limit + 1))
            if turn_id is not None:
                stmt = stmt.where(or_(feedback.c.turn_id == turn_id,
                                      feedback.c.other_turn_id == turn_id))
            if conversation_id is not None:
                stmt = stmt.where(feedback.c.turn_id.in_(select(turns.c.id).where(
                    turns.c.owner_id == owner, turns.c.conversation_id == conversation_id)))
            if after is not None:
                stmt = page_after(conn, stmt, feedback.c.created_at, after, owner)
                if stmt is None:
                    return [], False
            rows = conn.execute(stmt).all()
        return [Feedback(*row) for row in rows[:limit]], len(rows) > limit


def imported(conn: Connection, principal: Principal, sources: list[str]) -> set[str]:
    """Which of these sources (openwebui:<id>) the principal imported already."""
    return {row[0] for start in range(0, len(sources), 500) for row in conn.execute(
        select(feedback.c.source).where(feedback.c.owner_id == principal.user_id,
                                        feedback.c.source.in_(sources[start:start + 500])))}


def export_rows(engine: Engine, principal: Principal, *, user: str | None = None):
    """The owner's feedback, oldest first, each with what it judges: the prompt (the
    conversation up to the turn, and the turn's messages), the answer (and for a preference,
    the other answer). One dict per item, for `tenshu feedback export`."""
    with access(engine, principal, user, "export", "feedback") as (conn, owner):
        items = [Feedback(*row) for row in conn.execute(
            select(*_ROW).where(feedback.c.owner_id == owner)
            .order_by(feedback.c.created_at, feedback.c.id))]
        by_conversation: dict[str, list] = {}

        def context(turn_id: str | None):
            if turn_id is None:
                return None, None
            conv = conn.execute(select(turns.c.conversation_id).where(
                turns.c.id == turn_id, turns.c.owner_id == owner)).scalar()
            if conv is None:
                return None, None
            if conv not in by_conversation:
                by_conversation[conv] = [turn_from_row(r) for r in conn.execute(
                    select(*TURN_COLUMNS).where(turns.c.conversation_id == conv,
                                         turns.c.owner_id == owner).order_by(turns.c.seq))]
            every = by_conversation[conv]
            at = next((i for i, turn in enumerate(every) if turn.id == turn_id), None)
            if at is None:
                return None, None
            return every[at], [*history(every[:at]), *every[at].messages]

        for item in items:
            turn, prompt = context(item.turn_id)
            other, _ = context(item.other_turn_id)
            if turn is None:
                continue
            yield {**item.to_json(), "conversation_id": turn.conversation_id,
                   "model": turn.model, "prompt": prompt,
                   "answer": turn.completion[0] if turn.completion else None,
                   "other_answer": other.completion[0] if other and other.completion else None,
                   "other_model": other.model if other else None,
                   "adapter": turn.adapter, "other_adapter": other.adapter if other else None}
