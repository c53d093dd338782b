"""/tenshu/v1 for running the server: browser sessions, the models it serves and their health,
and the check of its configuration. JSON in OpenAI's error shape; in the OpenAPI document.

    GET    /tenshu/v1/sessions                  the caller's live web sessions (an admin with
                                                ?all=true: everyone's)
    DELETE /tenshu/v1/sessions/{id}             end one: the caller's own, or any for an admin
    GET    /tenshu/v1/models/loaded             admins: each model, route and embedder served,
                                                with the router's view of each deployment
    GET    /tenshu/v1/config/check              admins: what `tenshu config check` says of the
                                                running server's settings

Sessions are the store's (store/sessions.py), and whose a session is is decided in its SQL: a
member ending another user's session gets the 404 of a missing one. The users and keys that the
admin page also manages are in api/tenshu.py.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Query, Request

from tenshu.api.tenshu import _ERRORS, Context, _run
from tenshu.config.check import ConfigCheck, check
from tenshu.core.errors import NotFoundError, PermissionDeniedError
from tenshu.gateway import RequestContext
from tenshu.router.health import Deployment
from tenshu.router.policy import route_tiers
from tenshu.store.sessions import SessionStore

router = APIRouter(prefix="/tenshu/v1", tags=["tenshu"])


def sessions_of(request: Request) -> SessionStore:
    sessions = request.app.state.sessions
    if sessions is None:
        raise NotFoundError("this server has no state database, so no web sessions")
    return sessions


def _admin(ctx: RequestContext, to: str) -> None:
    if not ctx.principal.admin:
        raise PermissionDeniedError(f"only an admin may {to}")


# -- sessions -----------------------------------------------------------------------------------


@router.get("/sessions", responses=_ERRORS)
async def list_sessions(request: Request, ctx: Context, everyone: bool = Query(
        False, alias="all", description="an admin: every user's")) -> dict:
    if everyone and not ctx.principal.admin:
        raise PermissionDeniedError("only an admin may list everyone's sessions")
    found = await _run(sessions_of(request).list, ctx.principal, everyone=everyone)
    mine = getattr(getattr(request.state, "session", None), "id", None)
    return {"object": "list",
            "data": [{**s.to_json(), "current": s.id == mine} for s in found]}


@router.delete("/sessions/{session_id}", responses=_ERRORS)
async def revoke_session(session_id: str, request: Request, ctx: Context) -> dict:
    if not await _run(sessions_of(request).revoke, ctx.principal, session_id):
        raise NotFoundError(f"no live session {session_id!r}")
    return {"id": session_id, "object": "session.deleted", "deleted": True}


# -- what is served -----------------------------------------------------------------------------


@router.get("/models/loaded", responses=_ERRORS)
async def loaded_models(request: Request, ctx: Context) -> dict:
    _admin(ctx, "see the loaded models")
    return {"object": "list", "data": loaded(request.app.state.gateway)}


def loaded(gateway) -> list[dict]:
    """Each chat model with its deployments' health, each route with its tiers, each
    embedder. Read on the event loop: the router's counters live there, and nothing here
    waits."""
    router = gateway.router
    now = time.monotonic()
    data = []
    for name, group in router.deployments.items():
        spec, info = group[0].spec, group[0].backend.info
        data.append({
            "object": "model.loaded", "name": name, "kind": "chat", "backend": spec.backend,
            "locality": spec.locality, "context_window": info.context_window,
            "family": info.family, "parameters": info.parameters, "dtype": info.dtype,
            "tiers": [t for t, members in router.tiers.items() if name in members],
            # an upstream's i-th deployment is its i-th endpoint (api/server.py makes them so)
            "deployments": [_health(d, spec.endpoints[i] if i < len(spec.endpoints) else "", now)
                            for i, d in enumerate(group)]})
    for route in router.routes:
        data.append({
            "object": "model.loaded", "name": route.name, "kind": "route", "backend": "router",
            "locality": "", "context_window": router.context_window(route), "family": "route",
            "tier": route.tier, "also": list(route.models),
            "tiers": list(route_tiers(route, router.all_tiers))})
    for embedder in gateway.embedders.values():
        info = embedder.info
        data.append({
            "object": "model.loaded", "name": info.name, "kind": "embedding",
            "backend": "embedded", "locality": "local", "context_window": info.context_window,
            "family": info.family, "parameters": info.parameters, "dtype": info.dtype})
    return data


def _health(d: Deployment, endpoint: str, now: float) -> dict:
    """One deployment as the router sees it, and its backend's load."""
    if d.resting_until and now < d.resting_until:
        state = "cooling down"
    elif d.resting_until:
        state = "probing" if d.probing else "probe due"
    elif not d.can_take():
        state = "full"
    else:
        state = "healthy"
    stats = d.backend.stats()
    return {"name": d.name, "endpoint": _without_credentials(endpoint), "state": state,
            "in_flight": d.in_flight, "limit": d.limit or None, "limit_source": d.limit_source,
            "recent_failures": len(d.failures),
            "cooldown_s": round(d.resting_until - now, 1) if state == "cooling down" else 0.0,
            "running": stats.running, "waiting": stats.waiting,
            "kv_cache_usage": round(stats.kv_cache_usage, 4)}


def _without_credentials(url: str) -> str:
    """An endpoint as shown: any user:password@ in it left out."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=netloc))


# -- the configuration --------------------------------------------------------------------------


@router.get("/config/check", responses=_ERRORS)
async def config_check(request: Request, ctx: Context) -> dict:
    """The running server's settings as `tenshu config check` reports a file: they are valid
    (the server started with them), so this is the summary and the warnings."""
    _admin(ctx, "see the configuration")
    report = await _run(running_check, request.app.state)  # it looks at the disk
    return report.to_json()


def running_check(state) -> ConfigCheck:
    """`config check` of the running server: its settings, and the database it opened."""
    store = state.store.engine.url.render_as_string(hide_password=True) if state.store else None
    return check(state.settings, store=store)
