"""POST /v1/responses: OpenAI's Responses API, stateless (protocols/openai_responses.py).

Codex talks to an Ollama of 0.13.4 or later over this route (`codex --oss`), which is why
/api/version may report that version. A stream is SSE with each event named (`event:` and
`data:`), ending with response.completed (or .incomplete, or .failed); no [DONE] follows, as
OpenAI sends none on this API. Errors before the first event are OpenAI's JSON errors.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tenshu.api.app import gateway_of, request_context
from tenshu.api.streaming import SSE_HEADERS, collect_unless_gone, first_event
from tenshu.core.errors import TenshuError
from tenshu.core.events import ChatEvent
from tenshu.gateway import RequestContext
from tenshu.protocols.openai_encode import ErrorResponse
from tenshu.protocols.openai_responses import ResponsesRequest, ResponseStream, parse_request

log = logging.getLogger("tenshu.api.responses")
router = APIRouter(tags=["openai"])
Context = Annotated[RequestContext, Depends(request_context)]
_ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 429, 503)}


@router.post("/v1/responses", responses={
    **_ERRORS, 200: {"description": "the response object, or with `stream: true` its events",
                     "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
async def create_response(body: ResponsesRequest, request: Request, ctx: Context):
    chat = parse_request(body)
    encoder = ResponseStream("resp_" + ctx.request_id.removeprefix("req_"), body,
                             int(time.time()))
    events = await first_event(gateway_of(request).chat(chat, ctx))
    if chat.stream:
        return StreamingResponse(_sse(events, encoder), media_type="text/event-stream",
                                 headers={**SSE_HEADERS, **ctx.response_headers()})
    collected = await collect_unless_gone(request, events)
    if collected is None:
        return Response(status_code=499)  # the client left; nobody reads this
    for event in collected:
        encoder.encode(event)
    return JSONResponse(encoder.response(), headers=ctx.response_headers())


async def _sse(events: AsyncIterator[ChatEvent], encoder: ResponseStream):
    try:
        async for event in events:
            for item in encoder.encode(event):
                yield _frame(item)
        if encoder.status == "in_progress":  # a backend that ended without finishing
            raise TenshuError("the model's reply ended before it finished")
    except TenshuError as exc:
        yield _frame(encoder.failed(exc))
    except Exception as exc:  # never leave the client with a stream that just stops
        log.exception("response %s failed", encoder.id)
        yield _frame(encoder.failed(TenshuError(f"internal error: {type(exc).__name__}")))
    finally:
        await events.aclose()  # closed early (client gone): the engine aborts the request


def _frame(item: dict) -> str:
    data = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
    return f"event: {item['type']}\ndata: {data}\n\n"
