"""The audit / usage log: one row per request, written in batches off the request path, and
read back by `tenshu trace`, `tenshu routes` and the budgets the server loads at start.

The gateway calls `AuditWriter.record(...)` on the event loop for every request; it appends
the record to the write-ahead journal (store/journal.py: one write to the operating system)
and to an in-memory queue. A flusher writes what is queued in one transaction per batch, at
most `interval` seconds after a record arrives or as soon as `batch_size` are waiting, and sets
keys.last_used_at in the same transaction. A process killed before a flush loses no record of
an answered request: the next start writes what the journal holds and the log does not.

The flusher is an asyncio task rather than a thread: every record is made on the event loop, so
a task on the same loop shares the queue without locks, can be woken by an asyncio.Event when a
batch fills, and lives exactly as long as the server (`await start()` at startup, `await
close()` at shutdown). Only the database work leaves the loop, through asyncio.to_thread, so
the loop never waits on SQLite. The queue is bounded: when it is full, a record is dropped and
counted in `dropped`; a request is never slowed down to keep its log row.

`AuditLog` holds the reads. They do database I/O and may scan a day or a month of rows, so
they are for the CLI, startup, or asyncio.to_thread, never the event loop itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Engine, Float, Integer, String, column, func, insert, select, table

from tenshu.store.journal import Journal
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
    routed: str | None = None  # the route's name, or the model asked for when it named one
    tier: str | None = None
    backend: str | None = None  # the deployment that answered; None when none did
    fallbacks: int = 0  # candidates that failed before one answered
    cost_usd: float = 0.0
    score: float | None = None  # the sentinel's complexity score, when it was asked
    trace: str | None = None  # Trace.to_json(): the reason, each attempt, why it stayed private
    ts: datetime = field(default_factory=utcnow)
    id: int | None = None


_COLUMNS = [f.name for f in fields(AuditRecord)]
_TYPES = {"id": Integer, "ts": UTCDateTime(), "key_id": Integer, "status": Integer,
          "input_tokens": Integer, "output_tokens": Integer, "ttft_ms": Float,
          "duration_ms": Float, "fallbacks": Integer, "cost_usd": Float, "score": Float}
# The columns this module reads and writes; their types and indexes are in migrations.py.
audit = table("audit", *(column(name, _TYPES.get(name, String)) for name in _COLUMNS))
_WRITTEN = [name for name in _COLUMNS if name != "id"]


class AuditWriter:
    """Queues audit records and writes them in batches. Counters: `written` rows, `batches`
    committed, `dropped` (queue full, or recorded after close), `failed` (a batch the database
    refused; logged)."""

    def __init__(self, engine: Engine, keys: KeyStore, *, max_queue: int = 10_000,
                 batch_size: int = 256, interval: float = 0.5,
                 journal: Path | None = None) -> None:
        if max_queue < 1 or batch_size < 1 or interval <= 0:
            raise ValueError("max_queue and batch_size must be >= 1, interval > 0")
        self._engine = engine
        self._keys = keys
        self.journal = Journal(journal) if journal is not None else None
        self.recovered = 0  # records a killed process left in the journal, written at start
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
        record = AuditRecord(**fields)
        if self.journal is not None:
            self.journal.append({name: getattr(record, name) for name in _WRITTEN})
        self._queue.append(record)
        self._pending.set()
        if len(self._queue) >= self.batch_size:
            self._full.set()

    def queued(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        """Write what an earlier process left in the journal, then start the flusher on the
        running event loop."""
        if self.journal is not None and self._task is None:
            self.recovered = await asyncio.to_thread(self._recover)
            self.journal.open()
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
        if self.journal is not None:
            self.journal.close()

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
        # What is queued now is exactly what the journal holds since the last rotation.
        aside = self.journal.rotate() if self.journal is not None else None
        ok = True
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.batch_size))]
            try:
                await asyncio.to_thread(self._write, batch)
            except Exception:
                ok = False
                self.failed += len(batch)
                log.exception("could not write %d audit records", len(batch))
            else:
                self.written += len(batch)
                self.batches += 1
        if aside is not None:
            if ok:
                aside.unlink(missing_ok=True)
            else:
                log.error("the records are kept in %s; the next start writes them", aside)

    def _recover(self) -> int:
        """Write the journal's records that the log does not have (a record is known by its
        request id); remove the journal's files. Returns how many were written."""
        files = self.journal.leftovers()
        records = [AuditRecord(**_from_json(r)) for f in files for r in Journal.read(f)]
        if records:
            ids = [r.request_id for r in records]
            with self._engine.connect() as conn:
                known = {row[0] for i in range(0, len(ids), 500) for row in conn.execute(
                    select(audit.c.request_id).where(audit.c.request_id.in_(ids[i:i + 500])))}
            records = [r for r in records if r.request_id not in known]
            for i in range(0, len(records), self.batch_size):
                self._write(records[i:i + self.batch_size])
        for f in files:
            f.unlink(missing_ok=True)
        if records:
            log.warning("wrote %d audit records that a stopped process had not written yet",
                        len(records))
        return len(records)

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
        """AuditLog.recent: the latest rows written (queued records are not there yet)."""
        return AuditLog(self._engine).recent(limit)


class Spend(NamedTuple):
    """What one key spent on one deployment (key_id None: requests without a key; backend
    None: requests no deployment answered)."""

    key_id: int | None
    backend: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(slots=True)
