"""Opening the state database: `open_store()` gives a `Store` with its tables up to date.

The store is where tenshu keeps durable state (API keys, the audit log, the sentinel's
calibrated thresholds; later users, conversations, feedback). SQLite at $TENSHU_HOME/state.db
by default; any SQLAlchemy URL (postgresql://...) to scale out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Engine

from tenshu.config import state_db_path
from tenshu.store.audit import AuditLog, AuditWriter
from tenshu.store.keys import KeyStore
from tenshu.store.migrations import MIGRATIONS, Migration, migrate
from tenshu.store.sql import create_engine_for
from tenshu.store.thresholds import ThresholdStore


class Store:
    """One database: its engine, the API keys in it, its audit log (read here, written through
    an audit writer) and the sentinel's thresholds."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.keys = KeyStore(engine)
        self.audit = AuditLog(engine)
        self.thresholds = ThresholdStore(engine)

    def audit_writer(self, **options) -> AuditWriter:
        """A writer for the audit log (options: max_queue, batch_size, interval)."""
        return AuditWriter(self.engine, self.keys, **options)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_store(path_or_url: str | Path | None = None, *,
               migrations: Sequence[Migration] = MIGRATIONS) -> Store:
    """The store at a SQLite path or a database URL (default: $TENSHU_HOME/state.db), with
    the pending migrations applied."""
    engine = create_engine_for(path_or_url if path_or_url is not None else state_db_path())
    try:
        migrate(engine, migrations)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)
