"""What the server did over a period, read from the audit log for the dashboards and
/tenshu/v1/stats: requests, tokens and latency over time, latency histograms, requests by route
and by deployment, fallbacks and their causes, the sentinel's verdicts, spend per key and tier,
and the requests themselves (the trace explorer).

Ownership is in the query: a member reads only the rows of requests made for them
(`audit.user_id`); an admin reads every row, or one user's by naming them (the access is logged,
as any admin read of another's record is: people.access).

SQLite has no percentile function and buckets time differently from PostgreSQL, so `overview`
reads the period's rows once, narrow (only the trace of a request that had a failed candidate),
and does the counting here, as AuditLog.route_stats does. Database I/O: not for the event loop.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Connection, Engine, and_, case, or_, select, true

from tenshu.store.audit import AuditRecord, _percentile, audit
from tenshu.store.keys import keys
from tenshu.store.people import Principal, access, users

PERIODS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7),
           "30d": timedelta(days=30)}
# Latency bins: 1-2-5 steps, so a bar reads "20-50 ms". Empty bins at either end are trimmed.
LATENCY_EDGES = [0.0] + [m * 10.0 ** e for e in range(0, 6) for m in (1, 2, 5)] + [math.inf]
SCORE_EDGES = [i / 10 for i in range(11)]  # the sentinel's score is in [0, 1]
# The ids a client sees for request req_X: its turn, OpenAI's ids, Anthropic's, the bare X.
_ID_PREFIXES = ("req_", "turn_", "chatcmpl-", "cmpl-", "msg_")
_NEWEST = (audit.c.ts.desc(), audit.c.id.desc())


def step_for(span: timedelta) -> tuple[str, timedelta]:
    """The bucket of a period's time series: about 30 to 200 points whatever the span."""
    if span <= timedelta(hours=3):
        return "minute", timedelta(minutes=1)
    if span <= timedelta(days=8):
        return "hour", timedelta(hours=1)
    return "day", timedelta(days=1)


@dataclass(slots=True)
class Bucket:
    """One step of the time series (`start` is the step's beginning, UTC)."""

    start: datetime
    requests: int = 0
    errors: int = 0  # status >= 400
    input_tokens: int = 0
    output_tokens: int = 0
    p50_ms: float | None = None  # duration; None for a step without requests
    p95_ms: float | None = None


@dataclass(slots=True)
class Histogram:
    """counts[i] values fell in [edges[i], edges[i + 1]); the last edge may be infinite."""

    edges: list[float]
    counts: list[int]


@dataclass(slots=True)
class Tally:
    """Requests of one route, deployment, or (key, tier)."""

    name: str
    requests: int = 0
    errors: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


@dataclass(slots=True)
class Overview:
    since: datetime
    until: datetime
    step: str  # "minute", "hour" or "day"
    buckets: list[Bucket]
    totals: dict[str, float | int | None]
    ttft: Histogram  # time to first token, ms
    per_token: Histogram  # ms between output tokens after the first
    routes: list[Tally]  # the route asked for (or the model, without a route)
    backends: list[Tally]  # the deployment that answered ("none" when none did)
    fallbacks: list[tuple[str, str, int]]  # (deployment, error kind, failed attempts)
    verdicts: dict[str, list[int]]  # tier chosen -> requests per SCORE_EDGES bin
    # (key's name, tier, tally); None: requests without a key, or not routed to a tier
    spend: list[tuple[str | None, str | None, Tally]] = field(default_factory=list)

    def to_json(self) -> dict:
        def hist(h: Histogram) -> dict:  # JSON has no infinity: an open last bin ends in null
            return {"edges": [e if math.isfinite(e) else None for e in h.edges],
                    "counts": h.counts}

        return {
            "object": "stats", "since": self.since.isoformat(), "until": self.until.isoformat(),
            "step": self.step, "totals": self.totals,
            "series": [{**asdict(b), "start": b.start.isoformat()} for b in self.buckets],
            "ttft_ms": hist(self.ttft), "per_token_ms": hist(self.per_token),
            "routes": [asdict(t) for t in self.routes],
            "backends": [asdict(t) for t in self.backends],
            "fallbacks": [{"backend": b, "kind": k, "count": n} for b, k, n in self.fallbacks],
            "verdicts": {"edges": SCORE_EDGES, "tiers": self.verdicts},
            "spend": [{"key": key, "tier": tier, "requests": t.requests, "tokens": t.tokens,
                       "cost_usd": t.cost_usd} for key, tier, t in self.spend],
        }