class RouteStats:
    """The requests of one route that one deployment answered (backend None: none did)."""

    routed: str  # the route's name, or the model asked for (rows from before routing: the model)
    backend: str | None
    requests: int = 0
    errors: int = 0  # status >= 400, a client that left (499) included
    fallbacks: int = 0  # failed candidates before an answer, summed
    scored: int = 0  # requests the sentinel scored
    p50_ms: float | None = None  # duration
    p95_ms: float | None = None
    ttft_p50_ms: float | None = None  # over the requests that sent a token
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


# The ids a client sees for request req_X: OpenAI's chatcmpl-X and cmpl-X, Anthropic's msg_X.
_ID_PREFIXES = ("chatcmpl-", "cmpl-", "msg_", "req_")
_NEWEST = (audit.c.ts.desc(), audit.c.id.desc())


class AuditLog:
    """Reads the audit log. Every method does database I/O: not for the event loop."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def recent(self, limit: int = 50) -> list[AuditRecord]:
        """The latest `limit` rows, newest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(audit).order_by(*_NEWEST).limit(limit)).mappings()
            return [AuditRecord(**row) for row in rows]

    def find(self, request_id: str) -> AuditRecord | None:
        """One request by any id a client saw for it: req_X, chatcmpl-X, cmpl-X, msg_X or the
        bare X. None when it is not in the log (yet: rows are written within a second)."""
        given = request_id.strip()
        if not given:
            return None
        bare = next((given[len(p):] for p in _ID_PREFIXES if given.startswith(p)), given)
        wanted = audit.c.request_id.in_(sorted({given, "req_" + bare}))
        with self._engine.connect() as conn:
            row = conn.execute(select(audit).where(wanted).order_by(*_NEWEST).limit(1))
            found = row.mappings().first()
        return AuditRecord(**found) if found is not None else None

    def spend_since(self, since: datetime) -> list[Spend]:
        """Tokens and cost per (key, deployment) of the requests since `since`."""
        group = (audit.c.key_id, audit.c.backend)
        stmt = (
            select(*group, func.sum(audit.c.input_tokens), func.sum(audit.c.output_tokens),
                   func.sum(audit.c.cost_usd))
            .where(audit.c.ts >= since)
            .group_by(*group)
            .order_by(*group)
        )
        with self._engine.connect() as conn:
            return [Spend(key_id, backend, int(tokens_in or 0), int(tokens_out or 0),
                          float(cost or 0.0))
                    for key_id, backend, tokens_in, tokens_out, cost in conn.execute(stmt)]

    def route_stats(self, since: datetime) -> list[RouteStats]:
        """Per (route, deployment): the requests since `since`, busiest route first.

        Percentiles need every duration, and SQLite has no percentile function, so the rows are
        summed here, one narrow pass over the period, rather than in SQL."""
        c = audit.c
        stmt = select(c.routed, c.model, c.backend, c.status, c.fallbacks, c.score, c.duration_ms,
                      c.ttft_ms, c.input_tokens, c.output_tokens, c.cost_usd
                      ).where(c.ts >= since)
        groups: dict[tuple[str, str | None], RouteStats] = {}
        durations: dict[tuple[str, str | None], list[float]] = {}
        ttfts: dict[tuple[str, str | None], list[float]] = {}
        with self._engine.connect() as conn:
            for row in conn.execute(stmt):
                key = (row.routed or row.model, row.backend)
                stats = groups.get(key)
                if stats is None:
                    stats = groups[key] = RouteStats(*key)
                    durations[key], ttfts[key] = [], []
                stats.requests += 1
                stats.errors += row.status >= 400
                stats.fallbacks += row.fallbacks
                stats.scored += row.score is not None
                stats.input_tokens += row.input_tokens
                stats.output_tokens += row.output_tokens
                stats.cost_usd += row.cost_usd
                durations[key].append(row.duration_ms)
                if row.ttft_ms is not None:
                    ttfts[key].append(row.ttft_ms)
        for key, stats in groups.items():
            stats.p50_ms = _percentile(durations[key], 0.50)
            stats.p95_ms = _percentile(durations[key], 0.95)
            stats.ttft_p50_ms = _percentile(ttfts[key], 0.50)
        per_route: dict[str, int] = {}
        for stats in groups.values():
            per_route[stats.routed] = per_route.get(stats.routed, 0) + stats.requests
        # Busiest route first; within one, busiest deployment first, "none answered" last.
        return sorted(groups.values(), key=lambda s: (-per_route[s.routed], s.routed,
                                                      s.backend is None, -s.requests,
                                                      s.backend or ""))

    def scores(self, routed: str, *, since: datetime | None = None,
               limit: int = 10_000) -> list[float]:
        """The sentinel's logged scores on a route, newest first (for calibration)."""
        stmt = select(audit.c.score).where(audit.c.routed == routed, audit.c.score.is_not(None))
        if since is not None:
            stmt = stmt.where(audit.c.ts >= since)
        with self._engine.connect() as conn:
            return list(conn.execute(stmt.order_by(*_NEWEST).limit(limit)).scalars())


def _from_json(data: dict) -> dict:
    """A journal line's fields, as AuditRecord takes them."""
    known = {f.name for f in fields(AuditRecord)}
    data = {k: v for k, v in data.items() if k in known}
    if isinstance(data.get("ts"), str):
        data["ts"] = datetime.fromisoformat(data["ts"])
    return data


def _percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of `values`, interpolated between the nearest ranks; None for no
    values. Sorts `values` in place."""
    if not values:
        return None
    values.sort()
    rank = (len(values) - 1) * q
    low = int(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)
