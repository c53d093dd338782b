"""The state database: users and their keys, conversations, feedback, the audit log, and the
migrations that shape them.

    from tenshu.store import open_store
    store = open_store()                      # tenshu.toml's [store] url, or state.db, migrated
    store.users.add("ana", password="...")    # a member; role="admin" for an admin
    record, key = store.keys.create("laptop", user="ana")
    store.keys.verify(key)                    # -> record, or None once revoked
    writer = store.writer(); await writer.start(); writer.record(...); await writer.close()
    store.conversations.list(principal)       # the principal's own, newest first
    store.audit.find("chatcmpl-...")          # one request's record, by any id a client saw
    store.thresholds.set("code", 0.42, "share 0.30", samples=250)
"""

from tenshu.store.audit import AuditLog, AuditRecord, RouteStats, Spend
from tenshu.store.conversations import Conversation, ConversationStore, Turn, TurnRecord
from tenshu.store.database import Store, open_store
from tenshu.store.feedback import Feedback, FeedbackStore
from tenshu.store.keys import CacheMiss, KeyRecord, KeyStore
from tenshu.store.migrations import MIGRATIONS, applied_migrations, migrate
from tenshu.store.people import Principal, User, UserStore
from tenshu.store.sql import create_engine_for
from tenshu.store.thresholds import ThresholdStore
from tenshu.store.writer import RecordWriter

__all__ = [
    "MIGRATIONS",
    "AuditLog",
    "AuditRecord",
    "CacheMiss",
    "Conversation",
    "ConversationStore",
    "Feedback",
    "FeedbackStore",
    "KeyRecord",
    "KeyStore",
    "Principal",
    "RecordWriter",
    "RouteStats",
    "Spend",
    "Store",
    "ThresholdStore",
    "Turn",
    "TurnRecord",
    "User",
    "UserStore",
    "applied_migrations",
    "create_engine_for",
    "migrate",
    "open_store",
]