@dataclass(slots=True)
class RequestRow:
    """One request of the explorer: its audit record, and whose it was."""

    record: AuditRecord
    user: str | None  # the user's name (None: a request from before users, or removed)
    key: str | None  # the API key's name (None: a web session, or no key)

    @property
    def details(self) -> dict:
        """The trace's JSON: reason, private, attempts, memory ({} for a row without one)."""
        try:
            found = json.loads(self.record.trace) if self.record.trace else {}
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    def to_json(self, *, trace: bool = False) -> dict:
        r = self.record
        data = {name: getattr(r, name) for name in (
            "request_id", "protocol", "route", "model", "routed", "tier", "backend", "status",
            "error_kind", "input_tokens", "output_tokens", "ttft_ms", "duration_ms",
            "fallbacks", "cost_usd", "score")}
        data.update(object="request", ts=r.ts.isoformat(), user=self.user, key=self.key)
        if trace:
            data["trace"] = self.details
        return data


def kind_of(error: str | None) -> str:
    """An attempt's error kind: "upstream_error: 502 ..." -> "upstream_error"."""
    kind = (error or "").split(":", 1)[0].strip()
    return kind or "error"


def bare_id(given: str) -> str:
    given = given.strip()
    return next((given[len(p):] for p in _ID_PREFIXES if given.startswith(p)), given)


