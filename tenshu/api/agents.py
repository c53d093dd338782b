"""/tenshu/v1/agents and /tenshu/v1/runs: start agent runs, follow them, approve or deny their
calls, cancel them. A run is its starter's: another user's answers as missing (404).

    GET  /tenshu/v1/agents                   the configured agents (model, tools, limits)
    POST /tenshu/v1/agents/{name}/runs       {"task": ..., "stream": false, "wait": 0}: 201 with
                                             the run; stream: its events over SSE until it
                                             ends; wait: seconds to wait for its end (or for
                                             an approval it needs)
    GET  /tenshu/v1/runs                     the caller's runs, newest first (status, agent)
    GET  /tenshu/v1/runs/{id}                a run and its steps
    GET  /tenshu/v1/runs/{id}/events         SSE: its steps so far, then live events to its end
    POST /tenshu/v1/runs/{id}/approve        {"reason": ...}: run the call it waits on
    POST /tenshu/v1/runs/{id}/deny           {"reason": ...}: refuse it (the model is told)
    POST /tenshu/v1/runs/{id}/cancel
    GET  /tenshu/v1/approvals                the caller's calls waiting for a decision
    GET  /tenshu/v1/mcp/servers              MCP servers and their pinned tool lists (admins)
    POST /tenshu/v1/mcp/servers/{name}/approve   accept a server's changed tool list (admins)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tenshu.agents.service import AgentService
from tenshu.api.streaming import SSE_HEADERS, named_event
from tenshu.api.tenshu import _ERRORS, Context, Limit, _run
from tenshu.core.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from tenshu.store.runs import RUN_STATUSES

router = APIRouter(prefix="/tenshu/v1", tags=["tenshu"])
_SSE = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
              "description": "the run's events"}}
HEARTBEAT_S = 15.0  # a comment line while a run is quiet (waiting for approval), so proxies
# and clients do not take a long wait for a dead connection


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str = Field(min_length=1, max_length=100_000)
    stream: bool = False
    wait: float = Field(0, ge=0, le=3600)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=2000)


def agents_of(request: Request) -> AgentService:
    service = getattr(request.app.state, "agents", None)
    if service is None:
        raise NotFoundError("this server runs no agents")
    return service


def agent_json(agent) -> dict:
    return {"object": "agent", "name": agent.name, "description": agent.description,
            "model": agent.model, "tools": list(agent.tools),
            "force_tools": list(agent.force_tools), "max_steps": agent.max_steps,
            "max_seconds": agent.max_seconds}


@router.get("/agents", responses=_ERRORS)
async def list_agents(request: Request, ctx: Context) -> dict:
    service = getattr(request.app.state, "agents", None)
    agents = service.agents() if service is not None else []
    return {"object": "list", "data": [agent_json(a) for a in agents]}


@router.post("/agents/{name}/runs", status_code=201, responses={**_ERRORS, **_SSE})
async def start_run(name: str, body: RunIn, request: Request, ctx: Context):
    service = agents_of(request)
    run = await service.create(ctx.principal, name, body.task)
    if body.stream:
        queue = service.subscribe(run.id)
        return _stream(service, run.id, queue, [named_event({"type": "run.created",
                                                        "run": run.to_json()})], status=201)
    if body.wait:
        run = await service.wait(ctx.principal, run.id, body.wait)
    return JSONResponse(run.to_json(), status_code=201)


@router.get("/runs", responses=_ERRORS)
async def list_runs(request: Request, ctx: Context, limit: Limit = 50,
                    status: str | None = Query(None, max_length=24),
                    agent: str | None = Query(None, max_length=64)) -> dict:
    if status is not None and status not in RUN_STATUSES:
        raise InvalidRequestError(f"status must be one of {', '.join(RUN_STATUSES)}",
                                  field="status")
    runs = await _run(request.app.state.store.runs.list, ctx.principal, status=status,
                      agent=agent, limit=limit)
    return {"object": "list", "data": [r.to_json() for r in runs]}


@router.get("/runs/{run_id}", responses=_ERRORS)
async def get_run(run_id: str, request: Request, ctx: Context) -> dict:
    store = request.app.state.store.runs
    run = await _run(store.get, ctx.principal, run_id)
    if run is None:
        raise NotFoundError(f"no run {run_id!r}")
    steps = await _run(store.steps, ctx.principal, run_id)
    return {**run.to_json(), "steps": [s.to_json() for s in steps]}


@router.get("/runs/{run_id}/events", responses={**_ERRORS, **_SSE})
async def run_events(run_id: str, request: Request, ctx: Context):
    service = agents_of(request)
    queue = service.subscribe(run_id)  # first, so nothing falls between the replay and live
    try:
        run = await service.get(ctx.principal, run_id)
        steps = await _run(service.runs.steps, ctx.principal, run_id)
    except BaseException:
        service.unsubscribe(run_id, queue)
        raise
    head = [named_event({"type": "run.created", "run": run.to_json(), "run_id": run_id})]
    head += [named_event({"type": "step.replayed", "run_id": run_id, **s.to_json()}) for s in steps]
    if run.ended or not service.live(run_id):
        service.unsubscribe(run_id, queue)
        head.append(named_event({"type": "run.completed", "run_id": run_id, "status": run.status,
                            "why": run.why, "result": run.result}))
        return _stream(service, run_id, None, head)
    return _stream(service, run_id, queue, head)


@router.post("/runs/{run_id}/approve", responses=_ERRORS)
async def approve(run_id: str, request: Request, ctx: Context, body: Decision | None = None):
    step = await agents_of(request).decide(ctx.principal, run_id, True,
                                           body.reason if body else "")
    return {"object": "agent.approval", "run_id": run_id, **step.to_json()}


@router.post("/runs/{run_id}/deny", responses=_ERRORS)
async def deny(run_id: str, request: Request, ctx: Context, body: Decision | None = None):
    step = await agents_of(request).decide(ctx.principal, run_id, False,
                                           body.reason if body else "")
    return {"object": "agent.approval", "run_id": run_id, **step.to_json()}


@router.post("/runs/{run_id}/cancel", responses=_ERRORS)
async def cancel(run_id: str, request: Request, ctx: Context) -> dict:
    run = await agents_of(request).cancel(ctx.principal, run_id)
    return run.to_json()


@router.get("/approvals", responses=_ERRORS)
async def approvals(request: Request, ctx: Context) -> dict:
    service = getattr(request.app.state, "agents", None)
    pending = await service.pending(ctx.principal) if service is not None else []
    return {"object": "list", "data": [
        {"object": "agent.approval", "run_id": run.id, "agent": run.agent, "task": run.task,
         **step.to_json()} for run, step in pending]}


@router.get("/mcp/servers", responses=_ERRORS)
async def mcp_servers(request: Request, ctx: Context) -> dict:
    if not ctx.principal.admin:
        raise PermissionDeniedError("only an admin may see and approve MCP servers")
    service = getattr(request.app.state, "agents", None)
    data = await _run(service.servers.status) if service is not None else []
    return {"object": "list", "data": data}


@router.post("/mcp/servers/{name}/approve", responses=_ERRORS)
async def approve_server(name: str, request: Request, ctx: Context) -> dict:
    if not ctx.principal.admin:
        raise PermissionDeniedError("only an admin may see and approve MCP servers")
    service = agents_of(request)
    if name not in service.servers.specs:
        raise NotFoundError(f"no MCP server named {name!r}")
    if not await _run(service.servers.approve, name):
        raise NotFoundError(f"MCP server {name} has not been seen yet: nothing to approve")
    return {"object": "mcp.server", "name": name, "state": "approved"}


def _stream(service: AgentService, run_id: str, queue, head: list[str],
            status: int = 200) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        try:
            for chunk in head:
                yield chunk
            while queue is not None:
                try:
                    event = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield b": waiting\n\n"
                    continue
                if event is None:
                    break
                yield named_event(event)
        finally:
            if queue is not None:
                service.unsubscribe(run_id, queue)
    return StreamingResponse(events(), status_code=status, media_type="text/event-stream",
                             headers=SSE_HEADERS)
