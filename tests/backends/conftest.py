"""Fixtures for the upstream backends: a real tenshu server on loopback to forward to (one random
Qwen3-shaped checkpoint with a tool-calling chat template, loaded once), a raw asyncio HTTP
server for the failures a real server will not produce on demand, and helpers that read a
backend's ChatEvent stream."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from tenshu.backends.upstream import Timeouts
from tenshu.backends.upstreams import upstream_backend
from tenshu.config import ModelSpec
from tenshu.core.events import BlockDelta, BlockStart, BlockStop, MessageFinish, MessageStart
from tests.chat.conftest import TEMPLATES

PROTOCOLS = ("openai", "anthropic", "ollama")
MODEL = "qwen"
KEY_ENV = "TEST_UPSTREAM_KEY"
FAST = Timeouts(connect=2.0, first_token=0.5, idle=0.5)


@pytest.fixture(scope="package")
def upstream(tmp_path_factory, checkpoint):
    """tenshu serving a random checkpoint, with the Qwen tool-call template, as `qwen`."""
    from tests.api.live import live_server  # the whole server stack, only for tests that use it

    path = tmp_path_factory.mktemp("upstream-qwen")
    shutil.copytree(checkpoint("qwen3", max_position_embeddings=4096), path, dirs_exist_ok=True)
    (path / "chat_template.jinja").write_text(TEMPLATES["qwen"])
    state = tmp_path_factory.mktemp("upstream-state") / "state.db"
    with live_server(state, models=(ModelSpec(MODEL, str(path)),), embedder=False,
                     max_num_seqs=8) as live:
        yield live


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint_of(protocol: str, base_url: str) -> str:
    """Endpoints as each official SDK takes them: OpenAI's with /v1 (both of its APIs)."""
    return f"{base_url}/v1" if protocol in ("openai", "openai-responses") else base_url


@asynccontextmanager
async def backend_for(protocol: str, base_url: str, **kwargs):
    """An upstream backend named `qwen`, closed afterwards."""
    kwargs.setdefault("api_key_env", KEY_ENV)
    backend = upstream_backend(protocol, MODEL, endpoint_of(protocol, base_url), **kwargs)
    try:
        yield backend
    finally:
        await backend.aclose()


async def collect(backend, request) -> list:
    return [event async for event in backend.chat(request)]


def check_sequence(events: list) -> MessageFinish:
    """The core event sequence for one choice: start, blocks opened, delta'd and closed in
    index order, one at a time, then the finish (returned)."""
    assert isinstance(events[0], MessageStart), events[0]
    assert isinstance(events[-1], MessageFinish), events[-1]
    open_index, next_index = None, 0
    for event in events[1:-1]:
        if isinstance(event, BlockStart):
            assert open_index is None and event.index == next_index, event
            open_index, next_index = event.index, next_index + 1
        elif isinstance(event, BlockDelta):
            assert event.index == open_index, event
        elif isinstance(event, BlockStop):
            assert event.index == open_index, event
            open_index = None
        else:
            raise AssertionError(f"unexpected event {event}")
    assert open_index is None
    return events[-1]


# -- a raw HTTP server, for failures on demand ---------------------------------------------------


@dataclass
class RawServer:
    url: str
    bodies: list[bytes] = field(default_factory=list)  # each request's body, as received
    heads: list[bytes] = field(default_factory=list)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request off the connection: its head and its body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return head, await reader.readexactly(int(length.group(1))) if length else b""


@asynccontextmanager
async def loopback_server(serve):
    """Run `serve(reader, writer)` for each connection made to a loopback port, and close the
    connection when it returns (or the client leaves); yields the server's URL. At the end,
    handlers still running are cancelled."""
    handlers: set[asyncio.Task] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        handlers.add(asyncio.current_task())
        try:
            await serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


@asynccontextmanager
async def raw_server(respond):
    """A loopback HTTP server that reads each request, then hands the writer to
    `respond(writer)`, which writes whatever bytes the test needs (or nothing, ever)."""
    server_info = RawServer("")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        head, body = await read_request(reader)
        server_info.heads.append(head)
        server_info.bodies.append(body)
        await respond(writer)
        await writer.drain()

    async with loopback_server(serve) as url:
        server_info.url = url
        yield server_info


def head(status: int = 200, content_type: str = "text/event-stream", extra: str = "") -> bytes:
    """A response head with no length: the body runs until the connection closes."""
    return (f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\nconnection: close\r\n"
            f"{extra}\r\n").encode()


def sse(*events: str) -> bytes:
    return b"".join(f"data: {e}\n\n".encode() for e in events)


# Each protocol's stream, cut in parts: the start and one text token, the rest of a whole reply,
# and the keep-alive a server sends while it has nothing to say.
_OPENAI_CHUNK = ('{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
                 '"choices":[{"index":0,"delta":%s,"finish_reason":%s}]}')
_ANTHROPIC_START = ('{"type":"message_start","message":{"id":"msg_1","type":"message",'
                    '"role":"assistant","model":"m","content":[],"stop_reason":null,'
                    '"usage":{"input_tokens":3,"output_tokens":0}}}')
_ANTHROPIC_BLOCK = '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
_ANTHROPIC_TEXT = ('{"type":"content_block_delta","index":0,'
                   '"delta":{"type":"text_delta","text":"hi"}}')
_OLLAMA_LINE = ('{"model":"m","created_at":"2025-01-01T00:00:00Z",'
                '"message":{"role":"assistant","content":"%s"},"done":%s%s}\n')

FIRST_TOKEN = {
    "openai": sse(_OPENAI_CHUNK % ('{"role":"assistant","content":"hi"}', "null")),
    "anthropic": sse(_ANTHROPIC_START, _ANTHROPIC_BLOCK, _ANTHROPIC_TEXT),
    "ollama": (_OLLAMA_LINE % ("hi", "false", "")).encode(),
}
REST = {
    "openai": sse(_OPENAI_CHUNK % ("{}", '"stop"'),
                  '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
                  '"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,'
                  '"total_tokens":4}}',
                  "[DONE]"),
    "anthropic": sse('{"type":"content_block_stop","index":0}',
                     '{"type":"message_delta","delta":{"stop_reason":"end_turn",'
                     '"stop_sequence":null},"usage":{"output_tokens":1}}',
                     '{"type":"message_stop"}'),
    "ollama": (_OLLAMA_LINE % ("", "true", ',"done_reason":"stop","prompt_eval_count":3,'
                                           '"eval_count":1')).encode(),
}
KEEPALIVE = {
    "openai": b": keep-alive\n\n",
    "anthropic": b'event: ping\ndata: {"type": "ping"}\n\n',
    "ollama": b"\n",
}
