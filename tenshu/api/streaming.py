"""Streaming helpers shared by the protocol routers.

`first_event` pulls a stream's first event before any byte is sent, so a request that fails up
front (bad model, prompt too long, queue full) gets a plain HTTP error with the right status;
only failures after that become in-stream error events. `with_heartbeat` interleaves None ticks
while a stream is silent (Anthropic's ping events during a long prefill). `unless_gone` runs
non-streaming work (a whole reply, an embedding) until it is done or its client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from tenshu.core.events import ChatEvent

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def named_event(event: dict) -> str:
    """One server-sent event named by its `type` (`event: TYPE`), its data the whole object:
    what the Responses API and the agent runs' streams send."""
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n"
_END = object()
T = TypeVar("T")


async def first_event(events: AsyncIterator[ChatEvent]) -> AsyncIterator[ChatEvent]:
    """Await the first event now; return an iterator that replays it, then the rest."""
    try:
        first = await anext(events)
    except StopAsyncIteration:
        first = _END

    async def replay():
        try:
            if first is not _END:
                yield first
                async for event in events:
                    yield event
        finally:
            await events.aclose()

    return replay()


async def with_heartbeat(events: AsyncIterator[ChatEvent], interval: float):
    """Yield the stream's events, and None whenever `interval` seconds pass without one."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump():
        try:
            async for event in events:
                await queue.put(event)
            await queue.put(_END)
        except BaseException as exc:  # noqa: BLE001 (handed to the reader, which re-raises)
            await queue.put(exc)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                async with asyncio.timeout(interval):
                    item = await queue.get()
            except TimeoutError:
                yield None
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # the stream is closing
            await task


async def collect_unless_gone(request, events: AsyncIterator[ChatEvent]) -> list[ChatEvent] | None:
    """Every event of a non-streaming reply, or None if the client disconnected first: then the
    reply is cancelled, so the engine stops working on an answer nobody will read. The reply's
    own errors are raised."""

    async def collect() -> list[ChatEvent]:
        try:
            return [event async for event in events]
        finally:
            await events.aclose()

    return await unless_gone(request, collect())


async def unless_gone(request, work: Awaitable[T]) -> T | None:
    """`work`'s result, or None if the client disconnected first: then `work` is cancelled (an
    engine request aborted, an embedding stopped between batches). Its own errors are raised."""

    async def gone() -> None:
        # The body has been read, so the next ASGI message can only be the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            continue

    task, watch = asyncio.ensure_future(work), asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return None if task.cancelled() else task.result()
