"""AsyncEngine: streams per request as tokens arrive, abort frees blocks at once, a bad request
fails alone, leaving a stream early aborts the request."""

from __future__ import annotations

import asyncio

import pytest

from tenshu import AsyncEngine, EngineConfig, SamplingParams
from tenshu.core.errors import ContextLengthError
from tenshu.engine.sampling import RequestOutputKind


@pytest.fixture(scope="module")
def engine(checkpoint):
    e = AsyncEngine(EngineConfig(model=str(checkpoint("qwen3")), dtype="float32"))
    yield e
    e.shutdown()


def free_all(e: AsyncEngine) -> bool:
    bm = e.engine.block_manager
    return bm.num_free_blocks == bm.num_blocks


async def test_concurrent_streams_arrive_token_by_token(engine):
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)

    async def consume(rid: str, prompt: str) -> list[int]:
        counts = []
        async for out in engine.generate(rid, prompt, params):
            counts.append(len(out.outputs[0].token_ids))
        return counts

    a, b = await asyncio.gather(consume("a", "Hello"), consume("b", "Once upon a time, in"))
    assert a == list(range(1, 13)) and b == list(range(1, 13))
    assert free_all(engine)


async def test_abort_frees_the_blocks_before_it_returns(engine):
    params = SamplingParams(temperature=0, max_tokens=500, ignore_eos=True)
    stream = engine.generate("long", "The clockmaker said", params)
    await anext(stream)
    assert not free_all(engine)
    await engine.abort("long")
    assert free_all(engine)
    await stream.aclose()


async def test_leaving_the_stream_early_aborts_the_request(engine):
    params = SamplingParams(temperature=0, max_tokens=500, ignore_eos=True)
    async for out in engine.generate("early", "Hi", params):
        if len(out.outputs[0].token_ids) >= 3:
            break
    for _ in range(100):  # the abort lands at the next step boundary
        if free_all(engine):
            break
        await asyncio.sleep(0.01)
    assert free_all(engine)
    assert "early" not in engine.engine.requests


async def test_a_bad_request_fails_alone(engine):
    with pytest.raises(ContextLengthError):
        async for _ in engine.generate("bad", "x" * 5000, SamplingParams(max_tokens=10)):
            pass
    params = SamplingParams(temperature=0, max_tokens=3, output_kind=RequestOutputKind.FINAL_ONLY)
    outs = [o async for o in engine.generate("ok", "Hello", params)]
    assert len(outs) == 1 and outs[0].finished
