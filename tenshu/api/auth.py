"""API keys: `Authorization: Bearer KEY` or `x-api-key: KEY`, checked the same way.

Both header forms go through one function, so no path can accept a key the other refuses. Keys
are required when the settings say so: always while the server listens beyond loopback (for its
whole life: revoking the last key locks the server, it never opens it), and on loopback as soon
as one key exists, unless `require_keys` forces either way. When both headers are sent they must
agree. Keys never appear in logs or error messages.

Where keys are not required, a valid key that is sent anyway still counts: the request is its
key's (in the audit log, and for a private key, kept on the machine); anything else that is
sent (a client's placeholder) is ignored.

A wrong key costs no more than a right one (the key store checks both against a snapshot of
the active keys). A client beyond this machine that sends `FailedLogins.limit` wrong keys within
a minute is told to slow down: its failures are answered 429 with Retry-After, not 401, until
the minute is over (a right key still passes: checking one costs nothing, so nobody sharing the
address is locked out). Clients on loopback are not counted: a program on this machine could
load it in other ways, and one misconfigured local client must not change what others see.
"""

from __future__ import annotations

import ipaddress
import math
import secrets
import threading
import time

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from tenshu.core.errors import AuthenticationError, OverloadedError, PermissionDeniedError
from tenshu.store import CacheMiss, KeyRecord
from tenshu.store.sessions import Session

# The web UI's session cookie (web/login.py sets it) and the header its scripts send the
# session's CSRF token in.
SESSION_COOKIE = "tenshu_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Probes that need no key: load balancers and Ollama clients call them before anything else.
# /ready names the models only to a request that may see them (api/health.py).
OPEN_PATHS = frozenset({"/health", "/ready", "/", "/api/version"})


class FailedLogins:
    """Failed authentications per client address, in fixed windows of `window` seconds. Bounded:
    past `max_clients` addresses, the oldest windows are forgotten first. Thread-safe (checks
    that miss the key cache run in the thread pool)."""

    def __init__(self, limit: int = 20, window: float = 60.0, max_clients: int = 10_000):
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._clients: dict[str, tuple[int, float]] = {}  # address -> (failures, window start)
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """Seconds until `client`'s failures are answered 401 again (0: they are now)."""
        with self._lock:
            failures, start = self._clients.get(client, (0, 0.0))
        left = start + self.window - time.monotonic()
        return left if failures > self.limit and left > 0 else 0.0

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            failures, start = self._clients.pop(client, (0, now))
            if now - start >= self.window:
                failures, start = 0, now
            if len(self._clients) >= self.max_clients:  # dicts keep insertion order: oldest
                for old in list(self._clients)[: self.max_clients // 10 or 1]:
                    del self._clients[old]
            self._clients[client] = (failures + 1, start)


class Authenticator:
    def __init__(self, keys, required: bool | None, failures: FailedLogins | None = None):
        self.keys = keys  # a store.KeyStore, or None when there is no state database
        self.required = required
        self.failures = failures or FailedLogins()

    def is_required(self, *, cached_only: bool = False) -> bool:
        if self.required is not None:
            return self.required
        return self.keys is not None and self.keys.any_active(cached_only=cached_only)

    def check(self, request: Request, *, cached_only: bool = False) -> KeyRecord | None:
        """The key's record, None for an anonymous request that is allowed; raises otherwise.
        With `cached_only`, raises store.CacheMiss where the answer needs the database."""
        if request.scope["path"] in OPEN_PATHS:
            return None
        if not self.is_required(cached_only=cached_only):
            return self._optional(request, cached_only)
        presented = _presented_keys(request)
        if not presented:
            raise AuthenticationError(
                "missing API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>` "
                "(create one with `tenshu keys create --name NAME`)")
        if len(set(presented)) > 1:
            raise AuthenticationError("Authorization and x-api-key carry different keys")
        record = (self.keys.verify(presented[0], cached_only=cached_only)
                  if self.keys is not None else None)
        if record is None:
            self._failed(_client(request))
            raise AuthenticationError("invalid API key (unknown or revoked)")
        return record

    def _failed(self, client: str) -> None:
        if not client or _loopback(client):
            return
        self.failures.failed(client)
        if wait := math.ceil(self.failures.wait(client)):
            raise OverloadedError(
                "too many failed authentication attempts from this address; check the key and "
                f"retry in {wait} s", retry_after=wait)

    def _optional(self, request: Request, cached_only: bool) -> KeyRecord | None:
        if self.keys is None or not self.keys.any_active(cached_only=cached_only):
            return None
        try:
            presented = set(_presented_keys(request))
        except AuthenticationError:
            return None
        if len(presented) != 1:
            return None
        return self.keys.verify(presented.pop(), cached_only=cached_only)


async def session_of(request: Request) -> Session | None:
    """The web UI session a browser's request carries, or None when it carries none (or sends
    an API key, which then decides). A cookie whose session has ended is a 401, and a change
    (any method but GET, HEAD, OPTIONS) without the session's CSRF token a 403: the cookie
    alone, which a browser attaches by itself, never makes a change."""
    token = request.cookies.get(SESSION_COOKIE)
    sessions = request.app.state.sessions
    if not token or sessions is None or _presented_keys(request):
        return None
    try:
        session = sessions.verify(token, cached_only=True)
    except CacheMiss:
        session = await run_in_threadpool(sessions.verify, token)
    if session is not None and session.via == "local" and await _keys_required(request):
        session = None  # opened while loopback needed no key; now that one does, it ends
    if session is None:
        raise AuthenticationError("your session has ended (logged out, revoked or expired): "
                                  "log in again at /login")
    if request.method not in SAFE_METHODS and not secrets.compare_digest(
            request.headers.get(CSRF_HEADER, ""), session.csrf):
        raise PermissionDeniedError(f"a change made from the web UI needs its CSRF token in "
                                    f"{CSRF_HEADER}; reload the page")
    return session


async def _keys_required(request: Request) -> bool:
    auth = request.app.state.auth
    try:
        return auth.is_required(cached_only=True)
    except CacheMiss:
        return await run_in_threadpool(auth.is_required)


def _client(request: Request) -> str:
    client = request.scope.get("client")
    return client[0] if client else ""


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _presented_keys(request: Request) -> list[str]:
    """Every key the request carries; a header sent twice counts twice (and must agree)."""
    keys = []
    for auth in request.headers.getlist("authorization"):
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationError("the Authorization header must be `Bearer <key>`")
        keys.append(value.strip())
    keys += [x_key.strip() for x_key in request.headers.getlist("x-api-key")]
    return [k for k in keys if k]
