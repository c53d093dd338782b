"""The OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings.

Each route parses its body with protocols/openai.py, runs the request through the gateway and
encodes the events with protocols/openai_encode.py. Streams are SSE `data:` lines ending with
`data: [DONE]`; a failure after the first event is sent as an in-stream error, then [DONE].

/v1/completions takes several prompts at once, as vLLM does: each is its own request through
the gateway (its own route, audit record and request id, `-1`, `-2`, ... after the first),
run side by side, and the answer holds `n` choices per prompt, prompt i's as indexes
i*n .. i*n+n-1, with the usage summed; streamed, their chunks interleave as they come.
"""

from __future__ import annotations

import asyncio
import dataclasses
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
from tenshu.core.request import ChatRequest
from tenshu.gateway import RequestContext
from tenshu.protocols import anthropic
from tenshu.protocols.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    embedding_inputs,
    error_body,
    parse_chat_request,
    parse_completion_requests,
)
from tenshu.protocols.openai_encode import (
    ChatCompletion,
    ChatStream,
    Completion,
    CompletionStream,
    Echo,
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
from tenshu.router.trace import Trace

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
    chats = parse_completion_requests(body)
    id = "cmpl-" + ctx.request_id.removeprefix("req_")
    n, logprobs = chats[0].n, chats[0].logprobs
    echoes = [_echo(chat, scores=body.prompt_logprobs is not None) for chat in chats]
    gateway = gateway_of(request)
    if len(chats) == 1:
        events = gateway.chat(chats[0], ctx)
        if not body.stream:
            return await _respond(events, request, ctx, lambda result: encode_completion(
                result, id, n, echoes[0], logprobs))
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return await _stream(events, ctx, CompletionStream(id, n, usage, echoes[0], logprobs))
    contexts = [ctx, *(dataclasses.replace(ctx, request_id=f"{ctx.request_id}-{i}",
                                           trace=Trace(), answer_headers={})
                       for i in range(1, len(chats)))]
    if not body.stream:
        replies = await unless_gone(request, _all(
            _collect(gateway.chat(chat, c)) for chat, c in zip(chats, contexts, strict=True)))
        if replies is None:
            return Response(status_code=499)
        return JSONResponse(_merged([encode_completion(events, id, n, echo, logprobs)
                                     for events, echo in zip(replies, echoes, strict=True)], n),
                            headers=ctx.response_headers())
    streams = await _all(first_event(gateway.chat(chat, c))
                         for chat, c in zip(chats, contexts, strict=True))
    usage = bool(body.stream_options and body.stream_options.include_usage)
    encoders = [CompletionStream(id, n, usage, echo, logprobs) for echo in echoes]
    return StreamingResponse(_merged_sse(streams, encoders, n), media_type="text/event-stream",
                             headers={**SSE_HEADERS, **ctx.response_headers()})


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


# -- several prompts ----------------------------------------------------------------------------


def _echo(chat: ChatRequest, scores: bool) -> Echo:
    """What the prompt's choices repeat of it (the text the client sent, when it sent text)."""
    echo = chat.prompt if chat.echo and isinstance(chat.prompt, str) else chat.echo
    return Echo(echo, chat.logprobs, scores)


async def _all(works) -> list:
    """Every work's result; the first failure is raised and the rest are cancelled (their
    engine requests aborted, their streams closed)."""
    tasks = [asyncio.ensure_future(work) for work in works]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is None:
                result = task.result()
                if hasattr(result, "aclose"):
                    await result.aclose()
        raise
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _collect(events: AsyncIterator[ChatEvent]) -> list[ChatEvent]:
    try:
        return [event async for event in events]
    finally:
        await events.aclose()


def _merged(bodies: list[dict], n: int) -> dict:
    """One completion from each prompt's: choices renumbered prompt by prompt, usage summed."""
    merged = {**bodies[0], "choices": [], "usage": _summed([b["usage"] for b in bodies])}
    for i, body in enumerate(bodies):
        merged["choices"] += [{**c, "index": i * n + c["index"]} for c in body["choices"]]
    return merged


def _summed(usages: list[dict]) -> dict:
    total = {key: sum(u[key] for u in usages)
             for key in ("prompt_tokens", "completion_tokens", "total_tokens")}
    cached = sum(u.get("prompt_tokens_details", {}).get("cached_tokens", 0) for u in usages)
    return {**total, "prompt_tokens_details": {"cached_tokens": cached}}


async def _merged_sse(streams: list[AsyncIterator[ChatEvent]], encoders: list[CompletionStream],
                      n: int) -> AsyncIterator[str]:
    """The prompts' chunks as they come, renumbered; one usage chunk for all at the end."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int) -> None:
        try:
            async for event in streams[i]:
                for chunk in encoders[i].encode(event):
                    chunk["choices"] = [{**c, "index": i * n + c["index"]}
                                        for c in chunk["choices"]]
                    await queue.put(chunk)
            await queue.put(i)
        except Exception as exc:  # noqa: BLE001 (handed to the reader below)
            await queue.put(exc)

    tasks = [asyncio.ensure_future(pump(i)) for i in range(len(streams))]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if isinstance(item, int):
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield _data(item)
        ends = [chunk for encoder in encoders for chunk in encoder.end()]
        if ends:
            yield _data({**ends[0], "usage": _summed([c["usage"] for c in ends])})
    except TenshuError as exc:
        yield _data(error_body(exc))
    except Exception as exc:  # never leave the client with a truncated stream
        log.exception("stream %s failed", encoders[0].id)
        yield _data(error_body(TenshuError(f"internal error: {type(exc).__name__}")))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            await stream.aclose()  # the engine aborts what is still running
    yield "data: [DONE]\n\n"


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
