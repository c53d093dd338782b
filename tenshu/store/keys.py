"""API keys: create, list, revoke, and verify the key on each request.

A key is `tsk-` + 40 random URL-safe characters (240 bits), shown once when it is made. The
database keeps its sha256 and a 12-character display prefix, never the key itself. `verify` is
on the request path: it hashes the key and looks the hash up (so comparing keys takes no
secret-dependent time) in a snapshot of the active keys, read whole from the database at most
once a second. So `tenshu keys revoke` run from another process takes effect on a running
server within a second, and a wrong key costs what a right one does: no database read (one
per request, in the thread pool, made guessing a cheap way to load the server). It never
writes; the audit writer records when a key was last used (`touch_many`), in its own batches.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Integer,
    String,
    bindparam,
    column,
    insert,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.exc import IntegrityError

from tenshu.core.errors import NotFoundError
from tenshu.store.sql import UTCDateTime, begin_write, utcnow

KEY_PREFIX = "tsk-"
KEY_LENGTH = len(KEY_PREFIX) + 40
DISPLAY_PREFIX_LENGTH = 12  # "tsk-" and 8 random characters: enough to tell keys apart
MAX_NAME_LENGTH = 64
MAX_CACHE_TTL = 1.0  # seconds a revoked key may still pass verify on a running server

# The columns this module reads and writes; their types and indexes are in migrations.py.
keys = table(
    "keys",
    column("id", Integer), column("name", String), column("prefix", String),
    column("key_hash", String), column("created_at", UTCDateTime()),
    column("revoked_at", UTCDateTime()), column("last_used_at", UTCDateTime()),
    column("private", Boolean), column("user_id", Integer), column("record", String),
    column("memory", String),
)
# The user a key belongs to (m004_people); people.py owns the table, this reads three columns.
_users = table("users", column("id", Integer), column("name", String), column("role", String),
               column("record", String))
_RECORD = (keys.c.id, keys.c.name, keys.c.prefix, keys.c.created_at, keys.c.revoked_at,
           keys.c.last_used_at, keys.c.private, keys.c.user_id, keys.c.record,
           _users.c.name, _users.c.role, _users.c.record, keys.c.memory)
_JOINED = keys.outerjoin(_users, _users.c.id == keys.c.user_id)


class CacheMiss(LookupError):
    """The answer needs the database, and the caller asked for the cache only (`cached_only`):
    the event loop answers from the cache and sends only the misses to a thread."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: int
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    private: bool  # its requests never leave the machine
    user_id: int | None = None  # whose key it is
    record: str | None = None  # its conversation-recording setting; None: the user's
    user_name: str | None = None
    user_role: str | None = None
    user_record: str | None = None
    memory: str | None = None  # collections its chat requests retrieve from, comma-separated

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """The API keys in one database. Thread-safe: the engine pools connections, and the
    snapshot of active keys is replaced whole, never changed in place."""

    def __init__(self, engine: Engine, *, cache_ttl: float = MAX_CACHE_TTL) -> None:
        if not 0 <= cache_ttl <= MAX_CACHE_TTL:
            raise ValueError(f"cache_ttl must be between 0 and {MAX_CACHE_TTL} s, not {cache_ttl}")
        self._engine = engine
        self._cache_ttl = cache_ttl
        # the active keys by hash, and until when (monotonic) that may be believed
        self._active: tuple[dict[str, KeyRecord], float] = ({}, 0.0)

    def forget(self) -> None:
        """Read the keys (and their users) again on the next check: a user changed here."""
        self._active = ({}, 0.0)

    def any_active(self, *, cached_only: bool = False) -> bool:
        """Whether at least one key is active (then the server requires keys). With
        `cached_only`, raises CacheMiss rather than read the database."""
        return bool(self._snapshot(cached_only))

    def _snapshot(self, cached_only: bool) -> dict[str, KeyRecord]:
        """The active keys by hash: at most cache_ttl old, and renewed at once after a create or
        revoke in this process."""
        active, expiry = self._active
        now = time.monotonic()
        if expiry > now:
            return active
        if cached_only:
            raise CacheMiss("keys")
        with self._engine.connect() as conn:
            rows = conn.execute(select(keys.c.key_hash, *_RECORD).select_from(_JOINED)
                                .where(keys.c.revoked_at.is_(None)))
            active = {row[0]: KeyRecord(*row[1:]) for row in rows}
        if self._cache_ttl > 0:
            self._active = (active, now + self._cache_ttl)
        return active

    def create(self, name: str, *, user: str | None = None, private: bool = False,
               record: str | None = None,
               memory: tuple[str, ...] = ()) -> tuple[KeyRecord, str]:
        """A new key named `name` for `user` (default: the local owner, the first admin): its
        record, and the key itself, which is not kept. A private key's requests are never sent
        off the machine; `record` overrides the user's conversation-recording setting; `memory`
        names the collections its chat requests retrieve from."""
        name = _check_name(name)
        if record is not None and record not in ("request", "always", "never"):
            raise ValueError(f"record must be request, always or never, not {record!r}")
        key = KEY_PREFIX + secrets.token_urlsafe(30)  # 30 bytes -> 40 characters
        values = dict(name=name, prefix=key[:DISPLAY_PREFIX_LENGTH], key_hash=hash_key(key),
                      created_at=utcnow(), private=bool(private), record=record,
                      memory=",".join(memory) or None)
        try:
            with begin_write(self._engine) as conn:
                owner = select(_users.c.id).where(_users.c.name == user) if user is not None \
                    else select(_users.c.id).where(_users.c.role == "admin").order_by(
                        _users.c.id).limit(1)
                values["user_id"] = conn.execute(owner).scalar()
                if values["user_id"] is None:
                    raise ValueError(f"no user named {user!r} (`tenshu users list` shows them)"
                                     if user is not None else "there is no admin user")
                key_id = conn.execute(insert(keys).values(**values).returning(keys.c.id)).scalar()
                row = conn.execute(select(*_RECORD).select_from(_JOINED)
                                   .where(keys.c.id == key_id)).first()
        except IntegrityError:
            raise ValueError(
                f"an active key is already named {name!r}: revoke it first "
                f"(`tenshu keys revoke {name}`) or choose another name"
            ) from None
        self._active = ({}, 0.0)  # read again on the next check
        return KeyRecord(*row), key

    def list(self, user: str | None = None) -> list[KeyRecord]:
        """Every key (of `user`, if named), revoked ones too, oldest first."""
        stmt = select(*_RECORD).select_from(_JOINED).order_by(keys.c.created_at, keys.c.id)
        if user is not None:
            stmt = stmt.where(_users.c.name == user)
        with self._engine.connect() as conn:
            return [KeyRecord(*row) for row in conn.execute(stmt)]

    def revoke(self, name_or_prefix: str) -> KeyRecord:
        """Revoke the active key with this name or display prefix; return it, revoked."""
        target = name_or_prefix.strip()
        matches = or_(keys.c.name == target, keys.c.prefix == target)
        with begin_write(self._engine) as conn:
            found = [KeyRecord(*row) for row in conn.execute(
                select(*_RECORD).select_from(_JOINED).where(matches))]
            active = [record for record in found if record.active]
            if not found:
                raise NotFoundError(f"no API key is named or prefixed {target!r} "
                                    "(`tenshu keys list` shows them)")
            if not active:
                when = max(record.revoked_at for record in found)
                raise ValueError(f"the key {target!r} is already revoked (since "
                                 f"{when.astimezone():%Y-%m-%d %H:%M})")
            if len(active) > 1:
                names = ", ".join(f"{r.name} ({r.prefix})" for r in active)
                raise ValueError(f"{target!r} matches more than one active key: {names}; "
                                 "revoke by prefix")
            record = active[0]
            revoked_at = utcnow()
            conn.execute(update(keys).where(keys.c.id == record.id).values(revoked_at=revoked_at))
        self._active = ({}, 0.0)  # in this process, at once; elsewhere, within cache_ttl
        return replace(record, revoked_at=revoked_at)

    def verify(self, key: str, *, cached_only: bool = False) -> KeyRecord | None:
        """The record of an active key, or None for anything else. Never writes. With
        `cached_only`, raises CacheMiss rather than read the database."""
        if not isinstance(key, str) or len(key) != KEY_LENGTH or not key.startswith(KEY_PREFIX):
            return None
        return self._snapshot(cached_only).get(hash_key(key))

    def touch_many(self, uses: Iterable[tuple[int, datetime]]) -> None:
        """Set last_used_at for (key id, time) pairs; a time never moves backwards."""
        with begin_write(self._engine) as conn:
            touch_keys(uses, conn)


def touch_keys(uses: Iterable[tuple[int, datetime]], conn: Connection) -> None:
    """KeyStore.touch_many inside a transaction of the caller's (the record writer's batch)."""
    params = [{"key_id": key_id, "used_at": used_at} for key_id, used_at in uses]
    if not params:
        return
    used_at = bindparam("used_at", type_=UTCDateTime())
    stmt = (
        update(keys)
        .where(keys.c.id == bindparam("key_id"))
        .where(or_(keys.c.last_used_at.is_(None), keys.c.last_used_at < used_at))
        .values(last_used_at=used_at)
    )
    conn.execute(stmt, params)


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise ValueError("a key needs a name (--name), e.g. the client or person using it")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"a key name has at most {MAX_NAME_LENGTH} characters, "
                         f"not {len(name)}")
    if name.startswith(KEY_PREFIX):
        raise ValueError(f"a key name cannot start with {KEY_PREFIX!r}: "
                         "that is how key prefixes start")
    return name
