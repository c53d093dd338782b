"""The Anthropic Messages routes: POST /v1/messages (JSON or SSE) and /v1/messages/count_tokens.

Each route parses the body with protocols/anthropic.py, runs it through the gateway and encodes
the ChatEvents back. Claude Code talks to these (with `?beta=true` and anthropic-beta headers,
which are accepted and need nothing). GET /v1/models answers Anthropic clients from the OpenAI
router, with protocols/anthropic.encode_model_list.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tenshu.api.context import gateway_of, request_context
from tenshu.api.streaming import SSE_HEADERS, collect_unless_gone, first_event, with_heartbeat
from tenshu.core.errors import TenshuError
from tenshu.core.events import ChatEvent, MessageStart
from tenshu.gateway import Gateway, RequestContext
from tenshu.protocols.anthropic import CountTokensRequest, MessagesRequest, parse_request
from tenshu.protocols.anthropic_encode import (
    PING,
    SSE_EVENT_SCHEMA,
    ErrorOut,
    MessageBuilder,
    MessageOut,
    StreamEncoder,
    TokenCountOut,
    error_event,
    sse,
)

log = logging.getLogger("tenshu.api")
router = APIRouter(tags=["anthropic"])
Context = Annotated[RequestContext, Depends(request_context)]
GatewayDep = Annotated[Gateway, Depends(gateway_of)]

# Anthropic pings while a stream is silent; clients and proxies time out idle connections, and a
# long prompt on CPU can take longer than that to prefill.
HEARTBEAT_SECONDS = 5.0

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (400, 401, 403, 404, 413, 429, 500, 503)
}
_STREAM = {
    "description": "the message, or with `stream: true` its server-sent events",
    "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
}


# -- routes -------------------------------------------------------------------------------------


@router.post("/v1/messages", response_model=MessageOut, responses={**_ERRORS, 200: _STREAM})
async def create_message(body: MessagesRequest, http: Request, ctx: Context,
                         gateway: GatewayDep):
    request = parse_request(body)
    message_id = "msg_" + ctx.request_id.removeprefix("req_")
    events = gateway.chat(request, ctx)
    if not body.stream:
        collected = await collect_unless_gone(http, events)
        if collected is None:
            return Response(status_code=499)  # the client left; the reply was cancelled
        builder = MessageBuilder(message_id)
        for event in collected:
            builder.add(event)
        return JSONResponse(builder.message(), headers=ctx.response_headers())
    events = await first_event(events)  # errors up front stay plain HTTP errors
    return StreamingResponse(
        _stream(events, StreamEncoder(message_id)),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **ctx.response_headers()},
    )


@router.post("/v1/messages/count_tokens", response_model=TokenCountOut, responses=_ERRORS)
async def count_tokens(body: CountTokensRequest, ctx: Context, gateway: GatewayDep):
    del ctx  # resolving it is what authenticates the request
    return {"input_tokens": await gateway.count_tokens(parse_request(body))}


async def _stream(events: AsyncIterator[ChatEvent], encoder: StreamEncoder):
    """SSE text for the events; a failure mid-stream becomes an `error` event that ends it."""
    try:
        async for event in with_heartbeat(events, HEARTBEAT_SECONDS):
            if event is None:
                yield sse(PING)
                continue
            for item in encoder.encode(event):
                yield sse(item)
            if isinstance(event, MessageStart):
                yield sse(PING)  # as Anthropic does, before the first block
    except TenshuError as exc:
        yield sse(error_event(exc))
    except Exception as exc:  # a bug: still end the stream the way clients understand
        log.exception("the Anthropic stream failed")
        yield sse(error_event(TenshuError(f"internal error: {type(exc).__name__}")))
    finally:
        await events.aclose()
