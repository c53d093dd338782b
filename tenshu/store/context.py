"""The context engine's state: the events sources noticed, each source's cursor, each
trigger's deliveries of events as agent runs, and the people's inbox.

An event is stored once per (source, key): a second sighting of the same key is no new event,
which is what makes a restarted source, or one that sees a file twice, harmless. A delivery is
one (event, trigger) pair, also made once; it is claimed atomically before its run starts
(pending -> running, attempts + 1), so two loops, or a loop and a person's retry, never start
the same attempt twice. Deliveries and the inbox belong to a user (the trigger's owner): every
read and change a person makes filters by owner in SQL, so another user's answers as a missing
one. Events and cursors are the server's (the admin's configuration made them).
Database I/O: not for the event loop.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Engine,
    Integer,
    String,
    Text,
    and_,
    column,
    delete,
    exists,
    func,
    insert,
    select,
    table,
    update,
)
from sqlalchemy.exc import IntegrityError

from tenshu.store.people import Principal
from tenshu.store.sql import UTCDateTime, begin_write, utcnow

# The columns read and written here; their types are in migrations.py (m011_context).
events = table(
    "context_events", column("id", Integer), column("source", String),
    column("key_hash", String), column("key", Text), column("kind", String),
    column("payload", Text), column("at", UTCDateTime()),
)
cursors = table(
    "context_cursors", column("source", String), column("state", Text),
    column("updated_at", UTCDateTime()),
)
deliveries = table(
    "context_deliveries", column("event_id", Integer), column("trigger", String),
    column("owner_id", Integer), column("status", String), column("attempts", Integer),
    column("next_at", UTCDateTime()), column("run_id", String), column("error", Text),
    column("updated_at", UTCDateTime()),
)
inbox = table(
    "inbox", column("id", Integer), column("owner_id", Integer), column("title", Text),
    column("body", Text), column("url", Text), column("source", String),
    column("run_id", String), column("created_at", UTCDateTime()),
    column("read_at", UTCDateTime()),
)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    source: str
    key: str
    kind: str
    payload: dict[str, Any]
    at: datetime

    def entry(self) -> dict[str, Any]:
        """What the event is about: an HTTP item's item, any other event's payload."""
        item = self.payload.get("item") if self.kind == "http.item" else self.payload
        return item if isinstance(item, dict) else {}

    def link(self) -> str | None:
        """The page the event points at: a feed entry's link, an HTTP item's link or url (not
        the polled endpoint's url, which an http.changed event carries)."""
        if self.kind == "http.changed":
            return None
        entry = self.entry()
        link = entry.get("link") or entry.get("url")
        return link if isinstance(link, str) and link else None

    def to_json(self) -> dict:
        return {"id": self.id, "source": self.source, "key": self.key, "kind": self.kind,
                "payload": self.payload, "at": self.at.isoformat()}


@dataclass(frozen=True, slots=True)
class Delivery:
    event_id: int
    trigger: str
    owner_id: int
    status: str  # pending | running | succeeded | failed
    attempts: int
    next_at: datetime
    run_id: str | None
    error: str
    updated_at: datetime

    def to_json(self) -> dict:
        return {"event_id": self.event_id, "trigger": self.trigger, "status": self.status,
                "attempts": self.attempts, "next_at": self.next_at.isoformat(),
                "run_id": self.run_id, "error": self.error,
                "updated_at": self.updated_at.isoformat()}


@dataclass(frozen=True, slots=True)
class InboxItem:
    id: int
    owner_id: int
    title: str
    body: str
    url: str | None
    source: str
    run_id: str | None
    created_at: datetime
    read_at: datetime | None

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "body": self.body, "url": self.url,
                "source": self.source, "run_id": self.run_id,
                "created_at": self.created_at.isoformat(),
                "read_at": self.read_at.isoformat() if self.read_at else None}


_DELIVERY = (deliveries.c.event_id, deliveries.c.trigger, deliveries.c.owner_id,
             deliveries.c.status, deliveries.c.attempts, deliveries.c.next_at,
             deliveries.c.run_id, deliveries.c.error, deliveries.c.updated_at)
