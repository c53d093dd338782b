"""The audit / usage log: one row per request, written in batches off the request path.

The gateway calls `AuditWriter.record(...)` on the event loop for every request; it only
appends to an in-memory queue. A flusher writes what is queued in one transaction per batch, at
most `interval` seconds after a record arrives or as soon as `batch_size` are waiting, and sets
keys.last_used_at in the same transaction.

The flusher is an asyncio task rather than a thread: every record is made on the event loop, so
a task on the same loop shares the queue without locks, can be woken by an asyncio.Event when a
batch fills, and lives exactly as long as the server (`await start()` at startup, `await
close()` at shutdown). Only the database work leaves the loop, through asyncio.to_thread, so
the loop never waits on SQLite. The queue is bounded: when it is full, a record is dropped and
counted in `dropped`; a request is never slowed down to keep its log row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field, fields
from datetime import datetime

from sqlalchemy import Engine, Float, Integer, String, column, insert, select, table

from tenshu.store.keys import KeyStore
from tenshu.store.sql import UTCDateTime, begin_write, utcnow

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AuditRecord:
    """One request, as the log keeps it. `id` is None until the row is written."""

    request_id: str
    protocol: str  # "openai", "anthropic", "ollama"
    route: str  # e.g. "/v1/chat/completions"
    model: str = ""
    status: int = 200
    input_tokens: int = 0
    output_tokens: int = 0
    ttft_ms: float | None = None  # None when no token was sent (an error, an empty response)
    duration_ms: float = 0.0
    key_id: int | None = None  # None when the request came without an API key
    error_kind: str | None = None  # the core error's kind, when the request failed
    ts: datetime = field(default_factory=utcnow)
    id: int | None = None


_COLUMNS = [f.name for f in fields(AuditRecord)]
_TYPES = {"id": Integer, "ts": UTCDateTime(), "key_id": Integer, "status": Integer,
          "input_tokens": Integer, "output_tokens": Integer, "ttft_ms": Float,
          "duration_ms": Float}
# The columns this module reads and writes; their types and indexes are in migrations.py.
audit = table("audit", *(column(name, _TYPES.get(name, String)) for name in _COLUMNS))
_WRITTEN = [name for name in _COLUMNS if name != "id"]


class AuditWriter:
    """Queues audit records and writes them in batches. Counters: `written` rows, `batches`
    committed, `dropped` (queue full, or recorded after close), `failed` (a batch the database
    refused; logged)."""

    def __init__(self, engine: Engine, keys: KeyStore, *, max_queue: int = 10_000,
                 batch_size: int = 256, interval: float = 0.5) -> None:
        if max_queue < 1 or batch_size < 1 or interval <= 0:
            raise ValueError("max_queue and batch_size must be >= 1, interval > 0")
        self._engine = engine
        self._keys = keys
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.interval = interval
        self.written = self.batches = self.dropped = self.failed = 0
        self._queue: deque[AuditRecord] = deque()
        self._pending = asyncio.Event()  # the queue has something in it
        self._full = asyncio.Event()  # a whole batch is waiting
        self._task: asyncio.Task | None = None
        self._closing = False

    def record(self, **fields) -> None:
        """Queue one request's record (AuditRecord's fields). Never blocks, never does I/O."""
        if self._closing or len(self._queue) >= self.max_queue:
            self.dropped += 1
            return
        self._queue.append(AuditRecord(**fields))
        self._pending.set()
        if len(self._queue) >= self.batch_size:
            self._full.set()

    def queued(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        """Start the flusher on the running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tenshu-audit-writer")

    async def close(self) -> None:
        """Write everything still queued, then stop. Records made after this are dropped."""
        self._closing = True
        self._pending.set()
        self._full.set()
        if self._task is not None:
            await self._task
        else:
            await self._flush()

    async def _run(self) -> None:
        while True:
            await self._pending.wait()
            if not self._closing:
                # Give the batch `interval` seconds to fill, unless it fills first.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.interval)
            self._pending.clear()
            self._full.clear()
            await self._flush()
            if self._closing:
                return

    async def _flush(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.batch_size))]
            try:
                await asyncio.to_thread(self._write, batch)
            except Exception:
                self.failed += len(batch)
                log.exception("could not write %d audit records", len(batch))
            else:
                self.written += len(batch)
                self.batches += 1

    def _write(self, batch: list[AuditRecord]) -> None:
        last_used: dict[int, datetime] = {}
        for r in batch:
            if r.key_id is not None and (r.key_id not in last_used or last_used[r.key_id] < r.ts):
                last_used[r.key_id] = r.ts
        rows = [{name: getattr(r, name) for name in _WRITTEN} for r in batch]
        with begin_write(self._engine) as conn:
            conn.execute(insert(audit), rows)
            self._keys.touch_many(last_used.items(), conn=conn)

    def query_recent(self, limit: int = 50) -> list[AuditRecord]:
        """The latest `limit` rows in the database, newest first (queued records are not
        there yet). Does database I/O: not for the event loop."""
        order = (audit.c.ts.desc(), audit.c.id.desc())
        with self._engine.connect() as conn:
            rows = conn.execute(select(audit).order_by(*order).limit(limit)).mappings()
            return [AuditRecord(**row) for row in rows]
