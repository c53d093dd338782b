"""A scripted OpenAI-compatible chat model on loopback, for tests of what tenshu does with a
model's answers (reached through tenshu's real upstream backend), not of the model.

    async with chat_server(model.chat) as url:     # url: "http://127.0.0.1:PORT/v1"
        ...
    # in model.chat: return await stream_reply(request, delta, "stop")
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

from aiohttp import web

from tests.api.live import free_port


async def stream_reply(request: web.Request, delta: dict, finish: str,
                       usage: dict | None = None) -> web.StreamResponse:
    """One streamed choice: `delta` (content or tool_calls), then `finish`, then usage."""
    stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await stream.prepare(request)
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "stub"}
    for choice in ({"delta": delta, "finish_reason": None}, {"delta": {}, "finish_reason": finish}):
        data = {**chunk, "choices": [{"index": 0, **choice}]}
        await stream.write(f"data: {json.dumps(data)}\n\n".encode())
    if usage is not None:
        await stream.write(f"data: {json.dumps({**chunk, 'choices': [], 'usage': usage})}\n\n"
                           .encode())
    await stream.write(b"data: [DONE]\n\n")
    return stream


@contextlib.asynccontextmanager
async def chat_server(chat) -> AsyncIterator[str]:
    """`chat` (an aiohttp handler) serving POST /v1/chat/completions; yields the base URL."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()
