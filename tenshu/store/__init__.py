"""The state database: API keys, the audit log, and the migrations that shape them.

    from tenshu.store import open_store
    store = open_store()                      # $TENSHU_HOME/state.db, migrated
    record, key = store.keys.create("laptop")
    store.keys.verify(key)                    # -> record, or None once revoked
    writer = store.audit_writer(); await writer.start(); writer.record(...); await writer.close()
"""

from tenshu.store.audit import AuditRecord, AuditWriter
from tenshu.store.database import Store, open_store
from tenshu.store.keys import KeyRecord, KeyStore
from tenshu.store.migrations import MIGRATIONS, applied_migrations, migrate
from tenshu.store.sql import create_engine_for

__all__ = [
    "MIGRATIONS",
    "AuditRecord",
    "AuditWriter",
    "KeyRecord",
    "KeyStore",
    "Store",
    "applied_migrations",
    "create_engine_for",
    "migrate",
    "open_store",
]
