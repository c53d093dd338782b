"""/tenshu/v1/context and /tenshu/v1/inbox: what the context engine noticed and delivered, and
the notifications its runs left for a person.

    GET    /tenshu/v1/context/sources            the configured sources (admins)
    GET    /tenshu/v1/context/events             the latest events, newest first (admins;
                                                 ?source=NAME)
    GET    /tenshu/v1/context/triggers           the caller's triggers (an admin's: all)
    GET    /tenshu/v1/context/deliveries         the caller's deliveries (?status=failed: what
                                                 failed for good; ?trigger=NAME)
    POST   /tenshu/v1/context/deliveries/{event_id}/{trigger}/retry
                                                 put a failed delivery back in line
    GET    /tenshu/v1/inbox                      the caller's notifications (?unread=true)
    POST   /tenshu/v1/inbox/{id}/read            mark one read
    POST   /tenshu/v1/inbox/read                 mark every unread one read
    DELETE /tenshu/v1/inbox/{id}                 remove one

Events and sources are the server's (the admin's configuration made them). A delivery and a
notification are their owner's: another user's answers as missing (404).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request, Response

from tenshu.api.tenshu import _ERRORS, Context, Limit, _run
from tenshu.core.errors import ConflictError, NotFoundError, PermissionDeniedError
from tenshu.store.sql import utcnow

router = APIRouter(prefix="/tenshu/v1", tags=["tenshu"])
Status = Literal["pending", "running", "succeeded", "failed"]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]  # what the database's integer keys can hold


def _settings(request: Request):
    return request.app.state.settings.context


def _store(request: Request):
    store = getattr(request.app.state, "store", None)
    if store is None:
        raise NotFoundError("this server keeps no state database")
    return store.context


def _admin(ctx) -> None:
    if not ctx.principal.admin:
        raise PermissionDeniedError("only an admin may see the context engine's sources and "
                                    "events")


@router.get("/context/sources", responses=_ERRORS)
async def list_sources(request: Request, ctx: Context) -> dict:
    _admin(ctx)
    return {"object": "list", "data": [
        {"name": s.name, "type": s.type, "path": s.path or None, "url": s.url or None,
         "every": s.every or None, "cron": s.cron or None, "at": s.at or None}
        for s in _settings(request).sources]}


@router.get("/context/events", responses=_ERRORS)
async def list_events(request: Request, ctx: Context, source: str | None = None,
                      limit: Limit = 50) -> dict:
    _admin(ctx)
    found = await _run(_store(request).events, source, limit)
    return {"object": "list", "data": [e.to_json() for e in found]}


@router.get("/context/triggers", responses=_ERRORS)
async def list_triggers(request: Request, ctx: Context) -> dict:
    owner = await _run(request.app.state.store.users.owner)
    mine = []
    for t in _settings(request).triggers:
        if ctx.principal.admin or (t.owner or owner.name) == ctx.principal.name:
            mine.append({"name": t.name, "source": t.source, "agent": t.agent,
                         "owner": t.owner or owner.name, "kinds": list(t.kinds),
                         "max_attempts": t.max_attempts, "notify": list(t.notify)})
    return {"object": "list", "data": mine}


@router.get("/context/deliveries", responses=_ERRORS)
async def list_deliveries(request: Request, ctx: Context, status: Status | None = None,
                          trigger: str | None = None, limit: Limit = 50) -> dict:
    found = await _run(_store(request).deliveries, ctx.principal, status, trigger, limit)
    return {"object": "list", "data": [d.to_json() for d in found]}


@router.post("/context/deliveries/{event_id}/{trigger}/retry", responses=_ERRORS)
async def retry_delivery(event_id: Id, trigger: str, request: Request, ctx: Context) -> dict:
    store = _store(request)
    found = await _run(store.delivery, ctx.principal, event_id, trigger)
    if found is None:
        raise NotFoundError(f"no delivery of event {event_id} by trigger {trigger!r}")
    engine = getattr(request.app.state, "context", None)
    now = engine.clock() if engine is not None else utcnow()  # due by the engine's clock
    if not await _run(store.retry, ctx.principal, event_id, trigger, now):
        raise ConflictError(f"the delivery is {found.status}: only a failed one is retried")
    retried = (await _run(store.delivery, ctx.principal, event_id, trigger)).to_json()
    if engine is not None:  # after the read: the answer is the retry's, not the next attempt's
        engine.wake()
    return retried


@router.get("/inbox", responses=_ERRORS)
async def list_inbox(request: Request, ctx: Context, unread: bool = False,
                     limit: Limit = 50) -> dict:
    store = _store(request)
    items = await _run(store.inbox, ctx.principal, unread, limit)
    return {"object": "list", "data": [i.to_json() for i in items],
            "unread": await _run(store.unread, ctx.principal)}


@router.post("/inbox/read", responses=_ERRORS)
async def read_all(request: Request, ctx: Context) -> dict:
    return {"read": await _run(_store(request).mark_all_read, ctx.principal)}


@router.post("/inbox/{item_id}/read", responses=_ERRORS)
async def read_item(item_id: Id, request: Request, ctx: Context) -> dict:
    if not await _run(_store(request).mark_read, ctx.principal, item_id):
        raise NotFoundError(f"no notification {item_id}")
    return {"id": item_id, "read": True}


@router.delete("/inbox/{item_id}", status_code=204, responses=_ERRORS)
async def delete_item(item_id: Id, request: Request, ctx: Context) -> Response:
    if not await _run(_store(request).remove, ctx.principal, item_id):
        raise NotFoundError(f"no notification {item_id}")
    return Response(status_code=204)
