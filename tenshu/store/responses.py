"""Stored responses of OpenAI's Responses API (`store: true` on POST /v1/responses).

Each row is one response object as it was answered and the conversation the model saw for it
(its input items, in Responses item form: the previous response's items and output, then the
new input), so that `previous_response_id` can continue it and `GET .../input_items` can list
it. A response belongs to the user who asked for it; every read and write takes the principal
and filters by owner in SQL, so another user's response answers exactly as a missing one.
Database I/O: not for the event loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, Integer, String, Text, and_, column, delete, insert, select, table

from tenshu.store.people import Principal
from tenshu.store.sql import UTCDateTime, begin_write, utcnow

# The columns read and written here; their types are in migrations.py (m010_responses).
responses = table(
    "responses", column("id", String), column("owner_id", Integer), column("model", String),
    column("created_at", UTCDateTime()), column("response", Text), column("input_items", Text),
    column("previous_response_id", String),
)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    owner_id: int
    model: str
    created_at: datetime
    response: dict  # the response object, as answered
    input_items: list[dict]  # the conversation the model saw, oldest first
    previous_response_id: str | None = None


class ResponseStore:
    """The stored responses in one database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def save(self, principal: Principal, response: dict, input_items: list[dict]) -> None:
        """Keep a finished response (its object has its id, model and previous_response_id)
        and the items it answered, as the principal's."""
        with begin_write(self._engine) as conn:
            conn.execute(insert(responses).values(
                id=response["id"], owner_id=principal.user_id, model=response["model"],
                created_at=utcnow(), response=json.dumps(response, ensure_ascii=False),
                input_items=json.dumps(input_items, ensure_ascii=False),
                previous_response_id=response.get("previous_response_id")))

    def get(self, principal: Principal, response_id: str) -> StoredResponse | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(
                responses.c.id, responses.c.owner_id, responses.c.model,
                responses.c.created_at, responses.c.response, responses.c.input_items,
                responses.c.previous_response_id).where(_theirs(principal, response_id))).first()
        if row is None:
            return None
        return StoredResponse(row.id, row.owner_id, row.model, row.created_at,
                              json.loads(row.response), json.loads(row.input_items),
                              row.previous_response_id)

    def input_items(self, principal: Principal, response_id: str) -> list[dict] | None:
        """The items a response answered, oldest first; None if it is not the principal's."""
        with self._engine.connect() as conn:
            text = conn.execute(select(responses.c.input_items)
                                .where(_theirs(principal, response_id))).scalar()
        return None if text is None else json.loads(text)

    def delete(self, principal: Principal, response_id: str) -> bool:
        with begin_write(self._engine) as conn:
            return conn.execute(delete(responses).where(
                _theirs(principal, response_id))).rowcount == 1


def _theirs(principal: Principal, response_id: str):
    return and_(responses.c.id == response_id, responses.c.owner_id == principal.user_id)


def delete_user_responses(conn, owner_id: int) -> int:
    """A removed user's stored responses (inside the removal's transaction)."""
    return conn.execute(delete(responses).where(responses.c.owner_id == owner_id)).rowcount
