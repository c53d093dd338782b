"""The state database: API keys, the audit log, and the migrations that shape them.

    from tenshu.store import open_store
    store = open_store()                      # $TENSHU_HOME/state.db, migrated
    record, key = store.keys.create("laptop")
    store.keys.verify(key)                    # -> record, or None once revoked
    writer = store.audit_writer(); await writer.start(); writer.record(...); await writer.close()
    store.audit.find("chatcmpl-...")          # one request's record, by any id a client saw
    store.thresholds.set("code", 0.42, "share 0.30", samples=250)
"""

from tenshu.store.audit import AuditLog, AuditRecord, AuditWriter, RouteStats, Spend
from tenshu.store.database import Store, open_store
from tenshu.store.keys import CacheMiss, KeyRecord, KeyStore
from tenshu.store.migrations import MIGRATIONS, applied_migrations, migrate
from tenshu.store.sql import create_engine_for
from tenshu.store.thresholds import ThresholdStore

__all__ = [
    "MIGRATIONS",
    "AuditLog",
    "AuditRecord",
    "AuditWriter",
    "CacheMiss",
    "KeyRecord",
    "KeyStore",
    "RouteStats",
    "Spend",
    "Store",
    "ThresholdStore",
    "applied_migrations",
    "create_engine_for",
    "migrate",
    "open_store",
]
