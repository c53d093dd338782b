"""The HTTP connection: uvicorn's httptools protocol, with the limits a server facing a network
needs before any request reaches the app.

    connections   at most `max_connections` open at once; one more is answered 503, closed
    headers       request line + headers at most `max_header_bytes` (431), complete within
                  `header_timeout` seconds of the connection opening or the request's first
                  byte (408, or closed silently when nothing came): slowloris, idle sockets
    body          complete within `body_timeout` seconds of the headers, plus one second per
                  `body_min_rate` bytes received (408): a slow body must keep a minimum rate
    keep-alive    uvicorn's own timer closes a connection idle between requests
    request target  an absolute-form target (`GET http://host/path`) names the host itself: its
                  authority replaces the Host header (RFC 9112 3.2.2), so the Host checks of
                  api/security.py see the host the request really names

uvicorn alone has none of the first three for httptools: a 10 MB header was buffered whole, and
connections that sent nothing, or a byte every few seconds, stayed open for minutes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from tenshu.api.errors import PROTOCOLS, protocol_of
from tenshu.config import ServerSettings
from tenshu.core.errors import TenshuError


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 512
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 20.0
    body_min_rate: float = 64 * 1024  # bytes per second

    @classmethod
    def of(cls, settings: ServerSettings) -> ConnectionLimits:
        return cls(settings.max_connections, int(settings.max_header_kib * 1024),
                   settings.header_timeout, settings.body_timeout,
                   settings.body_min_kib_per_s * 1024)


LINGER_SECONDS = 2.0  # after refusing a request, how long the rest of its input is dropped


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request already answered."""


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HttpToolsProtocol, limited (see the module's docstring). `protocol_for`
    makes the class uvicorn instantiates per connection, with its limits."""

    limits = ConnectionLimits()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._refused = False
        self._in_headers = True  # reading a request line and headers (or waiting for one)
        self._message_begun = False  # a request's first byte has come (and not its headers)
        self._header_bytes = 0
        self._body_bytes = 0
        self._body_start = 0.0
        self._timer = None
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, f"the server has {self.limits.max_connections} connections open, "
                         "its limit (server.max_connections); retry shortly")
            return
        self._arm(self.limits.header_timeout, self._headers_late)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # input after a refusal is dropped until the connection closes
        begun_before = self._in_headers and self._message_begun
        super().data_received(data)
        if self._refused or not self._in_headers or not begun_before:
            return
        # Inside a request's headers since an earlier read. The read that began the request is
        # not counted here (it may end the last request's body; on_headers_complete counts
        # exactly), so at most one read more than the limit is ever buffered.
        self._header_bytes += len(data)
        if self._header_bytes > self.limits.max_header_bytes:
            self._too_large_headers()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a callback that refused the request has answered it
            super().send_400_response(msg)

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._message_begun = True
        self._header_bytes = 0
        if self._timer is None:  # a later request on a kept-alive connection
            self._arm(self.limits.header_timeout, self._headers_late)

    def on_headers_complete(self) -> None:
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.limits.max_header_bytes:
            self._too_large_headers()
            raise _Refused
        if self.url[:1] not in (b"/", b"*"):
            self._absolute_form()
        self._in_headers = False
        self._message_begun = False
        self._body_bytes = 0
        self._body_start = self.loop.time()
        self._arm(self.limits.body_timeout, self._body_late)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        # A request answered before its body arrived (a 413, a 401) keeps its body timer until
        # then: the body must still come at the minimum rate, or the connection closes.
        self._disarm()
        super().on_message_complete()

    # -- limits -------------------------------------------------------------------------------

    def _absolute_form(self) -> None:
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            self._refuse(400, "the request target is not a valid URL")
            raise _Refused from None
        host = url.host or b""
        if b":" in host:
            host = b"[" + host + b"]"
        authority = host + (b":%d" % url.port if url.port else b"")
        self.headers[:] = [(n, v) for n, v in self.headers if n != b"host"]
        self.headers.append((b"host", authority))

    def _too_large_headers(self) -> None:
        self._refuse(431, f"the request's headers are larger than the limit of "
                     f"{self.limits.max_header_bytes // 1024} KiB (server.max_header_kib)")

    def _headers_late(self) -> None:
        self._timer = None
        if self._header_bytes or self._message_begun:
            self._refuse(408, f"the request's headers did not arrive within "
                         f"{self.limits.header_timeout:g} s (server.header_timeout)")
        else:
            self._refused = True
            self.transport.close()  # nothing came: nobody to answer

    def _body_late(self) -> None:
        self._timer = None
        limits = self.limits
        due = self._body_start + limits.body_timeout + self._body_bytes / limits.body_min_rate
        left = due - self.loop.time()
        if left > 0:  # it kept the minimum rate: wait until its allowance runs out
            self._arm(left, self._body_late)
            return
        self._refuse(408, f"the request's body did not arrive in time (server.body_timeout, "
                     f"then at least {limits.body_min_rate / 1024:g} KiB/s: "
                     "server.body_min_kib_per_s)")

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` (unless a response has started) and close the connection: first our
        side only, reading and dropping what the client still sends for a moment, so the answer
        is not lost to a reset (a close with unread input resets the connection)."""
        self._refused = True
        self._disarm()
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started or self._in_headers:
            self.transport.write(_response(status, message, self._path()))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._arm(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    def _path(self) -> str:
        try:
            return httptools.parse_url(self.url).path.decode("latin-1") if self.url else "/"
        except (httptools.HttpParserInvalidURLError, AttributeError):
            return "/"

    def _arm(self, seconds: float, callback) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer.cancel()
            self._timer = None


def protocol_for(limits: ConnectionLimits) -> type[LimitedHttpProtocol]:
    """The protocol class uvicorn makes per connection (uvicorn.Config(http=...))."""
    return type("TenshuHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})


def _response(status: int, message: str, path: str) -> bytes:
    """A whole HTTP response refusing the request, in the error format of the protocol its path
    belongs to; the connection closes after it."""
    error = TenshuError(message)
    error.status = status
    error.kind = {400: "invalid_request_error", 503: "overloaded_error"}.get(
        status, "request_too_large" if status == 431 else "timeout_error")
    body = json.dumps(PROTOCOLS[protocol_of({"path": path, "headers": []})].error_body(error))
    body = body.encode()
    return b"".join([
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
        *([b"retry-after: 1\r\n"] if status == 503 else []),
        b"\r\n", body,
    ])
