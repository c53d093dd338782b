"""/v1/responses: OpenAI's Responses API (protocols/openai_responses.py), with its stored state.

    POST   /v1/responses                      answer; `store` (default true) keeps the response
                                              as the caller's; `previous_response_id` continues
                                              one of theirs
    GET    /v1/responses/{id}                 a stored response object
    DELETE /v1/responses/{id}                 {"id", "object": "response.deleted", "deleted"}
    GET    /v1/responses/{id}/input_items     the items it answered (order desc by default,
                                              limit, after), as OpenAI lists them

A stored response is its asker's: another user's id answers exactly as a missing one (404), and
so does one made with `store: false`. A response is written once it is complete (after the last
event of a stream has been sent, before the connection closes, so a retrieve that follows finds
it), in the thread pool, never on the event loop.

Codex talks to an Ollama of 0.13.4 or later over this route (`codex --oss`), which is why
/api/version may report that version. A stream is SSE with each event named (`event:` and
`data:`), ending with response.completed (or .incomplete, or .failed); no [DONE] follows, as
OpenAI sends none on this API. Errors before the first event are OpenAI's JSON errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from tenshu.api.context import gateway_of, request_context
from tenshu.api.streaming import SSE_HEADERS, collect_unless_gone, first_event, named_event
from tenshu.core.errors import NotFoundError, TenshuError
from tenshu.core.events import ChatEvent
from tenshu.gateway import RequestContext
from tenshu.protocols.openai_encode import ErrorResponse
from tenshu.protocols.openai_responses import (
    ResponsesRequest,
    ResponseStream,
    conversation_items,
    parse_request,
)
from tenshu.store.responses import ResponseStore

log = logging.getLogger("tenshu.api.responses")
router = APIRouter(tags=["openai"])
Context = Annotated[RequestContext, Depends(request_context)]
_ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 429, 503)}


@router.post("/v1/responses", responses={
    **_ERRORS, 200: {"description": "the response object, or with `stream: true` its events",
                     "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
async def create_response(body: ResponsesRequest, request: Request, ctx: Context):
    store = responses_of(request)
    history: list[dict] = []
    if body.previous_response_id is not None:
        previous = (await run_in_threadpool(store.get, ctx.principal, body.previous_response_id)
                    if store is not None else None)
        if previous is None:
            raise _missing(body.previous_response_id, "Previous response",
                           field="previous_response_id")
        history = [*previous.input_items, *previous.response.get("output", [])]
    chat = parse_request(body, history)
    id = "resp_" + ctx.request_id.removeprefix("req_")
    keep = store is not None and body.store is not False
    encoder = ResponseStream(id, body, int(time.time()), store=keep)
    kept = _Keeper(store, ctx, encoder, conversation_items(history, body, id)) if keep else None
    events = await first_event(gateway_of(request).chat(chat, ctx))
    if chat.stream:
        return StreamingResponse(_sse(events, encoder, kept), media_type="text/event-stream",
                                 headers={**SSE_HEADERS, **ctx.response_headers()})
    collected = await collect_unless_gone(request, events)
    if collected is None:
        return Response(status_code=499)  # the client left; nobody reads this
    for event in collected:
        encoder.encode(event)
    if kept is not None:
        await kept.save()
    return JSONResponse(encoder.response(), headers=ctx.response_headers())


@router.get("/v1/responses/{response_id}", responses=_ERRORS)
async def get_response(response_id: str, request: Request, ctx: Context) -> dict:
    found = await _stored(request, ctx, response_id)
    return found.response


@router.delete("/v1/responses/{response_id}", responses=_ERRORS)
async def delete_response(response_id: str, request: Request, ctx: Context) -> dict:
    store = responses_of(request)
    if store is None or not await run_in_threadpool(store.delete, ctx.principal, response_id):
        raise _missing(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.get("/v1/responses/{response_id}/input_items", responses=_ERRORS)
async def list_input_items(response_id: str, request: Request, ctx: Context,
                           order: Literal["asc", "desc"] = "desc",
                           limit: Annotated[int, Query(ge=1, le=100)] = 20,
                           after: str | None = None) -> dict:
    store = responses_of(request)
    items = (await run_in_threadpool(store.input_items, ctx.principal, response_id)
             if store is not None else None)
    if items is None:
        raise _missing(response_id)
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    return {"object": "list", "data": page,
            "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None,
            "has_more": len(items) > limit}


def responses_of(request: Request) -> ResponseStore | None:
    """The stored responses (None on a server without a state database: nothing is kept)."""
    store = getattr(request.app.state, "store", None)
    return store.responses if store is not None else None


async def _stored(request: Request, ctx: Context, response_id: str):
    store = responses_of(request)
    found = (await run_in_threadpool(store.get, ctx.principal, response_id)
             if store is not None else None)
    if found is None:
        raise _missing(response_id)
    return found


def _missing(response_id: str, what: str = "Response", field: str | None = None) -> NotFoundError:
    """OpenAI's words for an id that is not there; another user's is said the same way."""
    exc = NotFoundError(f"{what} with id '{response_id[:100]}' not found.")
    exc.field = field  # the error's `param`, as OpenAI names it
    return exc


class _Keeper:
    """Writes one finished response to the store, as the asker's."""

    def __init__(self, store: ResponseStore, ctx: RequestContext, encoder: ResponseStream,
                 items: list[dict]):
        self.store, self.ctx, self.encoder, self.items = store, ctx, encoder, items

    async def save(self) -> None:
        if self.encoder.status not in ("completed", "incomplete"):
            return  # a failed reply is not kept (nothing to continue from)
        try:
            await run_in_threadpool(self.store.save, self.ctx.principal,
                                    self.encoder.response(), self.items)
        except Exception:  # the client has its answer; a lost record is logged, not raised
            log.exception("response %s could not be stored", self.encoder.id)


async def _sse(events: AsyncIterator[ChatEvent], encoder: ResponseStream,
               kept: _Keeper | None = None):
    try:
        async for event in events:
            for item in encoder.encode(event):
                yield named_event(item)
        if encoder.status == "in_progress":  # a backend that ended without finishing
            raise TenshuError("the model's reply ended before it finished")
        if kept is not None:  # the last event has gone out: the stream is not slowed
            await kept.save()
    except TenshuError as exc:
        yield named_event(encoder.failed(exc))
    except Exception as exc:  # never leave the client with a stream that just stops
        log.exception("response %s failed", encoder.id)
        yield named_event(encoder.failed(TenshuError(f"internal error: {type(exc).__name__}")))
    finally:
        await events.aclose()  # closed early (client gone): the engine aborts the request
