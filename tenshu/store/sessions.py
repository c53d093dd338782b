"""Browser sessions of the web UI: made at login, checked on each request, revoked at logout or
by an admin.

A session's token (43 URL-safe characters, 256 bits) lives only in the browser's HttpOnly
cookie; the database keeps its sha256, so a copy of the database opens no session. Each session
has its own CSRF token, which the pages send back with every change (web/login.py). A session
lasts `IDLE` without use and `LIFETIME` at most; `verify` is on every request a browser makes,
so what it found is remembered for `CACHE_TTL` seconds: a revocation from another process takes
effect within that, one from this process (logout, the admin page) at once.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, Integer, String, column, delete, insert, select, table, update

from tenshu.store.people import Principal, users
from tenshu.store.sql import UTCDateTime, begin_write, utcnow

IDLE = timedelta(days=7)
LIFETIME = timedelta(days=30)
CACHE_TTL = 2.0
_TOUCH_EVERY = timedelta(minutes=5)  # last_seen_at is written at most this often per session

sessions = table(
    "web_sessions", column("id", String), column("token_hash", String),
    column("user_id", Integer), column("csrf", String), column("via", String),
    column("address", String), column("user_agent", String),
    column("created_at", UTCDateTime()), column("last_seen_at", UTCDateTime()),
    column("expires_at", UTCDateTime()), column("revoked_at", UTCDateTime()),
)


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user_id: int
    user_name: str
    role: str
    record: str
    csrf: str
    via: str
    address: str | None
    user_agent: str | None
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime

    def principal(self) -> Principal:
        return Principal(self.user_id, self.user_name, self.role, self.record)

    def to_json(self) -> dict:
        return {"object": "session", "id": self.id, "user": self.user_name, "via": self.via,
                "address": self.address, "user_agent": self.user_agent,
                "created_at": self.created_at.isoformat(),
                "last_seen_at": self.last_seen_at.isoformat(),
                "expires_at": self.expires_at.isoformat()}


_COLUMNS = (sessions.c.id, sessions.c.user_id, users.c.name, users.c.role, users.c.record,
            sessions.c.csrf, sessions.c.via, sessions.c.address, sessions.c.user_agent,
            sessions.c.created_at, sessions.c.last_seen_at, sessions.c.expires_at)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Sessions in one database. Database I/O (a cache hit in `verify` aside): not for the event
    loop."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._cache: dict[str, tuple[Session | None, float]] = {}  # token hash -> (found, until)
        self._lock = threading.Lock()

    def create(self, user_id: int, via: str, *, address: str | None = None,
               user_agent: str | None = None) -> tuple[Session, str]:
        """A new session for the user; returns it and the token for the cookie (shown once)."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        values = dict(id="ses_" + secrets.token_hex(10), token_hash=_hash(token),
                      user_id=user_id, csrf=secrets.token_urlsafe(32), via=via,
                      address=(address or "")[:64] or None,
                      user_agent=(user_agent or "")[:300] or None, created_at=now,
                      last_seen_at=now, expires_at=now + LIFETIME)
        with begin_write(self._engine) as conn:
            conn.execute(insert(sessions).values(**values))
            session = self._read(conn, sessions.c.id == values["id"])
        return session, token

    def verify(self, token: str, *, cached_only: bool = False) -> Session | None:
        """The live session of this cookie token, or None (unknown, revoked, expired, its user
        gone). With `cached_only`, raises store.CacheMiss where the answer needs the database."""
        from tenshu.store.keys import CacheMiss

        digest = _hash(token)
        now = time.monotonic()
        with self._lock:
            found, until = self._cache.get(digest, (None, 0.0))
        if until > now:
            return found
        if cached_only:
            raise CacheMiss("session")
        with self._engine.connect() as conn:
            found = self._read(conn, sessions.c.token_hash == digest)
        wall = utcnow()
        if found is not None and (found.expires_at <= wall or found.last_seen_at + IDLE <= wall):
            found = None
        if found is not None and wall - found.last_seen_at > _TOUCH_EVERY:
            with begin_write(self._engine) as conn:
                conn.execute(update(sessions).where(sessions.c.id == found.id)
                             .values(last_seen_at=wall))
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (found, now + CACHE_TTL)
        return found

    def list(self, principal: Principal, *, everyone: bool = False) -> list[Session]:
        """The principal's live sessions (an admin with `everyone`: all users'), newest first."""
        where = [sessions.c.revoked_at.is_(None), sessions.c.expires_at > utcnow()]
        if not (everyone and principal.admin):
            where.append(sessions.c.user_id == principal.user_id)
        with self._engine.connect() as conn:
            rows = conn.execute(select(*_COLUMNS).join(users, users.c.id == sessions.c.user_id)
                                .where(*where).order_by(sessions.c.created_at.desc()))
            return [Session(*row) for row in rows]

    def revoke(self, principal: Principal, session_id: str) -> bool:
        """End a session: the principal's own, or any one for an admin. False when there is no
        such live session the principal may end (another user's answers as a missing one)."""
        where = [sessions.c.id == session_id, sessions.c.revoked_at.is_(None)]
        if not principal.admin:
            where.append(sessions.c.user_id == principal.user_id)
        with begin_write(self._engine) as conn:
            done = conn.execute(update(sessions).where(*where)
                                .values(revoked_at=utcnow())).rowcount
        self.forget()
        return bool(done)

    def revoke_user(self, user_id: int) -> int:
        """End every session of a user (a new password, a removed user)."""
        with begin_write(self._engine) as conn:
            done = conn.execute(update(sessions).where(
                sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())).rowcount
        self.forget()
        return done

    def prune(self) -> int:
        """Delete sessions that ended more than a day ago."""
        old = utcnow() - timedelta(days=1)
        with begin_write(self._engine) as conn:
            return conn.execute(delete(sessions).where(
                (sessions.c.expires_at < old) | (sessions.c.revoked_at < old))).rowcount

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()

    @staticmethod
    def _read(conn, where) -> Session | None:
        row = conn.execute(select(*_COLUMNS).join(users, users.c.id == sessions.c.user_id)
                           .where(where, sessions.c.revoked_at.is_(None))).first()
        return Session(*row) if row else None
