"""The security middleware: request ids, Host and Origin checks, and the body size limit.

A pure ASGI middleware, so streaming responses pass through untouched. While the server is bound
to loopback, a request whose Host header names another host is refused: that is how a web page
on an attacker's domain (DNS rebinding) would reach a local server. Browser requests from an
Origin that is not configured are refused before they run. Bodies larger than the limit are
refused with 413, whether or not they announce their length (a body sent without one is read
here, up to the limit, before the app sees it).
"""

from __future__ import annotations

import secrets

from tenshu.api.errors import error_response
from tenshu.config import LOOPBACK_HOSTS, ServerSettings
from tenshu.core.errors import PermissionDeniedError, RequestTooLargeError


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def host_name(host: str) -> str:
    """The name part of a Host header: `[::1]:7311` -> `::1`, `localhost:7311` -> `localhost`."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class SecurityMiddleware:
    def __init__(self, app, settings: ServerSettings):
        self.app = app
        self.limit = settings.max_body_bytes
        self.check_host = settings.loopback
        self.hosts = {h.lower() for h in (*LOOPBACK_HOSTS, *settings.allowed_hosts)}
        self.origins = set(settings.cors_origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        headers = dict(scope.get("headers") or [])

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"request-id", request_id.encode()),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        refusal = self.refuse(headers)
        if refusal is not None:
            return await error_response(scope, refusal)(scope, receive, send_with_id)

        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                return await error_response(scope, self.too_large())(scope, receive, send_with_id)
            return await self.app(scope, receive, send_with_id)
        # No announced length (chunked): read the body here, up to the limit, then replay it.
        body, more = [], True
        size = 0
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            body.append(message.get("body", b""))
            size += len(body[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await error_response(scope, self.too_large())(scope, receive, send_with_id)
        replay = [{"type": "http.request", "body": b"".join(body), "more_body": False}]

        async def replayed_receive():
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed_receive, send_with_id)

    def refuse(self, headers: dict) -> PermissionDeniedError | None:
        if self.check_host:
            host = host_name(headers.get(b"host", b"").decode("latin-1")).lower()
            if host not in self.hosts:
                return PermissionDeniedError(
                    f"Host {host!r} is not allowed: the server is bound to loopback and accepts "
                    "only localhost names (add the name to server.allowed_hosts to allow it)")
        origin = headers.get(b"origin")
        if origin is not None and "*" not in self.origins:
            origin = origin.decode("latin-1")
            if origin not in self.origins and not _same_origin(origin, headers):
                return PermissionDeniedError(
                    f"Origin {origin!r} is not allowed (configure server.cors_origins)")
        return None

    def too_large(self) -> RequestTooLargeError:
        return RequestTooLargeError(
            f"the request body is larger than the limit of {self.limit // 1024 // 1024} MiB "
            "(server.max_body_mib)")


def _same_origin(origin: str, headers: dict) -> bool:
    host = headers.get(b"host", b"").decode("latin-1")
    return origin.partition("://")[2] == host
