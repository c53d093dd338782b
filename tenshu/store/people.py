"""Users, and whose record a request may reach.

A `Principal` is who a request acts for: the user its key belongs to, or, for a key-less request
on loopback, the local owner (the first admin, made by migration m004). Admins manage users and
keys and may read any user's record; members reach only their own.

`owner_of` is the one place that decides whose record a request reaches, and every store
function that reads or writes a person's data goes through it and filters on owner_id in the
same query: the principal's own record, or, for an admin who names a user, that user's, with the
access written to admin_reads in the same transaction. A member naming another user is refused
as if the user did not exist.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    column,
    delete,
    func,
    insert,
    select,
    table,
    update,
)
from sqlalchemy.exc import IntegrityError

from tenshu.core.errors import NotFoundError, PermissionDeniedError
from tenshu.store.keys import CacheMiss
from tenshu.store.keys import keys as key_table
from tenshu.store.sql import UTCDateTime, begin_write, utcnow

ROLES = ("admin", "member")
# When a user's conversations are recorded: only when the client asks (x-tenshu-conversation),
# every chat request, or never.
RECORDING = ("request", "always", "never")
OWNER = "owner"  # the first admin's name, made by m004_people
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MAX_CACHE_TTL = 1.0

users = table(
    "users", column("id", Integer), column("name", String), column("role", String),
    column("password_hash", String), column("record", String),
    column("created_at", UTCDateTime()),
)
# The web UI's sessions (store/sessions.py owns the table): a user's end with them.
web_sessions = table("web_sessions", column("user_id", Integer),
                     column("revoked_at", UTCDateTime()))
admin_reads = table(
    "admin_reads", column("id", Integer), column("ts", UTCDateTime()),
    column("admin_id", Integer), column("user_id", Integer), column("action", String),
    column("resource", String),
)
_USER = (users.c.id, users.c.name, users.c.role, users.c.record, users.c.created_at,
         users.c.password_hash.is_not(None))
_hasher = PasswordHasher()


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: str
    record: str  # one of RECORDING
    created_at: datetime
    has_password: bool

    @property
    def admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for. `record` is the recording setting in force (the key's, else the
    user's)."""

    user_id: int
    name: str
    role: str
    record: str = "request"
    key_id: int | None = None

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    @classmethod
    def of(cls, user: User, key_id: int | None = None, record: str | None = None) -> Principal:
        return cls(user.id, user.name, user.role, record or user.record, key_id)


def owner_of(conn: Connection, principal: Principal, user: str | None, action: str,
             resource: str) -> int:
    """The owner_id a request may reach: the principal's own, or, for an admin naming `user`,
    that user's (the access is logged). A member naming anyone but themselves, or an admin
    naming nobody that exists, is refused as a missing resource (404)."""
    if user is None or user == principal.name:
        return principal.user_id
    if not principal.admin:
        raise NotFoundError(f"no user named {user!r}")
    found = conn.execute(select(users.c.id).where(users.c.name == user)).scalar()
    if found is None:
        raise NotFoundError(f"no user named {user!r}")
    conn.execute(insert(admin_reads).values(ts=utcnow(), admin_id=principal.user_id,
                                            user_id=found, action=action, resource=resource))
    return found


@contextmanager
def access(engine: Engine, principal: Principal, user: str | None, action: str,
           resource: str) -> Iterator[tuple[Connection, int]]:
    """A connection and the owner_id to filter on (owner_of). The principal's own record is
    read in a read transaction; an admin's access to another user's is a write one, since it
    is logged."""
    if user is None or user == principal.name:
        with engine.connect() as conn:
            yield conn, principal.user_id
        return
    with begin_write(engine) as conn:
        yield conn, owner_of(conn, principal, user, action, resource)


