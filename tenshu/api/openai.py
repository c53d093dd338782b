"""The OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings.

Each route parses its body with protocols/openai.py, runs the request through the gateway and
encodes the events with protocols/openai_encode.py. Streams are SSE `data:` lines ending with
`data: [DONE]`; a failure after the first event is sent as an in-stream error, then [DONE].
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tenshu.api.context import gateway_of, request_context
from tenshu.api.streaming import SSE_HEADERS, collect_unless_gone, first_event, unless_gone
from tenshu.core.errors import InvalidRequestError, ModelNotFoundError, TenshuError
from tenshu.core.events import ChatEvent
from tenshu.gateway import RequestContext
from tenshu.protocols import anthropic
from tenshu.protocols.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    embedding_inputs,
    error_body,
    parse_chat_request,
    parse_completion_request,
)
from tenshu.protocols.openai_encode import (
    ChatCompletion,
    ChatStream,
    Completion,
    CompletionStream,
    EmbeddingList,
    ErrorResponse,
    ModelCard,
    ModelList,
    encode_chat_completion,
    encode_completion,
    encode_embeddings,
    encode_model,
    encode_model_list,
)

log = logging.getLogger("tenshu.api.openai")
router = APIRouter(tags=["openai"])
Context = Annotated[RequestContext, Depends(request_context)]  # authenticates the request

_ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 429, 503)}
_SSE = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
              "description": "JSON, or with `stream: true` server-sent events"}}


# -- models -------------------------------------------------------------------------------------


@router.get("/v1/models", response_model=ModelList, responses=_ERRORS)
async def list_models(request: Request, ctx: Context):
    infos = gateway_of(request).models()
    if "anthropic-version" in request.headers:  # Anthropic's SDK lists models at the same path
        q = request.query_params
        return JSONResponse(anthropic.encode_model_list(
            infos, before_id=q.get("before_id"), after_id=q.get("after_id"),
            limit=_limit(q.get("limit"))))
    return JSONResponse(encode_model_list(infos))


@router.get("/v1/models/{model:path}", response_model=ModelCard, responses=_ERRORS)
async def retrieve_model(model: str, request: Request, ctx: Context):
    infos = gateway_of(request).models()
    # `name:latest` is the model `name`, as chat and every other route take it (Ollama's
    # clients and people used to Ollama add the tag): the same card answers both.
    name = model.removesuffix(":latest")
    info = next((i for i in infos if i.name in (model, name)), None)
    if info is None:
        raise ModelNotFoundError(model, [i.name for i in infos])
    if "anthropic-version" in request.headers:
        return JSONResponse(anthropic.encode_model(info))
    return JSONResponse(encode_model(info))


def _limit(value: str | None) -> int:
    if value is None:
        return 20  # Anthropic's default page
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        raise InvalidRequestError("limit must be an integer from 1 to 1000", field="limit")
    return int(value)


# -- generation ---------------------------------------------------------------------------------


@router.post("/v1/chat/completions", response_model=ChatCompletion,
             responses={**_ERRORS, **_SSE})
async def chat_completions(body: ChatCompletionRequest, request: Request, ctx: Context):
    chat = parse_chat_request(body)
    id = "chatcmpl-" + ctx.request_id.removeprefix("req_")
    events = gateway_of(request).chat(chat, ctx)
    if not chat.stream:
        return await _respond(events, request, ctx,
                              lambda result: encode_chat_completion(result, id, chat.n))
    usage = bool(body.stream_options and body.stream_options.include_usage)
    return await _stream(events, ctx, ChatStream(id, chat.n, include_usage=usage))


@router.post("/v1/completions", response_model=Completion, responses={**_ERRORS, **_SSE})
async def completions(body: CompletionRequest, request: Request, ctx: Context):
    chat = parse_completion_request(body)
    id = "cmpl-" + ctx.request_id.removeprefix("req_")
    echo = chat.prompt if chat.echo else ""
    events = gateway_of(request).chat(chat, ctx)
    if not chat.stream:
        return await _respond(events, request, ctx, lambda result: encode_completion(
            result, id, chat.n, echo, chat.logprobs))
    usage = bool(body.stream_options and body.stream_options.include_usage)
    return await _stream(events, ctx, CompletionStream(id, chat.n, usage, echo, chat.logprobs))


@router.post("/v1/embeddings", response_model=EmbeddingList, responses=_ERRORS)
async def embeddings(body: EmbeddingRequest, request: Request, ctx: Context):
    embedded = await unless_gone(request, gateway_of(request).embed(body.model,
                                                                   embedding_inputs(body)))
    if embedded is None:
        return Response(status_code=499)  # the client left; the embedding was stopped
    vectors, tokens = embedded
    if body.dimensions is not None and vectors and body.dimensions != len(vectors[0]):
        raise InvalidRequestError(
            f"{body.model} makes {len(vectors[0])}-dimensional vectors and cannot shorten "
            f"them; leave dimensions out or set it to {len(vectors[0])}", field="dimensions")
    return JSONResponse(encode_embeddings(body.model, vectors, tokens, body.encoding_format))


# -- plumbing -----------------------------------------------------------------------------------


async def _respond(events: AsyncIterator[ChatEvent], request: Request, ctx: RequestContext,
                   encode) -> Response:
    """A non-streaming answer: every event, encoded as one JSON body (499 if the client left)."""
    collected = await collect_unless_gone(request, events)
    if collected is None:
        return Response(status_code=499)  # nginx's "client closed request"; no one reads it
    return JSONResponse(encode(collected), headers=ctx.response_headers())


async def _stream(events: AsyncIterator[ChatEvent], ctx: RequestContext,
                  encoder: ChatStream) -> Response:
    events = await first_event(events)  # a failure before the first event is a plain HTTP error
    return StreamingResponse(_sse(events, encoder), media_type="text/event-stream",
                             headers={**SSE_HEADERS, **ctx.response_headers()})


async def _sse(events: AsyncIterator[ChatEvent], encoder: ChatStream) -> AsyncIterator[str]:
    try:
        async for event in events:
            for chunk in encoder.encode(event):
                yield _data(chunk)
        for chunk in encoder.end():
            yield _data(chunk)
    except TenshuError as exc:
        yield _data(error_body(exc))
    except Exception as exc:  # never leave the client with a truncated stream
        log.exception("stream %s failed", encoder.id)
        yield _data(error_body(TenshuError(f"internal error: {type(exc).__name__}")))
    finally:
        await events.aclose()  # closed early (client gone): the engine aborts the request
    yield "data: [DONE]\n\n"


def _data(chunk: dict) -> str:
    return f"data: {json.dumps(chunk, ensure_ascii=False, separators=(',', ':'))}\n\n"