_INBOX = (inbox.c.id, inbox.c.owner_id, inbox.c.title, inbox.c.body, inbox.c.url,
          inbox.c.source, inbox.c.run_id, inbox.c.created_at, inbox.c.read_at)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ContextStore:
    """The context engine's rows in one database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- events and cursors (the server's) ---------------------------------------------------

    def add_event(self, source: str, key: str, kind: str, payload: dict, at: datetime
                  ) -> int | None:
        """The new event's id; None when the source had already noticed this key."""
        try:
            with begin_write(self._engine) as conn:
                return conn.execute(insert(events).values(
                    source=source, key_hash=key_hash(key), key=key, kind=kind,
                    payload=json.dumps(payload, ensure_ascii=False, default=str), at=at,
                ).returning(events.c.id)).scalar_one()
        except IntegrityError:
            return None

    def event(self, event_id: int) -> StoredEvent | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(events).where(events.c.id == event_id)).first()
        return _event(row) if row is not None else None

    def events(self, source: str | None = None, limit: int = 50) -> list[StoredEvent]:
        """The latest events, newest first."""
        query = select(events).order_by(events.c.id.desc()).limit(limit)
        if source is not None:
            query = query.where(events.c.source == source)
        with self._engine.connect() as conn:
            return [_event(row) for row in conn.execute(query)]

    def compact(self, before: datetime) -> int:
        """Empty the payloads of events noticed before `before` that nothing will read again
        (every delivery of theirs succeeded, or none was made); the rows stay, so that a
        source's key is still known and never an event twice. How many were emptied."""
        open_ = select(deliveries.c.event_id).where(
            deliveries.c.event_id == events.c.id,
            deliveries.c.status.in_(("pending", "running", "failed")))
        with begin_write(self._engine) as conn:
            return conn.execute(update(events).where(
                events.c.at < before, events.c.payload != "{}", ~exists(open_),
            ).values(payload="{}")).rowcount

    def cursor(self, source: str) -> dict:
        with self._engine.connect() as conn:
            state = conn.execute(select(cursors.c.state)
                                 .where(cursors.c.source == source)).scalar()
        return json.loads(state) if state else {}

    def put_cursor(self, source: str, state: dict) -> None:
        text = json.dumps(state, ensure_ascii=False, default=str)
        with begin_write(self._engine) as conn:
            changed = conn.execute(update(cursors).where(cursors.c.source == source)
                                   .values(state=text, updated_at=utcnow())).rowcount
            if not changed:
                conn.execute(insert(cursors).values(source=source, state=text,
                                                    updated_at=utcnow()))

    # -- deliveries (the engine's side) ------------------------------------------------------

    def add_delivery(self, event_id: int, trigger: str, owner_id: int, due: datetime) -> bool:
        """A pending delivery of the event by the trigger (False: there was one already)."""
        try:
            with begin_write(self._engine) as conn:
                conn.execute(insert(deliveries).values(
                    event_id=event_id, trigger=trigger, owner_id=owner_id, status="pending",
                    attempts=0, next_at=due, error="", updated_at=utcnow()))
            return True
        except IntegrityError:
            return False

    def due(self, now: datetime, limit: int = 20) -> list[Delivery]:
        """Pending deliveries whose time has come, the longest waiting first."""
        query = (select(*_DELIVERY).where(and_(deliveries.c.status == "pending",
                                               deliveries.c.next_at <= now))
                 .order_by(deliveries.c.next_at, deliveries.c.event_id).limit(limit))
        with self._engine.connect() as conn:
            return [Delivery(*row) for row in conn.execute(query)]

    def next_due(self) -> datetime | None:
        with self._engine.connect() as conn:
            return conn.execute(select(func.min(deliveries.c.next_at))
                                .where(deliveries.c.status == "pending")).scalar()

    def claim(self, event_id: int, trigger: str) -> int | None:
        """Mark a pending delivery running and count the attempt; its attempt number, or None
        when it was not pending (another claimed it, or a person cancelled it). The last
        attempt's run is forgotten: the new attempt records its own (set_run)."""
        with begin_write(self._engine) as conn:
            claimed = conn.execute(update(deliveries).where(_pair(event_id, trigger),
                                                            deliveries.c.status == "pending")
                                   .values(status="running", updated_at=utcnow(), run_id=None,
                                           attempts=deliveries.c.attempts + 1)).rowcount
            if not claimed:
                return None
            return conn.execute(select(deliveries.c.attempts)
                                .where(_pair(event_id, trigger))).scalar_one()

    def set_run(self, event_id: int, trigger: str, run_id: str) -> None:
        with begin_write(self._engine) as conn:
            conn.execute(update(deliveries).where(_pair(event_id, trigger))
                         .values(run_id=run_id, updated_at=utcnow()))

    def requeue(self, event_id: int, trigger: str, at: datetime) -> None:
        """A running delivery whose attempt never began (the server stopped before its run was
        made): pending again at `at`, that attempt not counted."""
        with begin_write(self._engine) as conn:
            conn.execute(update(deliveries).where(_pair(event_id, trigger),
                                                  deliveries.c.status == "running")
                         .values(status="pending", next_at=at, run_id=None, updated_at=utcnow(),
                                 attempts=deliveries.c.attempts - 1))

    def finish(self, event_id: int, trigger: str, status: str, error: str = "",
               retry_at: datetime | None = None) -> None:
        """End an attempt: succeeded, failed for good, or (status pending) tried again at
        `retry_at`."""
        values = {"status": status, "error": error[:4000], "updated_at": utcnow()}
        if retry_at is not None:
            values["next_at"] = retry_at
        with begin_write(self._engine) as conn:
            conn.execute(update(deliveries).where(_pair(event_id, trigger)).values(**values))

    def running(self) -> list[Delivery]:
        """Deliveries whose attempt was under way when the server stopped."""
        with self._engine.connect() as conn:
            return [Delivery(*row) for row in conn.execute(
                select(*_DELIVERY).where(deliveries.c.status == "running"))]

    # -- deliveries (a person's side: owner-scoped) ------------------------------------------

    def deliveries(self, principal: Principal, status: str | None = None,
                   trigger: str | None = None, limit: int = 50) -> list[Delivery]:
        query = (select(*_DELIVERY).where(deliveries.c.owner_id == principal.user_id)
                 .order_by(deliveries.c.updated_at.desc(), deliveries.c.event_id.desc())
                 .limit(limit))
        if status is not None:
            query = query.where(deliveries.c.status == status)
        if trigger is not None:
            query = query.where(deliveries.c.trigger == trigger)
        with self._engine.connect() as conn:
            return [Delivery(*row) for row in conn.execute(query)]

    def delivery(self, principal: Principal, event_id: int, trigger: str) -> Delivery | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(*_DELIVERY).where(
                _pair(event_id, trigger), deliveries.c.owner_id == principal.user_id)).first()
        return Delivery(*row) if row is not None else None

    def retry(self, principal: Principal, event_id: int, trigger: str, now: datetime) -> bool:
        """Put a delivery that failed for good back in line, its attempts counted afresh."""
        with begin_write(self._engine) as conn:
            return conn.execute(update(deliveries).where(
                _pair(event_id, trigger), deliveries.c.owner_id == principal.user_id,
                deliveries.c.status == "failed",
            ).values(status="pending", attempts=0, next_at=now, error="",
                     updated_at=utcnow())).rowcount == 1

    # -- the inbox ---------------------------------------------------------------------------

    def notify(self, owner_id: int, title: str, body: str = "", url: str | None = None,
               source: str = "", run_id: str | None = None) -> int:
        with begin_write(self._engine) as conn:
            return conn.execute(insert(inbox).values(
                owner_id=owner_id, title=title[:500], body=body, url=url, source=source,
                run_id=run_id, created_at=utcnow()).returning(inbox.c.id)).scalar_one()

    def inbox(self, principal: Principal, unread: bool = False, limit: int = 50
              ) -> list[InboxItem]:
        query = (select(*_INBOX).where(inbox.c.owner_id == principal.user_id)
                 .order_by(inbox.c.id.desc()).limit(limit))
        if unread:
            query = query.where(inbox.c.read_at.is_(None))
        with self._engine.connect() as conn:
            return [InboxItem(*row) for row in conn.execute(query)]

    def unread(self, principal: Principal) -> int:
        with self._engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(inbox).where(
                inbox.c.owner_id == principal.user_id, inbox.c.read_at.is_(None))).scalar()

    def mark_read(self, principal: Principal, item_id: int) -> bool:
        with begin_write(self._engine) as conn:
            return conn.execute(update(inbox).where(_mine(principal, item_id))
                                .values(read_at=func.coalesce(inbox.c.read_at, utcnow()))
                                ).rowcount == 1

    def mark_all_read(self, principal: Principal) -> int:
        with begin_write(self._engine) as conn:
            return conn.execute(update(inbox).where(inbox.c.owner_id == principal.user_id,
                                                    inbox.c.read_at.is_(None))
                                .values(read_at=utcnow())).rowcount

    def remove(self, principal: Principal, item_id: int) -> bool:
        with begin_write(self._engine) as conn:
            return conn.execute(delete(inbox).where(_mine(principal, item_id))).rowcount == 1


def _pair(event_id: int, trigger: str):
    return and_(deliveries.c.event_id == event_id, deliveries.c.trigger == trigger)


def _mine(principal: Principal, item_id: int):
    return and_(inbox.c.id == item_id, inbox.c.owner_id == principal.user_id)


def _event(row) -> StoredEvent:
    return StoredEvent(row.id, row.source, row.key, row.kind, json.loads(row.payload), row.at)


def delete_user_context(conn, owner_id: int) -> dict[str, int]:
    """A removed user's trigger deliveries and notifications (inside the removal's
    transaction), counted."""
    return {
        "deliveries": conn.execute(delete(deliveries)
                                   .where(deliveries.c.owner_id == owner_id)).rowcount,
        "notifications": conn.execute(delete(inbox).where(inbox.c.owner_id == owner_id)).rowcount,
    }
