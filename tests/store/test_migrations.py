"""Opening the state database applies each migration once, in order, and only the new ones."""

from __future__ import annotations

import sqlite3

import pytest

import tenshu.store
from tenshu.store import MIGRATIONS, applied_migrations, create_engine_for, migrate, open_store


def recorded(path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT name, applied_at FROM _migrations ORDER BY applied_at").fetchall()


def tables(path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_public_names():
    assert sorted(tenshu.store.__all__) == sorted([
        "MIGRATIONS", "AuditRecord", "AuditWriter", "KeyRecord", "KeyStore", "Store",
        "applied_migrations", "create_engine_for", "migrate", "open_store",
    ])


def test_a_fresh_database_gets_every_migration_in_order(tmp_path):
    path = tmp_path / "deep" / "dir" / "state.db"  # parents are created
    with open_store(path) as store:
        assert applied_migrations(store.engine) == [m.__name__ for m in MIGRATIONS]
    assert [name for name, _ in recorded(path)] == ["m001_keys", "m002_audit"]
    assert {"_migrations", "keys", "audit"} <= tables(path)


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
    assert migrate(engine) == ["m002_audit"]
    engine.dispose()
    assert recorded(path)[0] == first
    assert [name for name, _ in recorded(path)] == ["m001_keys", "m002_audit"]
    assert "audit" in tables(path)


def test_a_failed_migration_leaves_nothing_behind(tmp_path):
    def m003_broken(conn):
        conn.exec_driver_sql("CREATE TABLE half_done (id INTEGER)")
        raise RuntimeError("boom")

    path = tmp_path / "state.db"
    with pytest.raises(RuntimeError, match="boom"):
        open_store(path, migrations=[*MIGRATIONS, m003_broken])
    assert "half_done" not in tables(path)  # its transaction was rolled back, DDL included
    assert [name for name, _ in recorded(path)] == ["m001_keys", "m002_audit"]


def test_a_database_from_a_newer_tenshu_is_a_clear_error(tmp_path):
    path = tmp_path / "state.db"
    open_store(path).close()
    with pytest.raises(ValueError, match="newer tenshu.*m002_audit"):
        open_store(path, migrations=MIGRATIONS[:1])


def test_sqlite_runs_in_wal_mode(tmp_path):
    path = tmp_path / "state.db"
    open_store(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
