"""The security middleware: request ids, Host and Origin checks, and the body size limit.

A pure ASGI middleware, so streaming responses pass through untouched.

- Host: parsed strictly (a name, an IPv4 address or a bracketed IPv6 address, then an optional
  numeric port; nothing else), and sent once: a malformed or repeated Host is a 400. While the
  server is bound to loopback, a Host that names another host is refused: that is how a web page
  on an attacker's domain (DNS rebinding) would reach a local server. (An absolute-form request
  target's authority replaces the Host header before this runs: api/connection.py.)
- Origin: a browser request from an origin that is neither configured nor this server itself
  (scheme, host and port) is refused before it runs. Without an Origin, a browser's
  `Sec-Fetch-Site: cross-site` or `same-site` is refused too, unless it is a top-level
  navigation (a person following a link).
- Bodies larger than the limit are refused with 413, whether or not they announce their length
  (a body sent without one is read here, up to the limit, before the app sees it).
"""

from __future__ import annotations

import ipaddress
import re
import secrets

from tenshu.api.errors import error_response
from tenshu.config import LOOPBACK_HOSTS, ServerSettings
from tenshu.core.errors import InvalidRequestError, PermissionDeniedError, RequestTooLargeError

# A registered name or an IPv4 address (RFC 3986 reg-name, without percent-encoding or
# sub-delimiters, which no real host name uses), or a bracketed IPv6 literal; then :port.
_HOST = re.compile(r"(?:(?P<name>[A-Za-z0-9._-]+)|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])"
                   r"(?::(?P<port>[0-9]{1,5}))?")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def host_name(host: str) -> str | None:
    """The name part of a Host header, lower-cased (`[::1]:7311` -> `::1`, `LocalHost:7311` ->
    `localhost`); None when the header is not a host and an optional port, strictly."""
    m = _HOST.fullmatch(host)
    if m is None or (m["port"] is not None and int(m["port"]) > 65535):
        return None
    if m["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(m["ipv6"])
        except ValueError:
            return None
        return m["ipv6"].lower()
    return m["name"].lower()


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

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"request-id", request_id.encode()),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        refusal = self.refuse(scope)
        if refusal is not None:
            return await error_response(scope, refusal)(scope, receive, send_with_id)

        headers = dict(scope["headers"])
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

    def refuse(self, scope) -> InvalidRequestError | PermissionDeniedError | None:
        """Why the request must not reach the app, or None."""
        hosts = [v for k, v in scope["headers"] if k == b"host"]
        if len(hosts) != 1:
            return InvalidRequestError(
                "the request must carry exactly one Host header" if hosts else
                "the request has no Host header", field=None)
        raw = hosts[0].decode("latin-1")
        host = host_name(raw)
        if host is None:
            return InvalidRequestError(f"malformed Host header {raw[:100]!r}", field=None)
        if self.check_host and host not in self.hosts:
            return PermissionDeniedError(
                f"Host {host!r} is not allowed: the server is bound to loopback and accepts "
                "only localhost names (add the name to server.allowed_hosts to allow it)")
        if "*" in self.origins:
            return None
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if origin is not None:
            origin = origin.decode("latin-1")
            if origin not in self.origins and origin != f"{scope['scheme']}://{raw.lower()}":
                return PermissionDeniedError(
                    f"Origin {origin[:100]!r} is not allowed (configure server.cors_origins)")
            return None
        site = headers.get(b"sec-fetch-site", b"").lower()
        if site in (b"cross-site", b"same-site") and not _navigation(scope, headers):
            return PermissionDeniedError(
                "a request from another site's page is not allowed (Sec-Fetch-Site: "
                f"{site.decode('latin-1')}); configure server.cors_origins for a web app")
        return None

    def too_large(self) -> RequestTooLargeError:
        return RequestTooLargeError(
            f"the request body is larger than the limit of {self.limit // 1024 // 1024} MiB "
            "(server.max_body_mib)")


def _navigation(scope, headers: dict) -> bool:
    """A person following a link to a page here (never a script's request, never a POST)."""
    return headers.get(b"sec-fetch-mode") == b"navigate" and scope["method"] in ("GET", "HEAD")
