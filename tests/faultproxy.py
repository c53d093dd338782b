"""A fault-injecting HTTP reverse proxy for tests of the router and the upstream backends.

Tests put it between tenshu and an upstream (usually another tenshu server on loopback) and
make that upstream fail on demand, without mocks: the client under test sees a real socket
that refuses, answers 429/500/529, stalls, or drops a stream half-way.

    with FaultProxy(upstream.base_url) as proxy:
        ...                                         # point the client under test at proxy.url
        proxy.fail(529, retry_after=2, times=1)     # the next request is overloaded
        proxy.cut_after(2)                          # streams drop after two SSE events
        proxy.refuse()                              # the port stops listening ...
        proxy.reset()                               # ... and forwards again, same port
        assert not proxy.requests                   # nothing ever reached the upstream

It runs its own event loop in a background thread: a bare asyncio HTTP/1.1 server (keep-alive,
Content-Length or chunked bodies) that forwards with httpx and streams the answer back piece by
piece as it arrives, so faults can land between two events of a stream. Every request that
arrives is recorded in `requests`, faulted or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import re
import threading
from dataclasses import dataclass
from typing import Any

import httpx

# Headers that describe one hop and are not forwarded (RFC 9110 7.6.1), plus the ones the
# proxy sets itself on the upstream request.
_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                  "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"})
_SET_BY_PROXY = frozenset({"host", "content-length", "accept-encoding"})
_SSE_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")

_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error",
                     403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                     429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error"}
_OPENAI_ERRORS = {400: "invalid_request_error", 401: "authentication_error",
                  403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


@dataclass
class Request:
    """One request as it arrived at the proxy."""

    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]  # names in lower case
    json: Any  # the parsed body; None when there is no body or it is not JSON


@dataclass(frozen=True)
class _Fault:
    kind: str  # "fail", "cut" or "silence"
    status: int = 0
    retry_after: float | None = None
    body: dict | None = None
    events: int = 0


def error_body(path: str, status: int) -> dict:
    """The error body an upstream speaking the path's protocol sends with this status."""
    message = f"fault injected by the test proxy: HTTP {status}"
    if path.startswith("/v1/messages"):  # Anthropic
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        kind = _ANTHROPIC_ERRORS.get(status, fallback)
        return {"type": "error", "error": {"type": kind, "message": message}}
    if path.startswith("/api/"):  # Ollama
        return {"error": message}
    kind = _OPENAI_ERRORS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = "rate_limit_exceeded" if status == 429 else None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class FaultProxy:
    """A reverse proxy on 127.0.0.1 in front of `target`; a context manager."""

    def __init__(self, target: str, *, port: int = 0):
        self.target = target.rstrip("/")
        self.port = port
        self.requests: list[Request] = []
        self.latency = 0.0  # seconds to wait before answering or forwarding each request
        self._fault: _Fault | None = None
        self._times: int | None = None  # how many more requests the fault applies to
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._client: httpx.AsyncClient | None = None
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the controls, called from the test's thread ---------------------------------------------

    def reset(self, *, clear: bool = False) -> None:
        """Back to plain forwarding: no fault, no latency, listening. clear=True also empties
        `requests`."""
        with self._lock:
            self._fault, self._times = None, None
        self.latency = 0.0
        if clear:
            self.requests.clear()
        if self._server is None and self._loop is not None:
            self._call(self._listen())

    def refuse(self) -> None:
        """Close the listening socket and every open connection: connecting is refused until
        reset(), which listens again on the same port."""
        self._call(self._close_connections(stop_listening=True))

    def fail(self, status: int, *, retry_after: float | None = None, body: dict | None = None,
             times: int | None = None) -> None:
        """Answer with `status` (and Retry-After) and a JSON error body shaped for the path's
        protocol, or `body`; only for the next `times` requests when given, then forward."""
        self._set(_Fault("fail", status=status, retry_after=retry_after, body=body), times)

    def cut_after(self, events: int) -> None:
        """Forward the headers and the first `events` SSE events (or NDJSON lines), then close
        the connection without ending the response."""
        self._set(_Fault("cut", events=events), None)

    def silence_after(self, events: int) -> None:
        """Forward `events` events, then send nothing more and hold the connection open until
        the client goes away."""
        self._set(_Fault("silence", events=events), None)

    def _set(self, fault: _Fault, times: int | None) -> None:
        with self._lock:
            self._fault, self._times = fault, times

    def _take_fault(self) -> _Fault | None:
        """The fault for the request that just arrived, counting down `times`."""
        with self._lock:
            fault = self._fault
            if fault is not None and self._times is not None:
                self._times -= 1
                if self._times <= 0:
                    self._fault, self._times = None, None
            return fault

    # -- lifetime --------------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy",
                                        daemon=True)
        self._thread.start()
        self._call(self._listen())

    def close(self) -> None:
        if self._loop is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None

    def _call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _listen(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.target, trust_env=False,
                timeout=httpx.Timeout(None, connect=10.0), limits=httpx.Limits(
                    max_connections=None, max_keepalive_connections=32))
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_connections(self, stop_listening: bool) -> None:
        if stop_listening and self._server is not None:
            self._server.close()  # the listening socket; open connections are ended below
            self._server = None
        tasks = list(self._connections)
        for task, writer in list(self._connections.items()):
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _shutdown(self) -> None:
        await self._close_connections(stop_listening=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- one connection --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections[task] = writer
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, httpx.HTTPError):
            pass  # a side went away, or the client sent something that is not HTTP/1.1
        except asyncio.CancelledError:
            pass  # refuse() or close()
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> bool:
        """Read, record and answer one request; whether the connection stays open."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # closed between requests
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        fields = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:] if line]
        headers = {}
        for name, value in fields:
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        body = await _read_body(reader, headers)
        path, _, query = target.partition("?")
        self.requests.append(Request(method, path, query, headers, _json_or_none(body)))
        keep_alive = (headers.get("connection", "").lower() != "close"
                      and version.upper() == "HTTP/1.1")

        fault = self._take_fault()
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault is not None and fault.kind == "fail":
            payload = fault.body if fault.body is not None else error_body(path, fault.status)
            extra = [] if fault.retry_after is None else [("retry-after",
                                                           f"{fault.retry_after:g}")]
            await _write_json(writer, fault.status, payload, extra)
            return keep_alive
        forwarded = [(k, v) for k, v in fields
                     if k.lower() not in _HOP and k.lower() not in _SET_BY_PROXY]
        forwarded.append(("accept-encoding", "identity"))  # events must be readable in transit
        return await self._forward(method, target, forwarded, body, writer, reader, fault) \
            and keep_alive

    async def _forward(self, method: str, target: str, headers: list, body: bytes,
                       writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                       fault: _Fault | None) -> bool:
        request = self._client.build_request(method, target, headers=headers, content=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            await _write_json(writer, 502, {"error": {
                "message": f"the test proxy could not reach {self.target}: {exc!r}",
                "type": "server_error", "param": None, "code": None}})
            return True
        try:
            no_body = method == "HEAD" or response.status_code in (204, 304)
            chunked = "content-length" not in response.headers and not no_body
            out = [(k.decode("latin-1"), v.decode("latin-1"))
                   for k, v in response.headers.raw if k.decode("latin-1").lower() not in _HOP]
            if chunked:
                out.append(("transfer-encoding", "chunked"))
            writer.write(_head(response.status_code, out))
            await writer.drain()
            if no_body:
                return True
            sse = response.headers.get("content-type", "").startswith("text/event-stream")
            events = _Events(sse, fault.events) if fault is not None else None
            if events is not None and events.left == 0:
                return await self._after_events(fault, writer, reader)
            async for piece in response.aiter_raw():
                done = False
                if events is not None:
                    piece, done = events.feed(piece)
                if piece:
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                    await writer.drain()
                if done:
                    return await self._after_events(fault, writer, reader)
            if events is not None and events.pending:  # the stream ended before the fault
                tail = events.pending
                writer.write(b"%x\r\n%s\r\n" % (len(tail), tail) if chunked else tail)
            if chunked:
                writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        finally:
            await response.aclose()

    async def _after_events(self, fault: _Fault, writer: asyncio.StreamWriter,
                            reader: asyncio.StreamReader) -> bool:
        """The fault after the last event forwarded: close, or wait for the client to leave."""
        if fault.kind == "silence":
            await writer.drain()
            while await reader.read(65536):
                pass  # a client sends nothing more on this connection; b"" is its leaving
        return False  # the connection closes with the response unfinished


class _Events:
    """Lets bytes through up to the end of the n-th event (SSE) or line (anything else)."""

    def __init__(self, sse: bool, n: int):
        self.sse, self.left, self.pending = sse, n, b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(the bytes that may go now, whether the n-th event has gone with them)."""
        self.pending += data
        out = b""
        while self.left > 0:
            if self.sse:
                match = _SSE_BOUNDARY.search(self.pending)
                end = match.end() if match else -1
            else:
                end = self.pending.find(b"\n") + 1 or -1
            if end < 0:
                break
            out, self.pending = out + self.pending[:end], self.pending[end:]
            self.left -= 1
        return out, self.left == 0


async def _read_body(reader: asyncio.StreamReader, headers: dict) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            parts.append((await reader.readexactly(size + 2))[:-2])
    length = int(headers.get("content-length", "0"))
    return await reader.readexactly(length) if length else b""


def _json_or_none(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Overloaded" if status == 529 else "Error"
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _write_json(writer: asyncio.StreamWriter, status: int, payload: Any,
                      extra: list[tuple[str, str]] = ()) -> None:
    data = json.dumps(payload).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(data))),
               *extra]
    writer.write(_head(status, headers) + data)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
