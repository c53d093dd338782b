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
                         scheduler's), agents (runs, approvals, MCP servers' pins),
                         triggers (the context engine's events, deliveries, the inbox)
    web                  the browser UI's pages (tenshu/web), whose scripts call these same
                         routes with the session cookie instead of a key
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from tenshu import __version__, web
from tenshu.api import (
    adapters,
    admin,
    agents,
    anthropic,
    arena,
    docs,
    errors,
    health,
    jobs,
    mcp_endpoint,
    ollama,
    openai,
    responses,
    stats,
    tenshu,
    triggers,
)
from tenshu.api import memory as memory_api
from tenshu.api.auth import Authenticator
from tenshu.api.metrics import Metrics, MetricsMiddleware
from tenshu.api.security import SecurityMiddleware
from tenshu.config import ServerSettings
from tenshu.gateway import Gateway


def create_app(settings: ServerSettings, gateway: Gateway, auth: Authenticator,
               metrics: Metrics, store=None, memory=None) -> FastAPI:
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
    app.state.context = None  # context.ContextEngine, set by the server: /tenshu/v1/context
    app.state.integrations = None  # integrations.TokenSource, set by the server when configured
    for module in (health, docs, openai, responses, anthropic, ollama, tenshu, memory_api, stats,
                   arena, admin, adapters, jobs, agents, triggers):
        app.include_router(module.router)
    mcp_endpoint.install(app, settings, auth)  # /mcp: tenshu's MCP server (app.state.mcp)
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
