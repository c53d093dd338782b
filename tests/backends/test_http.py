"""The HTTP client under the upstream backends (backends/http.py), against raw servers on
loopback: lines come out whole however the body is cut, connections are reused once a reply
has been read to its end (as every backend's decoder does), a proxy named in the environment is used (and NO_PROXY honoured), and
every failure below HTTP is one of the module's own errors."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import pytest

from tenshu.backends.http import ConnectError, ConnectionLost, HttpClient
from tenshu.core.messages import Message
from tenshu.core.request import ChatRequest
from tests.backends.conftest import (
    FAST,
    FIRST_TOKEN,
    MODEL,
    PROTOCOLS,
    REST,
    backend_for,
    check_sequence,
    collect,
    free_port,
    loopback_server,
    read_request,
)


@asynccontextmanager
async def keepalive_server(body_parts: list[bytes]):
    """A server that answers every request on a connection with a chunked body sent as
    `body_parts` (one chunk each, flushed apart), and keeps the connection open. Yields its
    URL and the request heads received, one list per connection accepted."""
    connections: list[list[bytes]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        heads: list[bytes] = []
        connections.append(heads)
        while True:
            heads.append((await read_request(reader))[0])
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            for part in body_parts:
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
                await asyncio.sleep(0.01)  # separate reads on the client's side
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with loopback_server(serve) as url:
        yield url, connections


async def lines_of(client: HttpClient, url: str) -> list[str]:
    async with client.stream("POST", url, json={"q": 1}) as response:
        assert response.status == 200
        return [line async for line in response.lines()]


async def test_lines_come_out_whole_however_the_body_is_cut():
    long = "x" * 300_000  # past aiohttp's own readline limit
    parts = [b"data: caf", "é".encode()[:1], "é".encode()[1:] + b"\r\n", b"\r", b"\n",
             b"data: " + long.encode()[:100_000], long.encode()[100_000:] + b"\n",
             b"last line without an end"]
    client = HttpClient(connect_timeout=2)
    try:
        async with keepalive_server(parts) as (url, _):
            assert await lines_of(client, url) == [
                "data: café", "", "data: " + long, "last line without an end"]
    finally:
        await client.aclose()


async def test_a_connection_serves_the_next_request_once_a_reply_was_read_to_its_end():
    client = HttpClient(connect_timeout=2)
    try:
        async with keepalive_server([b"data: a\n\n", b"data: [DONE]\n\n"]) as (url, conns):
            for _ in range(3):
                assert await lines_of(client, url + "/v1/chat/completions") == [
                    "data: a", "", "data: [DONE]", ""]
        assert len(conns) == 1 and len(conns[0]) == 3
        assert b"\r\nUser-Agent: tenshu/" in conns[0][0]  # upstream logs say who called
    finally:
        await client.aclose()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_every_backend_reads_its_reply_to_the_end_so_one_connection_serves_all(protocol):
    request = ChatRequest(MODEL, [Message.of("user", "hello")], max_tokens=8)
    parts = [FIRST_TOKEN[protocol], REST[protocol]]
    async with keepalive_server(parts) as (url, conns), \
            backend_for(protocol, url, timeouts=FAST) as backend:
        for _ in range(3):
            check_sequence(await collect(backend, request))
    assert len(conns) == 1 and len(conns[0]) == 3


async def test_a_proxy_named_in_the_environment_is_used_unless_no_proxy_exempts_the_host(
        monkeypatch):
    async with keepalive_server([b"via proxy\n"]) as (proxy, conns):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.delenv("http_proxy", raising=False)
        monkeypatch.setenv("NO_PROXY", "localhost")
        monkeypatch.delenv("no_proxy", raising=False)
        client = HttpClient(connect_timeout=2)
        try:
            # An unresolvable host: only through the proxy can this answer at all.
            assert await lines_of(client, "http://upstream.invalid:8000/v1/x") == ["via proxy"]
            assert conns[0][0].startswith(b"POST http://upstream.invalid:8000/v1/x HTTP/1.1\r\n")
            # NO_PROXY names localhost: straight there, where nothing listens.
            with pytest.raises(ConnectError):
                await lines_of(client, f"http://localhost:{free_port()}/v1/x")
        finally:
            await client.aclose()


async def test_failures_below_http_are_the_modules_own_errors():
    client = HttpClient(connect_timeout=2)
    try:
        with pytest.raises(ConnectError, match="127.0.0.1"):
            await lines_of(client, f"http://127.0.0.1:{free_port()}/")
        with pytest.raises(ConnectError, match="not an http"):
            await lines_of(client, "ftp://127.0.0.1/")

        async def not_http(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(not_http, "127.0.0.1", 0)
        async with server:
            with pytest.raises(ConnectionLost):
                await lines_of(client, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/")
    finally:
        await client.aclose()
