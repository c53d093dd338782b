"""/mcp's ASGI endpoint: the key check and the 405s here, then the MCP SDK's session manager over
tenshu's tools (api/mcp.py, where the protocol side and its security are described).

The SDK and the tools are imported and set up at the first request that reaches them, in a
worker thread, and the session manager then runs in a task of the server's lifespan
(`app.state.mcp.run()`, api/server.py) until it ends: they take about a second, which every
server's start paid before, used or not. This module imports nothing of the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from tenshu.api.auth import Authenticator
from tenshu.api.context import principal_of
from tenshu.api.errors import error_response
from tenshu.config import ServerSettings
from tenshu.core.errors import (
    AuthenticationError,
    InvalidRequestError,
    ShuttingDownError,
    TenshuError,
)
from tenshu.store import CacheMiss, Principal

MCP_PATH = "/mcp"
PRINCIPAL = "tenshu.mcp.principal"  # scope["state"]: whom the request acts for


class McpEndpoint:
    """The ASGI app at /mcp: the caller's key is checked (required on loopback too), then the
    SDK's transport serves the request, its tool calls acting for the key's user."""

    def __init__(self, settings: ServerSettings, auth: Authenticator):
        self.settings = settings
        # every route's key check and failed-login counting, with a key required regardless
        self.auth = Authenticator(auth.keys, True, auth.failures)
        self.manager = None  # the SDK's session manager, from the first request on
        self.running = False
        self.route: Route | None = None  # the app's route to this (install)
        self._tasks: anyio.abc.TaskGroup | None = None  # run()'s: the manager runs in it
        self._starting = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def run(self):
        """Serve /mcp while this is entered (the server's lifespan)."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            self.running = True
            try:
                yield
            finally:
                self.running = False
                self._tasks = None
                tasks.cancel_scope.cancel()  # the session manager's task, if one was started

    async def __call__(self, scope, receive, send) -> None:
        scope["route"] = self.route  # what /metrics labels requests by (FastAPI's routes set it)
        request = Request(scope, receive)
        try:
            if request.method != "POST":
                raise _not_allowed(request.method)
            if not self.running:
                raise ShuttingDownError("the MCP server is not running (starting or stopping)")
            principal = await self.principal(request)
            manager = await self.session_manager()
        except TenshuError as exc:
            response = error_response(scope, exc)
            if exc.status == 405:
                response.headers["Allow"] = "POST"
            if exc.status == 401:
                given = "authorization" in request.headers or "x-api-key" in request.headers
                response.headers["WWW-Authenticate"] = (
                    'Bearer realm="tenshu", error="invalid_token"' if given
                    else 'Bearer realm="tenshu"')
            return await response(scope, receive, send)
        scope.setdefault("state", {})[PRINCIPAL] = principal
        # host names are case-blind, as tenshu's check is; the SDK's compares exactly
        headers = [(k, v.lower() if k == b"host" else v) for k, v in scope["headers"]]
        await manager.handle_request({**scope, "headers": headers}, receive, send)

    async def principal(self, request: Request) -> Principal:
        try:
            key = self.auth.check(request, cached_only=True)
        except CacheMiss:
            key = await run_in_threadpool(self.auth.check, request)
        if key is None:  # no key store: no key can be valid
            raise AuthenticationError("invalid API key (unknown or revoked)")
        return await principal_of(request, key)

    async def session_manager(self):
        """The SDK's session manager, running in run()'s task group: made at the first call."""
        if self.manager is not None:
            return self.manager
        async with self._starting:
            if self.manager is None:
                from tenshu.api.mcp import session_manager  # the SDK: see the module's doc

                manager = await asyncio.to_thread(session_manager, self.settings)
                if self._tasks is None:
                    raise ShuttingDownError("the MCP server is not running (stopping)")
                await self._tasks.start(_serve, manager)
                self.manager = manager
        return self.manager


async def _serve(manager, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
    async with manager.run():
        task_status.started()
        await anyio.sleep_forever()


def _not_allowed(method: str) -> InvalidRequestError:
    """GET (the stream for messages from the server) and DELETE (ending a session) get the 405
    the MCP specification allows: every request here is answered on its own, in JSON."""
    error = InvalidRequestError(f"{method} is not allowed on {MCP_PATH}: send MCP requests with "
                                "POST (this server keeps no sessions and no event stream)")
    error.status = 405
    return error


def install(app, settings: ServerSettings, auth: Authenticator) -> McpEndpoint:
    """Mount the MCP endpoint at /mcp; the server's lifespan runs `app.state.mcp.run()`."""
    endpoint = McpEndpoint(settings, auth)
    endpoint.route = Route(MCP_PATH, endpoint, include_in_schema=False)
    app.router.routes.append(endpoint.route)
    app.state.mcp = endpoint
    return endpoint