class UserStore:
    """The users in one database. Database I/O: not for the event loop, except `owner`
    (cached)."""

    def __init__(self, engine: Engine, *, cache_ttl: float = MAX_CACHE_TTL,
                 changed: Callable[[], None] | None = None) -> None:
        self._engine = engine
        self._cache_ttl = cache_ttl
        self._owner: tuple[User | None, float] = (None, 0.0)
        self._changed = changed or (lambda: None)  # the key store forgets what it cached

    def _forget(self) -> None:
        self._owner = (None, 0.0)
        self._changed()

    def add(self, name: str, *, role: str = "member", password: str | None = None,
            record: str = "request") -> User:
        name = check_name(name)
        _check_choice("role", role, ROLES)
        _check_choice("record", record, RECORDING)
        values = dict(name=name, role=role, record=record, created_at=utcnow(),
                      password_hash=hash_password(password) if password else None)
        try:
            with begin_write(self._engine) as conn:
                user_id = conn.execute(insert(users).values(**values)
                                       .returning(users.c.id)).scalar()
        except IntegrityError:
            raise ValueError(f"a user is already named {name!r}") from None
        return User(user_id, name, role, record, values["created_at"], bool(password))

    def get(self, name: str) -> User | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(*_USER).where(users.c.name == name)).first()
        return User(*row) if row else None

    def by_id(self, user_id: int) -> User | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(*_USER).where(users.c.id == user_id)).first()
        return User(*row) if row else None

    def list(self) -> list[User]:
        with self._engine.connect() as conn:
            return [User(*row) for row in conn.execute(select(*_USER).order_by(users.c.id))]

    def owner(self, *, cached_only: bool = False) -> User:
        """The local owner: the first admin (whom key-less loopback requests act for)."""
        user, expiry = self._owner
        now = time.monotonic()
        if user is not None and expiry > now:
            return user
        if cached_only:
            raise CacheMiss("owner")
        with self._engine.connect() as conn:
            row = conn.execute(select(*_USER).where(users.c.role == "admin")
                               .order_by(users.c.id).limit(1)).first()
        if row is None:
            raise NotFoundError("no admin user: make one with `tenshu users add NAME --admin`")
        user = User(*row)
        self._owner = (user, now + self._cache_ttl)
        return user

    def update(self, name: str, *, role: str | None = None, record: str | None = None,
               password: str | None = None) -> User:
        """Change a user's role, recording setting or password."""
        values = {}
        if role is not None:
            values["role"] = _check_choice("role", role, ROLES)
        if record is not None:
            values["record"] = _check_choice("record", record, RECORDING)
        if password is not None:
            values["password_hash"] = hash_password(password)
        with begin_write(self._engine) as conn:
            user = conn.execute(select(*_USER).where(users.c.name == name)).first()
            if user is None:
                raise NotFoundError(f"no user named {name!r}")
            if values.get("role") == "member" and user.role == "admin":
                _keep_an_admin(conn, user.id)
            if values:
                conn.execute(update(users).where(users.c.id == user.id).values(**values))
            if password is not None:  # a new password ends the sessions the old one opened
                conn.execute(update(web_sessions).where(
                    web_sessions.c.user_id == user.id, web_sessions.c.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))
            row = conn.execute(select(*_USER).where(users.c.id == user.id)).first()
        self._forget()
        return User(*row)

    def check_password(self, name: str, password: str) -> User | None:
        """The user, if `password` is theirs. Takes the same time for an unknown name."""
        with self._engine.connect() as conn:
            row = conn.execute(select(*_USER, users.c.password_hash)
                               .where(users.c.name == name)).first()
        stored = row[-1] if row is not None and row[-1] else None
        try:  # an unknown name is checked against a dummy hash, so it takes as long
            _hasher.verify(stored or _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        return User(*row[:-1]) if stored else None

    def remove(self, name: str) -> dict[str, int]:
        """Remove a user and everything that is theirs: keys, conversations (with what was
        derived from them), feedback, memory collections, agent runs, stored responses, trigger
        deliveries and inbox. Returns how many of each were removed."""
        from tenshu.store.collections import delete_user_collections
        from tenshu.store.context import delete_user_context
        from tenshu.store.conversations import delete_conversations
        from tenshu.store.responses import delete_user_responses
        from tenshu.store.runs import delete_user_runs

        with begin_write(self._engine) as conn:
            user = conn.execute(select(users.c.id, users.c.role)
                                .where(users.c.name == name)).first()
            if user is None:
                raise NotFoundError(f"no user named {name!r}")
            if user.role == "admin":
                _keep_an_admin(conn, user.id)
            removed = delete_conversations(conn, user.id, None)
            removed["collections"] = delete_user_collections(conn, user.id)
            removed["runs"] = delete_user_runs(conn, user.id)
            removed["responses"] = delete_user_responses(conn, user.id)
            removed |= delete_user_context(conn, user.id)
            removed["keys"] = conn.execute(
                delete(key_table).where(key_table.c.user_id == user.id)).rowcount
            conn.execute(delete(web_sessions).where(web_sessions.c.user_id == user.id))
            conn.execute(delete(users).where(users.c.id == user.id))
        self._forget()
        return removed

    def usage(self, name: str) -> dict[str, int]:
        """How much is the user's (what `remove` would remove)."""
        from tenshu.store.collections import collections
        from tenshu.store.conversations import conversations, turns
        from tenshu.store.feedback import feedback
        from tenshu.store.responses import responses
        from tenshu.store.runs import agent_runs

        with self._engine.connect() as conn:
            user_id = conn.execute(select(users.c.id).where(users.c.name == name)).scalar()
            if user_id is None:
                raise NotFoundError(f"no user named {name!r}")
            return {what: conn.execute(select(func.count()).select_from(t).where(owner == user_id)
                                       ).scalar()
                    for what, t, owner in (("keys", key_table, key_table.c.user_id),
                                           ("conversations", conversations,
                                            conversations.c.owner_id),
                                           ("turns", turns, turns.c.owner_id),
                                           ("feedback", feedback, feedback.c.owner_id),
                                           ("collections", collections,
                                            collections.c.owner_id),
                                           ("runs", agent_runs, agent_runs.c.owner_id),
                                           ("responses", responses,
                                            responses.c.owner_id))}

    def admin_reads(self, limit: int = 100) -> list[dict]:
        """The latest admin accesses to other users' records, newest first."""
        admin, owner = users.alias("admin"), users.alias("owner")
        stmt = (select(admin_reads.c.ts, admin.c.name.label("admin"),
                       owner.c.name.label("user"), admin_reads.c.action,
                       admin_reads.c.resource)
                .join(admin, admin.c.id == admin_reads.c.admin_id)
                .join(owner, owner.c.id == admin_reads.c.user_id, isouter=True)
                .order_by(admin_reads.c.ts.desc(), admin_reads.c.id.desc()).limit(limit))
        with self._engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]


