"""The audit log: records are queued without blocking, written in batches, and read back by
request id, by spend and by route."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import pytest

from tenshu.router.trace import Attempt, Trace
from tenshu.store import open_store
from tenshu.store.sql import utcnow


@pytest.fixture
def store(database):
    with open_store(database) as store:
        yield store


def request(i: int, **fields) -> dict:
    return {"request_id": f"req-{i}", "protocol": "openai", "route": "/v1/chat/completions",
            "model": "tenshu-tiny", "input_tokens": 10 + i, "output_tokens": 5, "ttft_ms": 12.5,
            "duration_ms": 80.0, **fields}


async def wait_for(condition, timeout: float = 60.0) -> None:  # generous: a loaded machine
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_close_writes_everything_in_batches(store):
    writer = store.writer(batch_size=4, interval=60)
    await writer.start()
    for i in range(10):
        writer.record(**request(i))
    await writer.close()
    assert (writer.written, writer.batches, writer.dropped, writer.failed) == (10, 3, 0, 0)
    rows = writer.query_recent(100)
    assert [r.request_id for r in rows] == [f"req-{i}" for i in reversed(range(10))]
    assert rows[0].input_tokens == 19 and rows[0].ttft_ms == 12.5 and rows[0].id is not None
    assert rows[0].key_id is None and rows[0].error_kind is None


async def test_a_full_batch_is_written_without_waiting_for_the_interval(store):
    writer = store.writer(batch_size=4, interval=60)
    await writer.start()
    for i in range(4):
        writer.record(**request(i))
    await wait_for(lambda: writer.written == 4)
    assert writer.batches == 1
    await writer.close()


async def test_a_partial_batch_is_written_after_the_interval(store):
    writer = store.writer(batch_size=256, interval=0.2)
    await writer.start()
    writer.record(**request(0), status=500, error_kind="internal")
    writer.record(**request(1))
    # the counters, not the rows: the rows are visible a moment before the flusher counts them
    await wait_for(lambda: writer.written == 2)
    assert writer.batches == 1
    assert writer.query_recent(1)[0].request_id == "req-1"
    assert writer.query_recent(2)[1].error_kind == "internal"
    await writer.close()


async def test_record_never_blocks_when_the_queue_is_full(store):
    writer = store.writer(max_queue=100, batch_size=10)  # not started: nothing drains it
    started = time.perf_counter()
    for i in range(1_000):
        writer.record(**request(i))
    assert time.perf_counter() - started < 1.0  # a generous bound: it only appends
    assert (writer.queued(), writer.dropped) == (100, 900)
    await writer.close()  # never started: close flushes what was queued
    assert writer.written == 100
    assert len(writer.query_recent(1_000)) == 100
    writer.record(**request(0))  # after close: dropped, not queued forever
    assert writer.dropped == 901


async def test_last_used_is_set_in_the_same_batch(store):
    laptop, _ = store.keys.create("laptop")
    ci, _ = store.keys.create("ci")
    writer = store.writer()
    await writer.start()
    writer.record(**request(0, key_id=laptop.id))
    writer.record(**request(1, key_id=laptop.id))
    writer.record(**request(2))
    await writer.close()
    rows = {r.request_id: r for r in writer.query_recent(10)}
    by_name = {k.name: k for k in store.keys.list()}
    assert by_name["laptop"].last_used_at == rows["req-1"].ts  # the latest of its requests
    assert by_name["ci"].last_used_at is None
    assert rows["req-0"].key_id == laptop.id and rows["req-2"].key_id is None


async def test_the_flusher_survives_a_batch_the_database_refuses(store):
    writer = store.writer(batch_size=1, interval=60)
    await writer.start()
    writer.record(**request(0, model=None))  # NOT NULL column: this batch fails
    writer.record(**request(1))
    await writer.close()
    assert (writer.failed, writer.written) == (1, 1)
    assert [r.request_id for r in writer.query_recent(10)] == ["req-1"]


async def write(store, *records: dict) -> None:
    """Through the real writer, as the gateway does."""
    writer = store.writer(interval=60)
    await writer.start()
    for fields in records:
        writer.record(**fields)
    await writer.close()
    assert writer.written == len(records)


async def test_routing_fields_round_trip(store):
    trace = Trace(route="code", tier="cloud", reason="rule 1: code", score=0.73,
                  attempts=[Attempt("gpt", "error", "overloaded: busy", 40.0),
                            Attempt("qwen", "ok", ms=120.0)],
                  backend="qwen", cost_usd=0.0021)
    await write(store, request(0, request_id="req_abc", routed=trace.route, tier=trace.tier,
                               backend=trace.backend, fallbacks=trace.fallbacks,
                               cost_usd=trace.cost_usd, score=trace.score,
                               trace=trace.to_json()))
    record = store.audit.find("req_abc")
    assert (record.routed, record.tier, record.backend, record.fallbacks) == \
        ("code", "cloud", "qwen", 1)
    assert record.cost_usd == pytest.approx(0.0021) and record.score == pytest.approx(0.73)
    assert json.loads(record.trace)["attempts"][0] == {
        "backend": "gpt", "outcome": "error", "error": "overloaded: busy", "ms": 40.0}
    assert store.audit.recent(1) == [record]


@pytest.mark.parametrize("asked", ["req_4f1c0a", "chatcmpl-4f1c0a", "cmpl-4f1c0a", "msg_4f1c0a",
                                   "4f1c0a", "  msg_4f1c0a\n"])
async def test_find_by_any_id_a_client_saw(store, asked):
    await write(store, request(0, request_id="req_4f1c0a"), request(1, request_id="req_other"))
    found = store.audit.find(asked)
    assert found is not None and found.request_id == "req_4f1c0a"


async def test_find_unknown_ids(store):
    await write(store, request(0, request_id="req_4f1c0a"))
    assert store.audit.find("req_4f1c0b") is None
    assert store.audit.find("chatcmpl-") is None
    assert store.audit.find("") is None
    assert store.audit.find("req-0") is None  # a stored id that does not use req_ ...
    await write(store, request(1, request_id="req-0"))
    assert store.audit.find("req-0").request_id == "req-0"  # ... is found as it was given


async def test_spend_since_sums_per_key_and_backend(store):
    now = utcnow()
    laptop, ci = 1, 2
    await write(
        store,
        request(0, key_id=laptop, backend="gpt", input_tokens=100, output_tokens=10,
                cost_usd=0.5, ts=now - timedelta(minutes=5)),
        request(1, key_id=laptop, backend="gpt", input_tokens=200, output_tokens=20,
                cost_usd=0.25, ts=now - timedelta(minutes=1)),
        request(2, key_id=laptop, backend="qwen", input_tokens=7, output_tokens=3),
        request(3, key_id=ci, backend="gpt", input_tokens=1, output_tokens=1, cost_usd=0.01),
        request(4, backend="qwen", input_tokens=5, output_tokens=5),
        request(5, key_id=laptop, backend="gpt", input_tokens=999, output_tokens=999,
                cost_usd=9.0, ts=now - timedelta(days=1)),  # yesterday: not counted
    )
    spend = store.audit.spend_since(now - timedelta(hours=1))
    assert {(s.key_id, s.backend): s[2:] for s in spend} == {
        (laptop, "gpt"): (300, 30, pytest.approx(0.75)),
        (laptop, "qwen"): (7, 3, 0.0),
        (ci, "gpt"): (1, 1, pytest.approx(0.01)),
        (None, "qwen"): (5, 5, 0.0),
    }
    key_id, backend, tokens_in, tokens_out, cost = spend[0]  # rows unpack as tuples
    assert isinstance(tokens_in, int) and isinstance(cost, float)


async def test_route_stats(store):
    now = utcnow()
    code = [request(i, routed="code", backend="gpt", duration_ms=float(10 * (i + 1)),
                    ttft_ms=float(i + 1), input_tokens=10, output_tokens=2, cost_usd=0.01,
                    score=0.5)
            for i in range(10)]  # durations 10..100 ms, ttft 1..10 ms
    await write(
        store, *code,
        request(10, routed="code", backend="qwen", fallbacks=1, duration_ms=300.0,
                status=200, score=0.9),
        request(11, routed="code", status=503, error_kind="overloaded", fallbacks=2,
                ttft_ms=None, input_tokens=0, output_tokens=0, duration_ms=5.0),
        request(12, routed="chat", backend="qwen", status=499, error_kind="aborted"),
        request(13, model="tenshu-tiny"),  # from before routing: grouped by the model asked
        request(14, routed="code", backend="gpt", ts=now - timedelta(days=2)),  # too old
    )
    stats = store.audit.route_stats(now - timedelta(hours=1))
    by_key = {(s.routed, s.backend): s for s in stats}
    assert [(s.routed, s.backend) for s in stats] == [
        ("code", "gpt"), ("code", "qwen"), ("code", None), ("chat", "qwen"),
        ("tenshu-tiny", None)]
    gpt = by_key["code", "gpt"]
    assert (gpt.requests, gpt.errors, gpt.fallbacks, gpt.scored) == (10, 0, 0, 10)
    assert gpt.p50_ms == pytest.approx(55.0) and gpt.p95_ms == pytest.approx(95.5)
    assert gpt.ttft_p50_ms == pytest.approx(5.5)
    assert (gpt.input_tokens, gpt.output_tokens, gpt.cost_usd) == (100, 20, pytest.approx(0.1))
    qwen = by_key["code", "qwen"]
    assert (qwen.requests, qwen.fallbacks, qwen.scored, qwen.p50_ms) == (1, 1, 1, 300.0)
    failed = by_key["code", None]
    assert (failed.errors, failed.fallbacks, failed.ttft_p50_ms) == (1, 2, None)
    assert by_key["chat", "qwen"].errors == 1  # a client that left counts as an error
    assert store.audit.route_stats(now + timedelta(seconds=1)) == []


async def test_scores_for_calibration(store):
    now = utcnow()
    await write(
        store,
        *(request(i, routed="code", score=i / 10, ts=now - timedelta(minutes=10 - i))
          for i in range(5)),
        request(5, routed="code"),  # the sentinel was not asked
        request(6, routed="chat", score=0.99),
    )
    assert store.audit.scores("code") == pytest.approx([0.4, 0.3, 0.2, 0.1, 0.0])
    assert store.audit.scores("code", limit=2) == pytest.approx([0.4, 0.3])
    assert store.audit.scores("code", since=now - timedelta(minutes=8.5)) == \
        pytest.approx([0.4, 0.3, 0.2])
    assert store.audit.scores("nope") == []
