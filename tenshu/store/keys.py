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
    column("private", Boolean),
)
_RECORD = (keys.c.id, keys.c.name, keys.c.prefix, keys.c.created_at, keys.c.revoked_at,
           keys.c.last_used_at, keys.c.private)


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
            rows = conn.execute(select(keys.c.key_hash, *_RECORD)
                                .where(keys.c.revoked_at.is_(None)))
            active = {row[0]: KeyRecord(*row[1:]) for row in rows}
        if self._cache_ttl > 0:
            self._active = (active, now + self._cache_ttl)
        return active

    def create(self, name: str, *, private: bool = False) -> tuple[KeyRecord, str]:
        """A new key named `name`: its record, and the key itself, which is not kept. A
        private key's requests are never sent off the machine."""
        name = _check_name(name)
        key = KEY_PREFIX + secrets.token_urlsafe(30)  # 30 bytes -> 40 characters
        values = dict(name=name, prefix=key[:DISPLAY_PREFIX_LENGTH], key_hash=hash_key(key),
                      created_at=utcnow(), private=bool(private))
        try:
            with begin_write(self._engine) as conn:
                key_id = conn.execute(insert(keys).values(**values).returning(keys.c.id)).scalar()
        except IntegrityError:
            raise ValueError(
                f"an active key is already named {name!r}: revoke it first "
                f"(`tenshu keys revoke {name}`) or choose another name"
            ) from None
        self._active = ({}, 0.0)  # read again on the next check
        record = KeyRecord(id=key_id, name=name, prefix=values["prefix"],
                           created_at=values["created_at"], revoked_at=None, last_used_at=None,
                           private=values["private"])
        return record, key

    def list(self) -> list[KeyRecord]:
        """Every key, revoked ones too, oldest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(*_RECORD).order_by(keys.c.created_at, keys.c.id))
            return [KeyRecord(*row) for row in rows]

    def revoke(self, name_or_prefix: str) -> KeyRecord:
        """Revoke the active key with this name or display prefix; return it, revoked."""
        target = name_or_prefix.strip()
        matches = or_(keys.c.name == target, keys.c.prefix == target)
        with begin_write(self._engine) as conn:
            found = [KeyRecord(*row) for row in conn.execute(select(*_RECORD).where(matches))]
            active = [record for record in found if record.active]
            if not found:
                raise ValueError(f"no API key is named or prefixed {target!r} "
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

    def touch_many(self, uses: Iterable[tuple[int, datetime]], *,
                   conn: Connection | None = None) -> None:
        """Set last_used_at for (key id, time) pairs; a time never moves backwards. Pass `conn`
        to do it inside that transaction (the audit writer's batch)."""
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
        if conn is not None:
            conn.execute(stmt, params)
            return
        with begin_write(self._engine) as conn:
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
