"""The audit / usage log: one row per request, written in batches off the request path (by the
record writer, store/writer.py), and read back by `tenshu trace`, `tenshu routes` and the
budgets the server loads at start.

`AuditLog` holds the reads. They do database I/O and may scan a day or a month of rows, so
they are for the CLI, startup, or asyncio.to_thread, never the event loop itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    String,
    column,
    func,
    select,
    table,
)

from tenshu.store.keys import touch_keys
from tenshu.store.sql import UTCDateTime, insert_many, utcnow


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
    user_id: int | None = None  # whom it acted for (the key's user, a session's, the owner)
    ts: datetime = field(default_factory=utcnow)
    id: int | None = None


_COLUMNS = [f.name for f in fields(AuditRecord)]
_TYPES = {"id": Integer, "ts": UTCDateTime(), "key_id": Integer, "user_id": Integer,
          "status": Integer,
          "input_tokens": Integer, "output_tokens": Integer, "ttft_ms": Float,
          "duration_ms": Float, "fallbacks": Integer, "cost_usd": Float, "score": Float}
# The columns this module reads and writes; their types and indexes are in migrations.py.
audit = table("audit", *(column(name, _TYPES.get(name, String)) for name in _COLUMNS))
WRITTEN = [name for name in _COLUMNS if name != "id"]  # what a record's row is made of


def write_audit(conn: Connection, records: list[AuditRecord]) -> None:
    """Insert records (the record writer's batch), and set their keys' last_used_at."""
    if not records:
        return
    last_used: dict[int, datetime] = {}
    for r in records:
        if r.key_id is not None and (r.key_id not in last_used or last_used[r.key_id] < r.ts):
            last_used[r.key_id] = r.ts
    insert_many(conn, audit, [{name: getattr(r, name) for name in WRITTEN} for r in records])
    touch_keys(last_used.items(), conn)


def known_requests(conn: Connection, request_ids: list[str]) -> set[str]:
    """Which of these request ids the log has already (the journal's replay skips them)."""
    return {row[0] for i in range(0, len(request_ids), 500) for row in conn.execute(
        select(audit.c.request_id).where(audit.c.request_id.in_(request_ids[i:i + 500])))}


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
