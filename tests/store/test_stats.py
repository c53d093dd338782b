"""The dashboards' reads of the audit log: counts over time, latency histograms, routes and
deployments, fallbacks and their causes, the sentinel's verdicts, spend per key and tier, the
explorer's pages and one request's trace; a member reads only their own requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tenshu.core.errors import NotFoundError
from tenshu.router.trace import Attempt, Trace
from tenshu.store import AuditRecord, Principal, open_store
from tenshu.store.audit import write_audit
from tenshu.store.sql import begin_write
from tenshu.store.stats import LATENCY_EDGES, Stats, step_for

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def world(database):
    """ana and ben (members) and boss (an admin), with keys, and a morning of requests."""
    with open_store(database) as store:
        people = {name: Principal.of(store.users.add(name, role=role)) for name, role in (
            ("ana", "member"), ("ben", "member"), ("boss", "admin"))}
        keys = {name: store.keys.create(f"{name}-key", user=name)[0].id for name in people}

        def rec(i: int, who: str, minutes_ago: float, **fields) -> AuditRecord:
            return AuditRecord(**{
                "request_id": f"req_{who}{i:04d}", "protocol": "openai",
                "route": "/v1/chat/completions", "model": "tiny", "routed": "tiny",
                "backend": "tiny", "input_tokens": 10, "output_tokens": 11, "ttft_ms": 15.0,
                "duration_ms": 115.0, "user_id": people[who].user_id, "key_id": keys[who],
                "ts": NOW - timedelta(minutes=minutes_ago), **fields})

        failed = Trace(route="auto", tier="big", reason="sentinel", score=0.85, attempts=[
            Attempt("cloud[0]", "error", "upstream_error: 502 from upstream", 40.0),
            Attempt("cloud[1]", "error", "timeout: no first token in 60 s", 60.0),
            Attempt("tiny", "ok", None, 20.0)], backend="tiny")
        records = [
            rec(1, "ana", 50),
            rec(2, "ana", 30, routed="auto", tier="small", score=0.15, ttft_ms=5.0,
                duration_ms=1005.0, output_tokens=101),
            rec(3, "ana", 10, routed="auto", tier="big", score=0.85, fallbacks=2,
                trace=failed.to_json(), input_tokens=200, cost_usd=0.25),
            rec(4, "ana", 5, status=400, error_kind="context_length_exceeded", backend=None,
                ttft_ms=None, duration_ms=1.0, input_tokens=0, output_tokens=0, fallbacks=1,
                trace=Trace(attempts=[Attempt("tiny", "error", "context_length_exceeded: "
                                              "too long", 0.5)]).to_json()),
            rec(5, "ana", 90),  # before a one-hour period
            rec(1, "ben", 20, model="other", routed="other", backend="other", output_tokens=1),
            rec(1, "boss", 1, key_id=None),
        ]
        with begin_write(store.engine) as conn:
            write_audit(conn, records)
        yield store, Stats(store.engine), people


def test_a_member_counts_only_their_own_requests(world):
    _, stats, who = world
    found = stats.overview(who["ana"], NOW - timedelta(hours=1), NOW)
    assert found.step == "minute" and len(found.buckets) == 60
    t = found.totals
    assert (t["requests"], t["errors"], t["input_tokens"], t["output_tokens"]) == (4, 1, 220, 123)
    assert t["fallbacks"] == 3 and t["cost_usd"] == 0.25
    per_minute = {b.start: (b.requests, b.errors) for b in found.buckets if b.requests}
    assert per_minute == {NOW - timedelta(minutes=m): (1, int(m == 5)) for m in (50, 30, 10, 5)}
    assert all(b.p50_ms is None for b in found.buckets if not b.requests)
    busy = next(b for b in found.buckets if b.start == NOW - timedelta(minutes=30))
    assert (busy.p50_ms, busy.p95_ms, busy.output_tokens) == (1005.0, 1005.0, 101)
    # routes are what was asked for; deployments who answered ("none": nobody did)
    assert [(r.name, r.requests, r.errors) for r in found.routes] == [("auto", 2, 0),
                                                                      ("tiny", 2, 1)]
    assert [(b.name, b.requests, b.errors) for b in found.backends] == [("tiny", 3, 0),
                                                                        ("none", 1, 1)]
    assert [(key, tier, t.tokens) for key, tier, t in found.spend] == [
        ("ana-key", "big", 211), ("ana-key", "small", 111), ("ana-key", None, 21)]


def test_latency_histograms_and_the_per_token_latency(world):
    _, stats, who = world
    found = stats.overview(who["ana"], NOW - timedelta(hours=1), NOW)
    # time to first token: 15, 5, 15 ms (the failed request sent none)
    ttft = dict(zip(found.ttft.edges, found.ttft.counts, strict=False))
    assert ttft == {5.0: 1, 10.0: 2} and found.ttft.edges[-1] == 20.0
    # (duration - ttft) / (output - 1): 100/10 = 10 ms, 1000/100 = 10 ms, 10 ms
    assert found.per_token.edges == [10.0, 20.0] and found.per_token.counts == [3]
    assert found.totals["ttft_p50_ms"] == 15.0 and found.totals["per_token_p50_ms"] == 10.0
    assert set(found.ttft.edges) <= set(LATENCY_EDGES)


def test_fallbacks_are_counted_by_deployment_and_the_kind_of_error(world):
    _, stats, who = world
    found = stats.overview(who["ana"], NOW - timedelta(hours=1), NOW)
    assert found.fallbacks == [("cloud[0]", "upstream_error", 1), ("cloud[1]", "timeout", 1),
                               ("tiny", "context_length_exceeded", 1)]


def test_the_sentinels_verdicts_by_the_tier_chosen(world):
    _, stats, who = world
    verdicts = stats.overview(who["ana"], NOW - timedelta(hours=1), NOW).verdicts
    assert verdicts == {"big": [0] * 8 + [1, 0], "small": [0, 1] + [0] * 8}


def test_an_admin_sees_everyone_or_the_user_named_and_the_read_is_logged(world):
    store, stats, who = world
    hour = (NOW - timedelta(hours=1), NOW)
    assert stats.overview(who["boss"], *hour).totals["requests"] == 6
    bens = stats.overview(who["boss"], *hour, user="ben")
    assert bens.totals["requests"] == 1 and [r.name for r in bens.routes] == ["other"]
    assert bens.totals["per_token_p50_ms"] is None  # one output token: no gap to measure
    assert [(r["admin"], r["user"], r["action"]) for r in store.users.admin_reads()] == [
        ("boss", "ben", "read")]
    with pytest.raises(NotFoundError):
        stats.overview(who["boss"], *hour, user="nobody")


def test_a_member_cannot_name_another_user(world):
    _, stats, who = world
    with pytest.raises(NotFoundError):
        stats.overview(who["ben"], NOW - timedelta(hours=1), NOW, user="ana")
    with pytest.raises(NotFoundError):
        stats.recent(who["ben"], user="ana")
    assert stats.overview(who["ben"], NOW - timedelta(hours=1), NOW,
                          user="ben").totals["requests"] == 1


def test_the_period_is_half_open_and_its_step_follows_its_span(world):
    _, stats, who = world
    found = stats.overview(who["ana"], NOW - timedelta(minutes=30), NOW - timedelta(minutes=5))
    assert found.totals["requests"] == 2  # 30 minutes ago is in; 5 minutes ago is not
    assert step_for(timedelta(days=1))[0] == "hour"
    assert step_for(timedelta(days=7))[0] == "hour"
    assert step_for(timedelta(days=30))[0] == "day"
    month = stats.overview(who["ana"], NOW - timedelta(days=30), NOW)
    assert month.step == "day" and month.buckets[0].start.hour == 0
    assert sum(b.requests for b in month.buckets) == 5
    assert month.buckets[-1].requests == 5  # all of them today
    quiet = stats.overview(who["ana"], NOW - timedelta(days=3), NOW - timedelta(days=2))
    assert quiet.totals["requests"] == 0 and quiet.ttft.counts == [] and quiet.verdicts == {}


def test_the_explorer_pages_newest_first_and_only_the_callers(world):
    _, stats, who = world
    first, more = stats.recent(who["ana"], limit=2)
    assert [r.record.request_id for r in first] == ["req_ana0004", "req_ana0003"] and more
    rest, more = stats.recent(who["ana"], limit=10, after="req_ana0003")
    assert [r.record.request_id for r in rest] == ["req_ana0002", "req_ana0001",
                                                   "req_ana0005"] and not more
    assert rest[0].user == "ana" and rest[0].key == "ana-key"
    failed, _ = stats.recent(who["ana"], errors=True)
    assert [r.record.request_id for r in failed] == ["req_ana0004"]
    # ben's cursor into ana's requests finds nothing, as an id that does not exist
    assert stats.recent(who["ben"], after="req_ana0003") == ([], False)
    assert [r.record.request_id for r in stats.recent(who["ben"])[0]] == ["req_ben0001"]
    everyone, _ = stats.recent(who["boss"], limit=100)
    assert len(everyone) == 7 and everyone[0].user == "boss" and everyone[0].key is None


def test_one_request_by_any_id_and_never_anothers(world):
    _, stats, who = world
    for given in ("req_ana0003", "turn_ana0003", "chatcmpl-ana0003", "msg_ana0003",
                  "ana0003", " req_ana0003 "):
        found = stats.request(who["ana"], given)
        assert found is not None and found.record.request_id == "req_ana0003", given
    details = found.details
    assert details["reason"] == "sentinel"
    assert [(a["backend"], a["outcome"]) for a in details["attempts"]] == [
        ("cloud[0]", "error"), ("cloud[1]", "error"), ("tiny", "ok")]
    data = found.to_json(trace=True)
    assert data["score"] == 0.85 and data["tier"] == "big" and data["trace"] == details
    assert stats.request(who["ben"], "req_ana0003") is None
    assert stats.request(who["ben"], "turn_ana0003") is None
    assert stats.request(who["ana"], "req_nothing") is None and stats.request(who["ana"], "")\
        is None
    assert stats.request(who["boss"], "req_ana0003").user == "ana"
