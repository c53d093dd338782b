"""The arena's votes: preference feedback between two answers, with who gave each answer.

A vote is a feedback row of kind `preference` (store/feedback.py): `turn_id` is answer A,
`other_turn_id` answer B, `preference` one of a, b, tie, both_bad. Joined with the two turns, it
says which contender gave each answer: `turns.model`, the name the client asked for (a model or
a route such as `auto`), since that is what a person chooses between; `turns.backend` (the
model that served a route) is not the contender.

Every preference counts, whether it was cast in the arena or between two answers in a chat:
both are a person's judgement of two answers to one prompt. learn/leaderboard.py turns the
votes into ratings.

Ownership is in the query: a member's votes are the feedback rows they own, on turns they own.
Only an admin may read everyone's (aggregated into a board of model names and counts, nobody's
words, so the read is not logged in admin_reads).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select

from tenshu.core.errors import PermissionDeniedError
from tenshu.store.conversations import turns
from tenshu.store.feedback import feedback
from tenshu.store.people import Principal


@dataclass(frozen=True, slots=True)
class Vote:
    a: str  # the name asked for in answer A's request
    b: str
    preference: str  # a | b | tie | both_bad


def votes(engine: Engine, principal: Principal, *, everyone: bool = False) -> list[Vote]:
    """The principal's arena votes, oldest first; every user's when `everyone` (admins only:
    PermissionDeniedError otherwise)."""
    if everyone and not principal.admin:
        raise PermissionDeniedError("only an admin may see everyone's arena votes")
    ta, tb = turns.alias("answer_a"), turns.alias("answer_b")
    stmt = (select(ta.c.model, tb.c.model, feedback.c.preference)
            .select_from(feedback
                         .join(ta, (ta.c.id == feedback.c.turn_id)
                               & (ta.c.owner_id == feedback.c.owner_id))
                         .join(tb, (tb.c.id == feedback.c.other_turn_id)
                               & (tb.c.owner_id == feedback.c.owner_id)))
            .where(feedback.c.kind == "preference", feedback.c.preference.is_not(None))
            .order_by(feedback.c.created_at, feedback.c.id))
    if not everyone:
        stmt = stmt.where(feedback.c.owner_id == principal.user_id)
    with engine.connect() as conn:
        return [Vote(*row) for row in conn.execute(stmt)]
