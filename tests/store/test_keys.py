"""API keys: made once, kept only as a hash, checked on every request, revoked for good."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from tenshu.core.errors import NotFoundError
from tenshu.store import CacheMiss, KeyStore, open_store


@pytest.fixture
def store(database):
    with open_store(database) as store:
        yield store


def test_create_verify_list_revoke(store):
    record, key = store.keys.create("laptop")
    assert key.startswith("tsk-") and len(key) == 44
    assert record.prefix == key[:12] and record.name == "laptop" and record.active
    assert record.created_at.tzinfo is not None and record.last_used_at is None

    assert store.keys.verify(key) == record
    assert store.keys.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.keys.verify("tsk-nope") is None
    assert store.keys.verify("") is None

    other, other_key = store.keys.create("ci")
    assert other_key != key
    assert [r.name for r in store.keys.list()] == ["laptop", "ci"]

    revoked = store.keys.revoke("laptop")
    assert revoked.id == record.id and not revoked.active
    assert store.keys.verify(key) is None  # at once, in the process that revoked it
    assert store.keys.verify(other_key) == other
    assert [(r.name, r.active) for r in store.keys.list()] == [("laptop", False), ("ci", True)]


def test_a_private_key(store):
    record, key = store.keys.create("notes", private=True)
    public, _ = store.keys.create("laptop")
    assert record.private and not public.private
    assert store.keys.verify(key).private  # the server sees it on each request
    assert [(r.name, r.private) for r in store.keys.list()] == [("notes", True),
                                                                ("laptop", False)]
    assert store.keys.revoke("notes").private


def test_revoke_by_prefix(store):
    record, key = store.keys.create("phone")
    assert store.keys.revoke(record.prefix).name == "phone"
    assert store.keys.verify(key) is None


def test_revoke_errors_say_what_is_wrong(store):
    with pytest.raises(NotFoundError, match="no API key is named or prefixed 'ghost'"):
        store.keys.revoke("ghost")
    store.keys.create("ci")
    store.keys.revoke("ci")
    with pytest.raises(ValueError, match="'ci' is already revoked"):
        store.keys.revoke("ci")


def test_the_plaintext_key_is_never_stored(tmp_path):
    path = tmp_path / "state.db"
    with open_store(path) as store:
        _, key = store.keys.create("laptop")
        store.keys.verify(key)
        store.keys.revoke("laptop")
    files = [p for p in tmp_path.iterdir() if p.name.startswith("state.db")]
    assert files
    for file in files:  # the database, and its WAL if one is left
        data = file.read_bytes()
        assert key.encode() not in data
        assert key[12:].encode() not in data  # not even the part after the display prefix


def test_names_are_unique_among_active_keys(store):
    store.keys.create("ci")
    with pytest.raises(ValueError, match="already named 'ci'"):
        store.keys.create("ci")
    store.keys.revoke("ci")
    record, _ = store.keys.create("ci")  # a revoked key's name is free again
    assert record.active


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "tsk-abc"])
def test_bad_names_are_refused(store, name):
    with pytest.raises(ValueError):
        store.keys.create(name)
    assert store.keys.list() == []


def test_a_revoke_from_another_process_takes_effect_within_a_second(tmp_path):
    path = tmp_path / "state.db"
    with open_store(path) as server, open_store(path) as cli:
        record, key = server.keys.create("laptop")
        assert server.keys.verify(key) == record  # now in the server's cache
        cli.keys.revoke("laptop")
        revoked_at = time.monotonic()
        while server.keys.verify(key) is not None:
            assert time.monotonic() - revoked_at < 1.5, "revoked key still accepted"
            time.sleep(0.02)


def test_verify_never_writes(store, tmp_path):
    _, key = store.keys.create("laptop")
    uncached = KeyStore(store.engine, cache_ttl=0)
    with sqlite3.connect(tmp_path / "state.db") as db:
        version = db.execute("PRAGMA data_version").fetchone()[0]
        for _ in range(20):
            assert uncached.verify(key) is not None
            assert uncached.verify("tsk-" + "x" * 40) is None
        # data_version changes when another connection commits a change
        assert db.execute("PRAGMA data_version").fetchone()[0] == version


def test_cached_only_answers_from_the_cache_or_says_it_cannot(store):
    """What the event loop asks: an answer without touching the database, or CacheMiss (then
    a thread asks again)."""
    record, key = store.keys.create("laptop")
    keys = KeyStore(store.engine)
    with pytest.raises(CacheMiss):
        keys.any_active(cached_only=True)
    assert keys.any_active() is True
    assert keys.any_active(cached_only=True) is True
    assert keys.verify(key, cached_only=True) == record  # one snapshot answers both
    with pytest.raises(CacheMiss):
        KeyStore(store.engine).verify(key, cached_only=True)
    assert keys.verify(key) == record
    assert keys.verify(key, cached_only=True) == record
    # a wrong key is answered from the same snapshot: guessing costs no database read
    assert keys.verify("tsk-" + "x" * 40, cached_only=True) is None
    assert keys.verify("not a key", cached_only=True) is None  # refused by its shape alone
    store.keys.revoke("laptop")
    other = KeyStore(store.engine)
    assert other.verify(key) is None and other.verify(key, cached_only=True) is None


def test_verify_from_many_threads(store):
    record, key = store.keys.create("laptop")
    keys = KeyStore(store.engine, cache_ttl=0.01)
    results, errors = [], []

    def check():
        try:
            results.extend(keys.verify(key) for _ in range(50))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=check) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 400 and all(r == record for r in results)


def test_touch_many_sets_last_used_and_never_moves_it_back(store):
    record, _ = store.keys.create("laptop")
    later = record.created_at.replace(year=record.created_at.year + 1)
    store.keys.touch_many([(record.id, later)])
    store.keys.touch_many([(record.id, record.created_at)])
    assert store.keys.list()[0].last_used_at == later
