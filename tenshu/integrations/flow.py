"""Connecting an integration, and disconnecting it: the authorization code flow with PKCE
through a loopback redirect (RFC 8252 §7.3), as native apps do it; and revocation.

    token = await connect(integration, store, user, open_url=webbrowser.open)
    outcome = await disconnect(integration, store, user)    # revoked at the provider, removed
    count = await forget_user(integrations, store, user)    # a removed user's, all of them

tenshu listens on 127.0.0.1, on a port the system picks, for the one redirect the browser
makes after the person consents: http://127.0.0.1:PORT/callback?code=...&state=... The state
must be the one tenshu sent; the code is exchanged with its verifier; the token goes to the
token store; then the browser is shown a plain page that says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape
from urllib.parse import parse_qsl, urlsplit

from tenshu.core.errors import IntegrationError
from tenshu.integrations.oauth import (
    AuthorizationRequest,
    Integration,
    authorization_request,
    exchange,
    revoke,
)
from tenshu.integrations.token_store import FileTokenStore, TokenStore
from tenshu.integrations.tokens import Token

log = logging.getLogger("tenshu.integrations")

CALLBACK = "/callback"
TIMEOUT_S = 300.0  # for the person to sign in and consent


async def connect(integration: Integration, store: TokenStore, user: str, *,
                  open_url: Callable[[str], object], timeout: float = TIMEOUT_S) -> Token:
    """Send the person to the provider (`open_url` opens or prints the URL), wait up to
    `timeout` seconds for the redirect, exchange its code and keep the token for `user`."""
    async with LoopbackRedirect() as redirect:
        request = authorization_request(integration, redirect.redirect_uri)
        open_url(request.url)
        params = await redirect.answer(timeout, integration.name)
        try:
            token = await exchange(integration, request, _code(integration, request, params))
            await asyncio.to_thread(store.put, user, integration.name, token)
        except IntegrationError as exc:
            redirect.reply(400, f"tenshu could not connect {integration.name}: {exc}")
            raise
        redirect.reply(200, f"tenshu is connected to {integration.name}.")
    return token


@dataclass(frozen=True)
class Disconnected:
    removed: bool  # a stored token was deleted
    revoked: bool  # the provider revoked the grant
    problem: str = ""  # why it was not revoked: no revocation endpoint, or the provider's refusal


async def disconnect(integration: Integration, store: TokenStore, user: str) -> Disconnected:
    """Revoke the grant at the provider where it has a revocation endpoint (RFC 7009), and
    delete the stored token either way."""
    try:
        token = await asyncio.to_thread(store.get, user, integration.name)
    except IntegrationError as exc:  # a token that cannot be read cannot be revoked
        removed = await asyncio.to_thread(store.delete, user, integration.name)
        return Disconnected(removed, False, str(exc))
    if token is None:
        return Disconnected(False, False, "not connected")
    try:
        revoked = await revoke(integration, token)
        problem = "" if revoked else f"{integration.provider.name} has no revocation endpoint"
    except IntegrationError as exc:
        revoked, problem = False, str(exc)
    finally:
        await asyncio.to_thread(store.delete, user, integration.name)
    return Disconnected(True, revoked, problem)


async def forget_user(integrations: Iterable[Integration], store: TokenStore, user: str) -> int:
    """A removed user's grants: each configured integration's disconnected (revoked where the
    provider can, deleted here), and, in the token files, any left by integrations no longer
    configured. Returns how many tokens were deleted. (Tokens are keyed by the user's id, which
    a user made later may be given again: none may outlive the user.)"""
    removed = 0
    for integration in integrations:
        outcome = await disconnect(integration, store, user)
        removed += outcome.removed
        if outcome.removed and not outcome.revoked and integration.provider.revoke_url:
            log.warning("integration %r: the removed user's token was deleted but not revoked "
                        "at %s: %s", integration.name, integration.provider.name, outcome.problem)
    if isinstance(store, FileTokenStore):
        removed += await asyncio.to_thread(store.forget, user)
    return removed


def _code(integration: Integration, request: AuthorizationRequest, params: dict) -> str:
    """The code of the redirect's parameters, once its state is tenshu's own (RFC 6749
    §10.12: an answer to another request is refused)."""
    if not hmac.compare_digest(params.get("state", "").encode(), request.state.encode()):
        raise IntegrationError(f"integration {integration.name!r}: the browser came back with a "
                               "state that is not the one tenshu sent (an answer to another "
                               "sign-in, or forged); nothing was connected")
    if "error" in params:
        detail = params["error"] + (f": {params['error_description']}"
                                    if params.get("error_description") else "")
        raise IntegrationError(f"integration {integration.name!r}: the provider answered "
                               f"{detail}")
    if not params.get("code"):
        raise IntegrationError(f"integration {integration.name!r}: the redirect had no code")
    return params["code"]


class LoopbackRedirect:
    """An HTTP listener on 127.0.0.1 for the redirect of one authorization: the first request
    to /callback is the answer; its page waits for `reply`."""

    async def __aenter__(self) -> LoopbackRedirect:
        loop = asyncio.get_running_loop()
        self._answer: asyncio.Future[dict] = loop.create_future()
        self._verdict: asyncio.Future[tuple[int, str]] = loop.create_future()
        self._requests: set[asyncio.Task] = set()  # connections being served
        self._page: asyncio.Task | None = None  # the one that brought the answer
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.reply(500, "tenshu stopped waiting for this sign-in.")
        self._server.close()
        if self._page:  # the browser gets its page before the loop ends
            await asyncio.wait({self._page}, timeout=5)
        for task in list(self._requests):  # idle connections (a browser's preconnects)
            task.cancel()
        await self._server.wait_closed()

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}{CALLBACK}"

    async def answer(self, timeout: float, name: str) -> dict[str, str]:
        """The query parameters of the redirect, once it comes."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._answer), timeout)
        except TimeoutError:
            raise IntegrationError(f"integration {name!r}: no answer from the browser within "
                                   f"{timeout:g} s; run `tenshu integrations connect {name}` "
                                   "again") from None

    def reply(self, status: int, message: str) -> None:
        """What the browser's page says (the first reply counts)."""
        if not self._verdict.done():
            self._verdict.set_result((status, message))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._requests.add(task := asyncio.current_task())
        task.add_done_callback(self._requests.discard)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            parts = urlsplit(target)
            if method != "GET" or parts.path != CALLBACK:
                status, message = 404, "Not found."
            elif self._answer.done():
                status, message = 409, "This sign-in has already been answered."
            else:
                self._answer.set_result(dict(parse_qsl(parts.query)))
                self._page = task
                status, message = await self._verdict
            writer.write(_page(status, message))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError, ConnectionError):
            pass  # not a browser's request: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 409: "Conflict",
            500: "Internal Server Error"}


def _page(status: int, message: str) -> bytes:
    body = ("<!doctype html><meta charset=utf-8><title>tenshu</title>"
            f"<p>{escape(message)}</p><p>You can close this tab.</p>").encode()
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n"
            "Referrer-Policy: no-referrer\r\n\r\n")
    return head.encode() + body
