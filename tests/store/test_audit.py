"""The audit log: records are queued without blocking and written in batches."""

from __future__ import annotations

import asyncio
import time

import pytest

from tenshu.store import open_store


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "state.db") as store:
        yield store


def request(i: int, **fields) -> dict:
    return {"request_id": f"req-{i}", "protocol": "openai", "route": "/v1/chat/completions",
            "model": "tenshu-tiny", "input_tokens": 10 + i, "output_tokens": 5, "ttft_ms": 12.5,
            "duration_ms": 80.0, **fields}


async def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_close_writes_everything_in_batches(store):
    writer = store.audit_writer(batch_size=4, interval=60)
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
    writer = store.audit_writer(batch_size=4, interval=60)
    await writer.start()
    for i in range(4):
        writer.record(**request(i))
    await wait_for(lambda: writer.written == 4)
    assert writer.batches == 1
    await writer.close()


async def test_a_partial_batch_is_written_after_the_interval(store):
    writer = store.audit_writer(batch_size=256, interval=0.2)
    await writer.start()
    writer.record(**request(0), status=500, error_kind="internal")
    writer.record(**request(1))
    await wait_for(lambda: len(writer.query_recent(10)) == 2)
    assert writer.batches == 1
    assert writer.query_recent(1)[0].request_id == "req-1"
    assert writer.query_recent(2)[1].error_kind == "internal"
    await writer.close()


async def test_record_never_blocks_when_the_queue_is_full(store):
    writer = store.audit_writer(max_queue=100, batch_size=10)  # not started: nothing drains it
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
    writer = store.audit_writer()
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
    writer = store.audit_writer(batch_size=1, interval=60)
    await writer.start()
    writer.record(**request(0, model=None))  # NOT NULL column: this batch fails
    writer.record(**request(1))
    await writer.close()
    assert (writer.failed, writer.written) == (1, 1)
    assert [r.request_id for r in writer.query_recent(10)] == ["req-1"]
