"""The ASGI app: one router per protocol behind the security, metrics and error layers.

    SecurityMiddleware   request id, Host/Origin checks, body size limit
    MetricsMiddleware    requests by route and status; the access log (a line per request)
    CORSMiddleware       only when origins are configured
    routers              health, docs, openai, responses (OpenAI's Responses API),
                         anthropic, ollama  (each parses, calls the
                         gateway, encodes; no logic of their own), and /tenshu/v1 over the
                         store: tenshu (the caller's record, users and keys), memory, stats
                         (the dashboards), arena, admin (sessions, models, the config check),
                         adapters (LoRA adapters loaded and unloaded at run time), jobs (the
                         scheduler's), agents (runs, approvals, MCP servers' pins)
    web                  the browser UI's pages (tenshu/web), whose scripts call these same
                         routes with the session cookie instead of a key
"""

from __future__ import annotations

import json
import re

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from tenshu import __version__
from tenshu.api import errors
from tenshu.api.auth import Authenticator, session_of
from tenshu.api.errors import protocol_of
from tenshu.api.metrics import Metrics, MetricsMiddleware
from tenshu.api.security import SecurityMiddleware
from tenshu.config import ServerSettings
from tenshu.core.errors import AuthenticationError, InvalidRequestError
from tenshu.gateway import Gateway, RequestContext
from tenshu.store import CacheMiss, KeyRecord, Principal


def create_app(settings: ServerSettings, gateway: Gateway, auth: Authenticator,
               metrics: Metrics, store=None, memory=None) -> FastAPI:
    from tenshu import web
    from tenshu.api import (
        adapters,
        admin,
        agents,
        anthropic,
        arena,
        docs,
        health,
        jobs,
        ollama,
        openai,
        responses,
        stats,
        tenshu,
    )
    from tenshu.api import mcp as mcp_api
    from tenshu.api import memory as memory_api

    app = FastAPI(
        title="tenshu",
        version=__version__,
        description="OpenAI, Anthropic and Ollama APIs over local models.",
        # FastAPI's own pages need no key and load Swagger UI from a CDN: docs.py replaces them
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.gateway = gateway
    app.state.auth = auth
    app.state.metrics = metrics
    app.state.store = store  # the state database (store.Store), for /tenshu/v1
    app.state.users = store.users if store is not None else None
    app.state.memory = memory  # memory.Memory, for /tenshu/v1/memory
    app.state.sessions = store.sessions if store is not None else None  # the web UI's
    errors.install(app)
    app.state.adapters = None  # learn/serving.AdapterService, set by the server
    app.state.scheduler = None  # jobs.Scheduler, set by the server: /tenshu/v1/jobs
    app.state.agents = None  # agents.AgentService, set by the server: /tenshu/v1/agents, runs
    for module in (health, docs, openai, responses, anthropic, ollama, tenshu, memory_api, stats,
                   arena, admin, adapters, jobs, agents):
        app.include_router(module.router)
    mcp_api.install(app, settings, auth)  # /mcp: tenshu's MCP server (app.state.mcp)
    if store is not None:
        web.install(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["request-id", "x-request-id", "Retry-After", "x-tenshu-route",
                            "x-tenshu-backend", "x-tenshu-fallbacks", "x-tenshu-conversation",
                            "x-tenshu-turn", "x-tenshu-sources", "x-tenshu-adapter"],
        )
    app.add_middleware(ollama.JsonBodies)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(SecurityMiddleware, settings=settings)
    return app


async def authenticate(request: Request) -> KeyRecord | None:
    """The request's key (None: anonymous, and allowed, or a web UI session's: then
    `request.state.session` holds it); raises when it may not go on.

    The key is checked against the cache on the event loop, and only a miss (a database read)
    goes to a thread, so most requests do not hop through the thread pool."""
    if (session := await session_of(request)) is not None:
        request.state.session = session
        return None
    auth = request.app.state.auth
    try:
        return auth.check(request, cached_only=True)
    except CacheMiss:
        return await run_in_threadpool(auth.check, request)


async def principal_of(request: Request, key: KeyRecord | None) -> Principal:
    """Whom the request acts for: its key's user, its web session's, or (a key-less request,
    which only loopback without keys allows) the local owner."""
    if (session := getattr(request.state, "session", None)) is not None:
        return session.principal()
    if key is not None:
        if key.user_name is None:
            raise AuthenticationError("the API key's user no longer exists")
        return Principal(key.user_id, key.user_name, key.user_role or "member",
                         record=key.record or key.user_record or "request", key_id=key.id)
    users = request.app.state.users
    if users is None:
        return Principal(0, "owner", "admin")
    try:
        owner = users.owner(cached_only=True)
    except CacheMiss:
        owner = await run_in_threadpool(users.owner)
    return Principal.of(owner)


async def request_context(request: Request) -> RequestContext:
    """A FastAPI dependency: authenticate the request, check its text, and describe it for the
    gateway."""
    key = await authenticate(request)
    principal = await principal_of(request, key)
    multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
    if request.method in ("POST", "PATCH") and not multipart:  # a form's files are bytes
        _check_text(await request.body())  # read once: FastAPI has it already
    route = getattr(request.scope.get("route"), "path", request.url.path)
    return RequestContext(
        request_id=request.scope["state"]["request_id"],
        protocol=protocol_of(request.scope),
        route=route,
        key_id=key.id if key else None,
        tool_choice=request.headers.get("x-tenshu-tool-choice") or None,
        key_name=key.name if key else None,
        key_private=key.private if key else False,
        key_memory=tuple(key.memory.split(",")) if key and key.memory else (),
        # Without the API key: nothing past authentication needs it, and headers passed on (to
        # an upstream, into a log) must never carry it.
        headers={name.lower(): value for name, value in request.headers.items()
                 if name.lower() not in ("authorization", "x-api-key")},
        principal=principal,
    )


# A UTF-16 surrogate (U+D800-U+DFFF), as a JSON escape or as the bytes UTF-8 would give it
# (json.loads decodes bodies with "surrogatepass"): the only ways a body can carry a string
# that is not text.
_SURROGATE = re.compile(rb"\\u[dD][89abcdefABCDEF]|\xed[\xa0-\xbf]")


def _check_text(body: bytes) -> None:
    """Refuse a body whose strings hold a lone surrogate (`"\\ud800"`): JSON lets it through,
    but it is no character, and every tokenizer, encoder and database after this would fail
    on it. A valid pair (an emoji written as two escapes) is one character and passes."""
    if not _SURROGATE.search(body):
        return
    try:
        data = json.loads(body)
    except ValueError:
        return  # not JSON: the body's own validation says so
    if (where := _lone_surrogate(data)) is not None:
        raise InvalidRequestError(
            f"{where or 'the body'}: the text holds a lone UTF-16 surrogate (such as \\ud800), "
            "which is not a character; send valid Unicode", field=where or None)


def _lone_surrogate(value, where: str = "") -> str | None:
    """The path (`messages.0.content`) of the first string holding a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        path = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and _lone_surrogate(key) is not None:
            return path
        if (found := _lone_surrogate(item, path)) is not None:
            return found
    return None


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway
