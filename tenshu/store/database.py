"""Opening the state database: `open_store()` gives a `Store` with its tables up to date.

The store is where tenshu keeps durable state: users and their API keys, conversations and
their turns, feedback, the audit log, the sentinel's calibrated thresholds. SQLite at
$TENSHU_HOME/state.db by default; PostgreSQL (`[store] url = "postgresql://..."` in
tenshu.toml) to scale out, through the same migrations.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Engine

from tenshu.config import store_location
from tenshu.store.audit import AuditLog
from tenshu.store.collections import CollectionStore
from tenshu.store.context import ContextStore
from tenshu.store.conversations import ConversationStore
from tenshu.store.feedback import FeedbackStore
from tenshu.store.jobs import JobStore
from tenshu.store.keys import KeyStore
from tenshu.store.migrations import MIGRATIONS, Migration, migrate
from tenshu.store.people import UserStore
from tenshu.store.responses import ResponseStore
from tenshu.store.runs import RunStore
from tenshu.store.sessions import SessionStore
from tenshu.store.sql import create_engine_for
from tenshu.store.stats import Stats
from tenshu.store.thresholds import ThresholdStore
from tenshu.store.writer import RecordWriter


class Store:
    """One database: its engine, its users and their keys, conversations and feedback, memory
    collections and their documents, browser sessions, the audit log (read here; audit records
    and turns are written through a record writer), the sentinel's thresholds, and the job
    scheduler's jobs and runs, agent runs, the Responses API's stored responses, and the context
    engine's events, deliveries and the people's inbox."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.keys = KeyStore(engine)
        self.sessions = SessionStore(engine)
        self.users = UserStore(engine, changed=self._changed)
        self.conversations = ConversationStore(engine)
        self.feedback = FeedbackStore(engine)
        self.collections = CollectionStore(engine)
        self.audit = AuditLog(engine)
        self.stats = Stats(engine)  # the dashboards' reads of the audit log, owner-scoped
        self.thresholds = ThresholdStore(engine)
        self.jobs = JobStore(engine)
        self.runs = RunStore(engine)  # agent runs, their steps, MCP servers' pinned tools
        self.responses = ResponseStore(engine)  # stored responses of /v1/responses
        self.context = ContextStore(engine)  # events, cursors, deliveries, the inbox

    def _changed(self) -> None:
        """A user changed (a role, a password, removed): what the keys and sessions cached
        about them goes."""
        self.keys.forget()
        self.sessions.forget()

    def writer(self, **options) -> RecordWriter:
        """A writer of audit records and turns (options: max_queue, batch_size, interval,
        journal)."""
        return RecordWriter(self.engine, **options)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_store(path_or_url: str | Path | None = None, *,
               migrations: Sequence[Migration] = MIGRATIONS) -> Store:
    """The store at a SQLite path or a database URL (default: tenshu.toml's [store] url, else
    $TENSHU_HOME/state.db), with the pending migrations applied."""
    engine = create_engine_for(path_or_url if path_or_url is not None else store_location())
    try:
        migrate(engine, migrations)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)
