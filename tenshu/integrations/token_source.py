"""Fresh access tokens for connected integrations: what agent tools and jobs call.

    source = TokenSource(integrations, open_token_store(home))
    token = await source.access_token(user, "gmail")    # refreshed first if it expires soon
    response = await source.authorized_request(user, "gmail", "GET", url)
                                                        # a 401: one refresh, one retry
A token is refreshed `margin` seconds before it expires (half its lifetime before, for one
that lives less than twice the margin). A refresh that the provider refuses (a revoked grant,
invalid_grant) is ReconnectRequiredError, which tells the person to connect again.

Refreshes of one (user, integration) hold a lock, and each re-reads the store once it has it:
of callers that find the same token stale at once, one spends the refresh token and the others
take the token it got (a provider that rotates refresh tokens honours each once). The lock is
this process's: the server is the one process that refreshes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import httpx

from tenshu.core.errors import NotFoundError
from tenshu.integrations import oauth
from tenshu.integrations.oauth import Integration
from tenshu.integrations.token_store import TokenStore
from tenshu.integrations.tokens import Token

MARGIN_S = 60.0


class TokenSource:
    def __init__(self, integrations: Iterable[Integration], store: TokenStore, *,
                 margin: float = MARGIN_S, clock: Callable[[], float] = time.time):
        """`clock`: the time now, in seconds since the epoch (a test's, to let time pass)."""
        self._integrations = {i.name: i for i in integrations}
        self._store = store
        self.margin = margin
        self.clock = clock
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @property
    def integrations(self) -> list[Integration]:
        return list(self._integrations.values())

    @property
    def store(self) -> TokenStore:
        return self._store

    def integration(self, name: str) -> Integration:
        if name not in self._integrations:
            configured = ", ".join(self._integrations) or "none"
            raise NotFoundError(f"no integration named {name!r}; configured: {configured}")
        return self._integrations[name]

    async def token(self, user: str, name: str) -> Token:
        """The stored token of `user` for `name`, refreshed first if it expires soon: within
        the margin, or within half its lifetime for a token that lives less than twice that."""
        token = await self._stored(user, name)
        lifetime = (token.expires_at or 0) - token.obtained_at
        if token.expires_within(min(self.margin, lifetime / 2), now=self.clock()):
            token = await self.refresh(user, name, stale=token.access_token)
        return token

    async def access_token(self, user: str, name: str) -> str:
        return (await self.token(user, name)).access_token

    async def refresh(self, user: str, name: str, *, stale: str = "") -> Token:
        """A new token from the refresh token. `stale`: the access token the caller found
        expiring, or that the service answered 401 to; if the stored one is no longer it,
        another caller has refreshed meanwhile, and that token is returned as it is."""
        integration = self.integration(name)
        async with self._locks.setdefault((user, name), asyncio.Lock()):
            token = await self._stored(user, name)
            if stale and token.access_token != stale:
                return token
            fresh = await oauth.refresh(integration, token, now=self.clock())
            await asyncio.to_thread(self._store.put, user, name, fresh)
            return fresh

    async def authorized_request(self, user: str, name: str, method: str, url: str, *,
                                 client: httpx.AsyncClient | None = None,
                                 **kwargs) -> httpx.Response:
        """One HTTP request to the service with the bearer token. A 401 is answered by one
        refresh and one retry; a second 401 is returned as it is."""
        token = await self.token(user, name)
        response = await self._send(client, token, method, url, kwargs)
        if response.status_code != 401:
            return response
        token = await self.refresh(user, name, stale=token.access_token)
        return await self._send(client, token, method, url, kwargs)

    async def _send(self, client, token: Token, method: str, url: str, kwargs: dict):
        headers = {**kwargs.get("headers", {}), "Authorization": f"Bearer {token.access_token}"}
        options = {**kwargs, "headers": headers}
        if client is not None:
            return await client.request(method, url, **options)
        async with httpx.AsyncClient(timeout=oauth.TIMEOUT_S) as own:
            return await own.request(method, url, **options)

    async def _stored(self, user: str, name: str) -> Token:
        integration = self.integration(name)
        token = await asyncio.to_thread(self._store.get, user, name)
        if token is None:
            raise integration.reconnect("not connected", again=False)
        return token
