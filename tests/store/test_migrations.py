"""Opening the state database applies each migration once, in order, and only the new ones."""

from __future__ import annotations

import sqlite3

import pytest

import tenshu.store
from tenshu.store import MIGRATIONS, applied_migrations, create_engine_for, migrate, open_store
from tenshu.store.keys import hash_key


def recorded(path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT name, applied_at FROM _migrations ORDER BY applied_at").fetchall()


def tables(path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_public_names():
    assert sorted(tenshu.store.__all__) == sorted([
        "MIGRATIONS", "AuditLog", "AuditRecord", "CacheMiss", "Conversation",
        "ConversationStore", "Feedback", "FeedbackStore", "KeyRecord", "KeyStore", "Principal",
        "RecordWriter", "RouteStats", "Spend", "Store", "ThresholdStore", "Turn", "TurnRecord",
        "User", "UserStore", "applied_migrations", "create_engine_for", "migrate", "open_store",
    ])


def test_a_fresh_database_gets_every_migration_in_order(tmp_path):
    path = tmp_path / "deep" / "dir" / "state.db"  # parents are created
    with open_store(path) as store:
        assert applied_migrations(store.engine) == [m.__name__ for m in MIGRATIONS]
    assert [name for name, _ in recorded(path)] == ["m001_keys", "m002_audit", "m003_routing",
                                                    "m004_people", "m005_memory", "m006_web",
                                                    "m007_adapters", "m008_jobs",
                                                        "m009_agents", "m010_responses",
                                                    "m011_context", "m012_job_energy"]
    assert {"_migrations", "keys", "audit", "sentinel_thresholds", "users", "conversations",
            "turns", "feedback", "admin_reads", "collections", "collection_shares",
            "memory_indexes", "documents", "chunks", "chunk_vectors", "turn_sources",
            "chunks_fts", "jobs", "job_runs", "responses", "context_events", "context_cursors",
            "context_deliveries", "inbox"} <= tables(path)


def test_reopening_applies_nothing(tmp_path):
    path = tmp_path / "state.db"
    open_store(path).close()
    before = recorded(path)
    engine = create_engine_for(path)
    assert migrate(engine) == []
    engine.dispose()
    open_store(path).close()
    assert recorded(path) == before  # same names, same applied_at


def test_an_older_database_gets_only_the_new_migrations(tmp_path):
    path = tmp_path / "state.db"
    open_store(path, migrations=MIGRATIONS[:1]).close()
    assert [name for name, _ in recorded(path)] == ["m001_keys"]
    assert "audit" not in tables(path)
    first = recorded(path)[0]

    engine = create_engine_for(path)
    assert migrate(engine) == ["m002_audit", "m003_routing", "m004_people", "m005_memory",
                               "m006_web", "m007_adapters", "m008_jobs",
                                                        "m009_agents", "m010_responses",
                               "m011_context", "m012_job_energy"]
    engine.dispose()
    assert recorded(path)[0] == first
    assert [name for name, _ in recorded(path)] == ["m001_keys", "m002_audit", "m003_routing",
                                                    "m004_people", "m005_memory", "m006_web",
                                                    "m007_adapters", "m008_jobs",
                                                        "m009_agents", "m010_responses",
                                                    "m011_context", "m012_job_energy"]
    assert "audit" in tables(path)


def test_a_failed_migration_leaves_nothing_behind(tmp_path):
    def m999_broken(conn):
        conn.exec_driver_sql("CREATE TABLE half_done (id INTEGER)")
        raise RuntimeError("boom")

    path = tmp_path / "state.db"
    with pytest.raises(RuntimeError, match="boom"):
        open_store(path, migrations=[*MIGRATIONS, m999_broken])
    assert "half_done" not in tables(path)  # its transaction was rolled back, DDL included
    assert [name for name, _ in recorded(path)] == [m.__name__ for m in MIGRATIONS]


def test_a_database_from_a_newer_tenshu_is_a_clear_error(tmp_path):
    path = tmp_path / "state.db"
    open_store(path).close()
    with pytest.raises(ValueError, match="newer tenshu.*m002_audit"):
        open_store(path, migrations=MIGRATIONS[:1])


def test_routing_upgrades_a_database_and_keeps_its_rows(tmp_path):
    """m003_routing and m004_people on a database that tenshu with m001 and m002 has been
    using: nothing is lost, and the old key is the owner's."""
    path = tmp_path / "state.db"
    open_store(path, migrations=MIGRATIONS[:2]).close()
    key = "tsk-" + "k" * 40
    with sqlite3.connect(path) as db:  # rows as the older tenshu wrote them
        db.execute("INSERT INTO keys (name, prefix, key_hash, created_at) "
                   "VALUES ('laptop', ?, ?, '2025-01-02 03:04:05.000000')",
                   (key[:12], hash_key(key)))
        db.execute("INSERT INTO audit (ts, request_id, key_id, protocol, route, model, status, "
                   "input_tokens, output_tokens, ttft_ms, duration_ms) VALUES "
                   "('2025-01-02 03:05:00.000000', 'req_old', 1, 'openai', "
                   "'/v1/chat/completions', 'tenshu-tiny', 200, 12, 34, 5.5, 60.0)")

    with open_store(path) as store:
        assert "m003_routing" in applied_migrations(store.engine)
        (laptop,) = store.keys.list()
        assert (laptop.name, laptop.private, laptop.active) == ("laptop", False, True)
        assert store.keys.verify(key) == laptop  # an old key still opens the door
        # m004_people: the keys that were there become the first admin's
        assert (laptop.user_name, laptop.user_role, laptop.record) == ("owner", "admin", None)
        assert [u.name for u in store.users.list()] == ["owner"]
        (old,) = store.audit.recent()
        assert (old.request_id, old.model, old.input_tokens, old.output_tokens) == \
            ("req_old", "tenshu-tiny", 12, 34)
        assert (old.routed, old.tier, old.backend, old.score, old.trace) == (None,) * 5
        assert (old.fallbacks, old.cost_usd) == (0, 0.0)
        # new rows and keys take the new columns
        notes, _ = store.keys.create("notes", private=True)
        assert [k.private for k in store.keys.list()] == [False, True] and notes.private
        store.thresholds.set("code", 0.4, "share 0.30", 40)
        assert store.thresholds.all() == {"code": 0.4}


def test_sqlite_runs_in_wal_mode(tmp_path):
    path = tmp_path / "state.db"
    open_store(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
