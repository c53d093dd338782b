"""The record writer: audit records and conversation turns, written in batches off the request
path.

The gateway hands it one audit record per request, with the conversation turn it answered when
the request was recorded (`record`), on the event loop. Each goes first to the write-ahead journal (store/journal.py: one
write to the operating system), then to an in-memory queue. A flusher writes what is queued in
one transaction per batch, at most `interval` seconds after a record arrives or as soon as
`batch_size` are waiting. A process killed before a flush loses no record of an answered
request: the next start writes what the journal holds and the database does not.

The flusher is an asyncio task rather than a thread: every record is made on the event loop, so
a task on the same loop shares the queue without locks, can be woken by an asyncio.Event when a
batch fills, and lives exactly as long as the server (`await start()` at startup, `await
close()` at shutdown). Only the database work leaves the loop, through asyncio.to_thread, so
the loop never waits on the database. The queue is bounded: when it is full, a record is
dropped and counted in `dropped`; a request is never slowed down to keep its log row.

`settle()` lets a reader see what was queued before it (a conversation continued, or listed,
right after its last turn was answered): it flushes now and waits for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import fields
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from tenshu.store.audit import WRITTEN, AuditLog, AuditRecord, known_requests, write_audit
from tenshu.store.conversations import TurnRecord, known_turns, write_turns
from tenshu.store.journal import Journal
from tenshu.store.sql import begin_write

log = logging.getLogger(__name__)


class RecordWriter:
    """Queues records and writes them in batches. Counters: `written` records, `batches`
    committed, `dropped` (queue full, or recorded after close), `failed` (in a batch the
    database refused; logged, and kept in the journal for the next start)."""

    def __init__(self, engine: Engine, *, max_queue: int = 10_000, batch_size: int = 1024,
                 interval: float = 0.5, journal: Path | None = None) -> None:
        if max_queue < 1 or batch_size < 1 or interval <= 0:
            raise ValueError("max_queue and batch_size must be >= 1, interval > 0")
        self._engine = engine
        self.journal = Journal(journal) if journal is not None else None
        self.recovered = 0  # records a killed process left in the journal, written at start
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.interval = interval
        self.written = self.batches = self.dropped = self.failed = 0
        self._queue: deque[AuditRecord | TurnRecord] = deque()
        self._pending = asyncio.Event()  # the queue has something in it
        self._full = asyncio.Event()  # a whole batch is waiting
        self._progress = asyncio.Event()  # a flush finished
        self._queued_total = 0  # records accepted so far
        self._done_total = 0  # of which written or failed
        self._task: asyncio.Task | None = None
        self._closing = False

    def record(self, *, turn: TurnRecord | None = None, **fields) -> None:
        """Queue one request's audit record (AuditRecord's fields) and, if the request was a
        recorded conversation's, its turn. Never blocks, never does I/O beyond one append to
        the journal."""
        records: list[AuditRecord | TurnRecord] = [AuditRecord(**fields)]
        if turn is not None:
            records.append(turn)
        self._add(records)

    def _add(self, records: list[AuditRecord | TurnRecord]) -> None:
        if self._closing or len(self._queue) + len(records) > self.max_queue:
            self.dropped += len(records)
            return
        if self.journal is not None:
            self.journal.append(*map(_journal_line, records))
        self._queue.extend(records)
        self._queued_total += len(records)
        self._pending.set()
        if len(self._queue) >= self.batch_size:
            self._full.set()

    def queued(self) -> int:
        return len(self._queue)

    async def settle(self) -> None:
        """Return once everything queued before this call is written (or has failed)."""
        target = self._queued_total
        if self._done_total >= target:
            return
        if self._task is None:
            await self._flush()
            return
        self._full.set()  # flush now, without waiting for the interval
        while self._done_total < target and not self._task.done():
            self._progress.clear()
            await self._progress.wait()

    async def start(self) -> None:
        """Write what an earlier process left in the journal, then start the flusher on the
        running event loop."""
        if self.journal is not None and self._task is None:
            self.recovered = await asyncio.to_thread(self._recover)
            self.journal.open()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tenshu-record-writer")

    async def close(self) -> None:
        """Write everything still queued, then stop. Records made after this are dropped."""
        self._closing = True
        self._pending.set()
        self._full.set()
        if self._task is not None:
            await self._task
        else:
            await self._flush()
        if self.journal is not None:
            self.journal.close()

    def query_recent(self, limit: int = 50) -> list[AuditRecord]:
        """AuditLog.recent: the latest audit rows written (queued records are not there yet)."""
        return AuditLog(self._engine).recent(limit)

    async def _run(self) -> None:
        while True:
            await self._pending.wait()
            if not self._closing and not self._full.is_set():
                # Give the batch `interval` seconds to fill, unless it fills (or a reader asks)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.interval)
            self._pending.clear()
            self._full.clear()
            await self._flush()
            if self._closing and not self._queue:
                return

    async def _flush(self) -> None:
        # What is queued now is exactly what the journal holds since the last rotation; this
        # flush writes that and no more, so the file set aside is deleted only once all its
        # records are written (what arrives meanwhile is in the new file, for the next flush).
        aside = self.journal.rotate() if self.journal is not None else None
        ok, left = True, len(self._queue)
        while left:
            batch = [self._queue.popleft() for _ in range(min(left, self.batch_size))]
            left -= len(batch)
            try:
                await asyncio.to_thread(self._write, batch)
            except Exception:
                ok = False
                self.failed += len(batch)
                log.exception("could not write %d records", len(batch))
            else:
                self.written += len(batch)
                self.batches += 1
            self._done_total += len(batch)
        self._progress.set()
        if aside is not None:
            if ok:
                aside.unlink(missing_ok=True)
            else:
                log.error("the records are kept in %s; the next start writes them", aside)

    def _write(self, batch: list[AuditRecord | TurnRecord]) -> None:
        with begin_write(self._engine) as conn:
            write_audit(conn, [r for r in batch if isinstance(r, AuditRecord)])
            write_turns(conn, [r for r in batch if isinstance(r, TurnRecord)])

    def _recover(self) -> int:
        """Write the journal's records that the database does not have (an audit record is
        known by its request id, a turn by its id); remove the journal's files. Returns how
        many were written."""
        files = self.journal.leftovers()
        records = [_from_json(line) for f in files for line in Journal.read(f)]
        records = [r for r in records if r is not None]
        if records:
            with self._engine.connect() as conn:
                seen = known_requests(conn, [r.request_id for r in records
                                             if isinstance(r, AuditRecord)])
                seen |= known_turns(conn, [r.id for r in records if isinstance(r, TurnRecord)])
            records = [r for r in records if
                       (r.request_id if isinstance(r, AuditRecord) else r.id) not in seen]
            for i in range(0, len(records), self.batch_size):
                self._write(records[i:i + self.batch_size])
        for f in files:
            f.unlink(missing_ok=True)
        if records:
            log.warning("wrote %d records that a stopped process had not written yet",
                        len(records))
        return len(records)


def _journal_line(record: AuditRecord | TurnRecord) -> dict:
    """A record as one journal line: which kind it is, apart from its fields (a field may be
    named anything, "kind" included: a turn has its conversation's kind)."""
    if isinstance(record, TurnRecord):
        return {"record": "turn", "fields": record.__dict__}
    return {"record": "audit", "fields": {name: getattr(record, name) for name in WRITTEN}}


def _from_json(data: dict) -> AuditRecord | TurnRecord | None:
    """A journal line as the record it was (None for one this version cannot read). Lines of
    earlier versions held the fields at the top level: a turn is the one with a conversation."""
    if "fields" in data:
        kind, data = data.get("record"), data["fields"]
    else:  # "kind" there was the record's kind, or (by mistake) a turn's conversation's
        kind = "turn" if "conversation_id" in data else "audit"
        if data.get("kind") in ("turn", "audit"):
            data = {k: v for k, v in data.items() if k != "kind"}
    cls = {"audit": AuditRecord, "turn": TurnRecord}.get(kind)
    if cls is None or not isinstance(data, dict):
        return None
    known = {f.name for f in fields(cls)}
    data = {k: v for k, v in data.items() if k in known}
    for name in ("ts", "created_at"):
        if isinstance(data.get(name), str):
            data[name] = datetime.fromisoformat(data[name])
    try:
        return cls(**data)
    except TypeError:
        return None