def hash_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    if len(password) > 1024:
        raise ValueError("a password may have at most 1024 characters")
    return _hasher.hash(password)


def _unmatched_hash(hasher: PasswordHasher) -> str:
    """A hash in `hasher`'s format and parameters, with a zero salt and digest, that no password
    is known to match: checking one against it costs what checking against a real hash does. An
    unknown name's password is checked against it. (Hashing a dummy password instead took a
    fifth of a second of every server's start.)"""
    def b64(n: int) -> str:
        return base64.b64encode(bytes(n)).decode().rstrip("=")

    return (f"$argon2{hasher.type.name.lower()}$v=19$m={hasher.memory_cost},"
            f"t={hasher.time_cost},p={hasher.parallelism}${b64(hasher.salt_len)}"
            f"${b64(hasher.hash_len)}")


_DUMMY_HASH = _unmatched_hash(_hasher)


def check_name(name: str) -> str:
    name = name.strip() if isinstance(name, str) else ""
    if not _NAME.fullmatch(name):
        raise ValueError(f"a user name is 1-64 letters, digits, '.', '_', '@' or '-', starting "
                         f"with a letter or digit, not {name[:70]!r}")
    return name


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _keep_an_admin(conn: Connection, leaving: int) -> None:
    others = conn.execute(select(func.count()).select_from(users).where(
        users.c.role == "admin", users.c.id != leaving)).scalar()
    if not others:
        raise PermissionDeniedError("this is the last admin: make another admin first")