class Stats:
    """The audit log, read for one principal. Database I/O: not for the event loop."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @contextmanager
    def _scope(self, principal: Principal, user: str | None,
               resource: str) -> Iterator[tuple[Connection, ColumnElement[bool]]]:
        """A connection, and the condition on audit rows that the principal may read."""
        mine: ColumnElement[bool] = true()
        if user is not None or not principal.admin:
            # whose rows, decided (and an admin's read of another's logged) in a short
            # transaction of its own: a month's scan must not hold SQLite's write lock
            with access(self._engine, principal, user, "read", resource) as (_, owner):
                mine = audit.c.user_id == owner
        with self._engine.connect() as conn:
            yield conn, mine

    def overview(self, principal: Principal, since: datetime, until: datetime, *,
                 user: str | None = None) -> Overview:
        """The requests in [since, until), counted (see the module's docstring)."""
        step_name, step = step_for(until - since)
        start = _floor(since, step)
        buckets = [Bucket(start + i * step)
                   for i in range(max(1, math.ceil((until - start) / step)))]
        durations: list[list[float]] = [[] for _ in buckets]
        every: list[float] = []
        ttfts: list[float] = []
        gaps: list[float] = []  # per-token latencies
        routes: dict[str, Tally] = {}
        backends: dict[str, Tally] = {}
        spend: dict[tuple[int | None, str | None], Tally] = {}
        causes: Counter[tuple[str, str]] = Counter()
        verdicts: dict[str, list[int]] = defaultdict(lambda: [0] * (len(SCORE_EDGES) - 1))
        totals = Counter()
        c = audit.c
        stmt = select(c.ts, c.status, c.model, c.routed, c.backend, c.tier, c.key_id,
                      c.input_tokens, c.output_tokens, c.ttft_ms, c.duration_ms, c.cost_usd,
                      c.fallbacks, c.score,
                      case((c.fallbacks > 0, c.trace), else_=None).label("trace"))
        with self._scope(principal, user, "stats") as (conn, mine):
            rows = conn.execute(stmt.where(mine, c.ts >= since, c.ts < until))
            for row in rows:
                failed = row.status >= 400
                tokens = row.input_tokens + row.output_tokens
                at = min(len(buckets) - 1, int((row.ts - start) / step))
                bucket = buckets[at]
                bucket.requests += 1
                bucket.errors += failed
                bucket.input_tokens += row.input_tokens
                bucket.output_tokens += row.output_tokens
                durations[at].append(row.duration_ms)
                every.append(row.duration_ms)
                totals.update(requests=1, errors=int(failed), input_tokens=row.input_tokens,
                              output_tokens=row.output_tokens, fallbacks=row.fallbacks)
                totals["cost_usd"] += row.cost_usd
                if row.ttft_ms is not None:
                    ttfts.append(row.ttft_ms)
                    if row.output_tokens > 1:
                        gaps.append(max(0.0, row.duration_ms - row.ttft_ms)
                                    / (row.output_tokens - 1))
                for groups, name in ((routes, row.routed or row.model or "-"),
                                     (backends, row.backend or "none")):
                    tally = groups.get(name) or groups.setdefault(name, Tally(name))
                    _count(tally, failed, tokens, row.cost_usd)
                where = (row.key_id, row.tier)
                _count(spend.get(where) or spend.setdefault(where, Tally("")), failed, tokens,
                       row.cost_usd)
                if row.score is not None:
                    verdicts[row.tier or "-"][_bin(SCORE_EDGES, row.score)] += 1
                if row.trace:
                    causes.update(_causes(row.trace))
            names = _key_names(conn, {k for k, _ in spend if k is not None})
        for bucket, values in zip(buckets, durations, strict=True):
            bucket.p50_ms = _percentile(values, 0.50)
            bucket.p95_ms = _percentile(values, 0.95)
        summary = {name: totals[name] for name in (
            "requests", "errors", "input_tokens", "output_tokens", "fallbacks")}
        summary["cost_usd"] = round(totals["cost_usd"], 6)
        summary["p50_ms"] = _percentile(every, 0.50)
        summary["p95_ms"] = _percentile(every, 0.95)
        summary["ttft_p50_ms"] = _percentile(ttfts, 0.50)
        summary["ttft_p95_ms"] = _percentile(ttfts, 0.95)
        summary["per_token_p50_ms"] = _percentile(gaps, 0.50)
        busiest = sorted(spend.items(), key=lambda kv: (-kv[1].tokens, -kv[1].requests,
                                                        str(kv[0])))
        return Overview(
            since=since, until=until, step=step_name, buckets=buckets, totals=summary,
            ttft=_histogram(ttfts, LATENCY_EDGES), per_token=_histogram(gaps, LATENCY_EDGES),
            routes=_busiest(routes), backends=_busiest(backends),
            fallbacks=[(b, k, n) for (b, k), n in sorted(causes.items(),
                                                          key=lambda kv: (-kv[1], kv[0]))],
            verdicts=dict(sorted(verdicts.items())),
            spend=[(names.get(key) if key is not None else None, tier, tally)
                   for (key, tier), tally in busiest])

    def recent(self, principal: Principal, *, limit: int = 50, after: str | None = None,
               user: str | None = None, errors: bool = False
               ) -> tuple[list[RequestRow], bool]:
        """A page of the requests, newest first: `limit` after the request `after` (the last id
        of the previous page), and whether more follow. `errors`: only the failed ones."""
        stmt = _joined().order_by(*_NEWEST).limit(limit + 1)
        if errors:
            stmt = stmt.where(audit.c.status >= 400)
        with self._scope(principal, user, "requests") as (conn, mine):
            stmt = stmt.where(mine)
            if after is not None:
                cursor = conn.execute(select(audit.c.ts, audit.c.id).where(
                    mine, audit.c.request_id == after)).first()
                if cursor is None:
                    return [], False
                stmt = stmt.where(or_(audit.c.ts < cursor.ts, and_(audit.c.ts == cursor.ts,
                                                                   audit.c.id < cursor.id)))
            rows = conn.execute(stmt).all()
        return [_row(r) for r in rows[:limit]], len(rows) > limit

    def request(self, principal: Principal, request_id: str) -> RequestRow | None:
        """One request by any id a client saw for it (req_X, turn_X, chatcmpl-X, msg_X, X);
        None when there is none the principal may read (another member's is None too)."""
        bare = bare_id(request_id)
        if not bare:
            return None
        wanted = audit.c.request_id.in_(sorted({request_id.strip(), "req_" + bare}))
        with self._scope(principal, None, "request") as (conn, mine):
            row = conn.execute(_joined().where(wanted, mine).order_by(*_NEWEST).limit(1)).first()
        return _row(row) if row is not None else None


def _joined():
    return (select(audit, users.c.name.label("user_name"), keys.c.name.label("key_name"))
            .select_from(audit.outerjoin(users, users.c.id == audit.c.user_id)
                         .outerjoin(keys, keys.c.id == audit.c.key_id)))


def _row(row) -> RequestRow:
    data = dict(row._mapping)
    user, key = data.pop("user_name"), data.pop("key_name")
    return RequestRow(AuditRecord(**data), user, key)


def _key_names(conn, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    stmt = select(keys.c.id, keys.c.name).where(keys.c.id.in_(sorted(ids)))
    return {key_id: name for key_id, name in conn.execute(stmt)}


def _count(tally: Tally, failed: bool, tokens: int, cost: float) -> None:
    tally.requests += 1
    tally.errors += failed
    tally.tokens += tokens
    tally.cost_usd += cost


def _busiest(groups: dict[str, Tally]) -> list[Tally]:
    return sorted(groups.values(), key=lambda t: (-t.requests, t.name))


def _causes(trace: str) -> Counter[tuple[str, str]]:
    """(deployment, error kind) of each candidate that failed, from a trace's JSON."""
    try:
        attempts = json.loads(trace).get("attempts") or []
    except (ValueError, AttributeError):
        return Counter()
    return Counter((str(a.get("backend")), kind_of(a.get("error"))) for a in attempts
                   if isinstance(a, dict) and a.get("outcome") == "error")


def _bin(edges: list[float], value: float) -> int:
    """The bin of `value`: the last bin is closed (a score of 1.0 is in 0.9-1.0)."""
    return max(0, min(len(edges) - 2, bisect_right(edges, value) - 1))


def _histogram(values: list[float], edges: list[float]) -> Histogram:
    counts = [0] * (len(edges) - 1)
    for value in values:
        counts[_bin(edges, value)] += 1
    used = [i for i, n in enumerate(counts) if n]
    if not used:
        return Histogram([], [])
    first, last = used[0], used[-1]
    return Histogram(edges[first:last + 2], counts[first:last + 1])


def _floor(when: datetime, step: timedelta) -> datetime:
    """`when` rounded down to a whole step (UTC: days start at midnight UTC)."""
    seconds = step.total_seconds()
    epoch = when.astimezone(UTC).timestamp()
    return datetime.fromtimestamp(epoch // seconds * seconds, UTC)
