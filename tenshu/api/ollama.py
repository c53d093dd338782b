"""The Ollama API routes: parse with protocols/ollama.py, run through the gateway, encode.

    GET  /, /api/version          "Ollama is running", the version (no key needed: clients probe)
    GET  /api/tags, /api/ps       the models; those loaded now, with when they unload
    POST /api/show                one model's template, details and capabilities
    POST /api/pull                succeeds for a model served here; tenshu downloads nothing
    POST /api/chat, /api/generate NDJSON chunks by default, one JSON object with stream: false;
                                  with no prompt, Ollama's load call (keep_alive 0: unload)
    POST /api/embed, /api/embeddings
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from pydantic import BaseModel

from tenshu import __version__
from tenshu.api.context import gateway_of, request_context
from tenshu.api.streaming import SSE_HEADERS, collect_unless_gone, first_event, unless_gone
from tenshu.backends.embedded import EmbeddedBackend
from tenshu.core.errors import InvalidRequestError, ModelNotFoundError, TenshuError
from tenshu.core.events import ChatEvent
from tenshu.core.request import ChatRequest
from tenshu.gateway import RequestContext
from tenshu.protocols import ollama, ollama_encode

log = logging.getLogger("tenshu.api")
router = APIRouter(tags=["ollama"])
NDJSON = "application/x-ndjson"
# Every route but the probes authenticates; the context names the request for the gateway.
Context = Annotated[RequestContext, Depends(request_context)]


class JsonBodies:
    """ASGI middleware: bodies sent to /api/* are JSON whatever their Content-Type says.

    Ollama reads every body as JSON, and its documented examples post with `curl -d`, which
    labels the body form-encoded. Relabelling is safe: a browser page on another origin that
    posts a form is refused by the Origin check (api/security.py), which runs first.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


# Response documents, for /openapi.json (the encoders in protocols/ollama.py write them).


class OllamaError(BaseModel):
    error: str


class OllamaDetails(BaseModel):
    parent_model: str
    format: str
    family: str
    families: list[str] | None
    parameter_size: str
    quantization_level: str


class OllamaModel(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: OllamaDetails


class OllamaTags(BaseModel):
    models: list[OllamaModel]


class OllamaRunningModel(OllamaModel):
    expires_at: str
    size_vram: int
    context_length: int


class OllamaPs(BaseModel):
    models: list[OllamaRunningModel]


class OllamaShow(BaseModel):
    modelfile: str
    parameters: str
    template: str
    details: OllamaDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class OllamaPullStatus(BaseModel):
    status: str | None = None
    error: str | None = None


class OllamaVersion(BaseModel):
    version: str
    tenshu: str


class OllamaReply(BaseModel):
    model: str
    created_at: str
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    logprobs: list[dict[str, Any]] | None = None


class OllamaReplyMessage(BaseModel):
    role: Literal["assistant"]
    content: str
    thinking: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class OllamaChatReply(OllamaReply):
    message: OllamaReplyMessage


class OllamaGenerateReply(OllamaReply):
    response: str
    thinking: str | None = None
    context: list[int] | None = None


class OllamaEmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None


class OllamaEmbeddingsResponse(BaseModel):
    embedding: list[float]


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OllamaError, "description": why} for status, why in (
        (400, "bad input"), (401, "missing or invalid API key"), (404, "unknown model"),
        (413, "request too large"), (429, "queue full"),
        (503, "shutting down, or the model still loading"))}


def _streamed(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    ndjson = {"schema": {"type": "string", "description": f"one {model.__name__} per line"}}
    return {200: {"model": model, "content": {NDJSON: ndjson}}, **_ERRORS}


# Probes and listings.


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def root(request: Request) -> Response:
    # Ollama's clients probe / for this text; a person's browser (which asks for HTML) is sent
    # to the web UI instead.
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse("/chat", status_code=303)
    return PlainTextResponse("Ollama is running")


@router.get("/api/version", response_model=OllamaVersion)
@router.head("/api/version", include_in_schema=False)
async def version() -> dict:
    return {"version": ollama.OLLAMA_VERSION, "tenshu": __version__}


@router.get("/api/tags", response_model=OllamaTags, responses=_ERRORS)
@router.head("/api/tags", include_in_schema=False)
async def tags(request: Request, ctx: Context) -> dict:
    return {"models": [ollama_encode.model_entry(m) for m in gateway_of(request).models()]}


@router.get("/api/ps", response_model=OllamaPs, responses=_ERRORS)
async def ps(request: Request, ctx: Context) -> dict:
    """The embedded models loaded now (and the adapters served on them), each with when its
    keep_alive unloads it. Upstreams and the embedder are not loaded by this process's engine."""
    running = []
    for name, group in gateway_of(request).router.deployments.items():
        engine = _engine_of(group[0].backend)
        expires_in = engine.loader.expires_in() if engine is not None else None
        if expires_in is not None:
            info = replace(group[0].backend.info, name=name)
            running.append(ollama_encode.running_entry(info, expires_in))
    return {"models": running}


@router.post("/api/pull", response_model=None, responses=_streamed(OllamaPullStatus))
async def pull(body: ollama.PullBody, request: Request, ctx: Context) -> Response:
    """Ollama's download, as clients call it before using a model they did not find listed
    (Codex --oss does when the name it was given is not in /v1/models or /api/tags, e.g. with
    a tag). tenshu serves the models its configuration names and downloads none: a model it
    serves (`name:latest` included) is there already, so the pull succeeds at once; any other
    fails, in the stream as Ollama fails a pull (HTTP 200, then an error line, which Codex shows),
    or with a 404 for `stream: false`."""
    name = body.model_name
    try:
        gateway_of(request).model_info(name)
        lines = [{"status": "pulling manifest"}, {"status": "success"}]
    except ModelNotFoundError as exc:
        if body.stream is False:
            raise
        lines = [{"status": "pulling manifest"}, {"error": (
            f"{exc}. tenshu does not download models over the Ollama API; add the model to "
            "tenshu.toml ([[models]]) and restart the server")}]
    if body.stream is False:
        return JSONResponse(lines[-1])
    return Response(b"".join(_line(line) for line in lines), media_type=NDJSON)


@router.post("/api/show", response_model=OllamaShow, responses=_ERRORS)
async def show(body: ollama.ShowBody, request: Request, ctx: Context) -> dict:
    return ollama_encode.show_response(gateway_of(request).model_info(body.model_name))


# Generation.


@router.post("/api/chat", response_model=None, responses=_streamed(OllamaChatReply))
async def chat(body: ollama.ChatBody, request: Request, ctx: Context) -> Response:
    started = time.perf_counter_ns()
    if ollama.is_load_request(body):
        return JSONResponse(await _load_call(request, body, "chat"))
    return await _reply(request, ctx, ollama.parse_chat(body), body.model, "chat", started)


@router.post("/api/generate", response_model=None, responses=_streamed(OllamaGenerateReply))
async def generate(body: ollama.GenerateBody, request: Request, ctx: Context) -> Response:
    started = time.perf_counter_ns()
    gateway = gateway_of(request)
    if ollama.is_load_request(body):
        return JSONResponse(await _load_call(request, body, "generate"))
    chat_request = ollama.parse_generate(body)
    if body.context and not body.raw:  # Ollama, too, reads `context` only for templated prompts
        engine = _engine_of(gateway.backend_for(body.model))
        if engine is None:
            raise InvalidRequestError(
                f"context: {body.model} is served by an upstream, whose token ids tenshu does "
                "not know; send the conversation with /api/chat instead", field="context")
        await engine.prepare()  # its tokenizer (the first load's)
        turn = await asyncio.to_thread(engine.prompt_ids, chat_request)
        chat_request = ollama.continue_from(chat_request, body.context, turn,
                                            engine.vocab_size)
    context = None if body.raw else _context_ids(gateway, ctx, chat_request)
    return await _reply(request, ctx, chat_request, body.model, "generate", started, context)


# Ollama's `context` (deprecated, still read by clients of the conversational /api/generate):
# the token ids of the prompt and the answer, which the next request sends back to go on from
# them. The ChatEvents carry text, not ids, and only a model tenshu runs itself has a tokenizer
# here, so the ids are the prompt's as its engine tokenized it (exactly what it read: sent back,
# they hit the prefix cache) and the answer's text tokenized again, as Ollama builds it
# (tokenize(prompt + answer)). An upstream's reply keeps `context: []`.


async def _load_call(request: Request, body: ollama.ChatBody | ollama.GenerateBody,
                     kind: Literal["chat", "generate"]) -> dict:
    """Ollama's load call (no messages, no prompt): load the model and keep it `keep_alive`
    (the model's own when not sent); with keep_alive 0, unload it instead, once no request
    holds it. An upstream model is neither: the reply only says which was asked."""
    backend = gateway_of(request).backend_for(body.model)  # an unknown model is still a 404
    seconds = ollama.keep_alive(body.keep_alive)
    engine = _engine_of(backend)
    if engine is not None:
        await (engine.unload() if seconds == 0 else engine.load(seconds))
    return ollama_encode.load_reply(body.model, kind, "unload" if seconds == 0 else "load")


def _engine_of(backend) -> EmbeddedBackend | None:
    """The embedded engine behind a backend (a LoRA adapter runs on its base's), if any."""
    backend = getattr(backend, "base", backend)
    return backend if isinstance(backend, EmbeddedBackend) else None


def _context_ids(gateway, ctx: RequestContext, chat_request: ChatRequest):
    """A function of the answer's text giving the reply's `context`, for the backend that
    served (known once the gateway has routed the request); [] for an upstream."""

    async def context(answer: str) -> list[int]:
        engine = _engine_of(gateway.backends.get(ctx.trace.backend))
        if engine is None:
            return []

        def ids() -> list[int]:
            tokenizer = engine.tokenizer
            return [*engine.prompt_ids(chat_request),
                    *tokenizer.encode(answer, add_special_tokens=False)]

        return await asyncio.to_thread(ids)

    return context


async def _reply(request: Request, ctx: RequestContext, chat_request: ChatRequest, model: str,
                 kind: Literal["chat", "generate"], started: int,
                 context: Callable[[str], Awaitable[list[int]]] | None = None) -> Response:
    encoder = ollama_encode.ReplyEncoder(model, kind, started)
    # Failures before the first event (unknown model, prompt too long, queue full) become plain
    # HTTP errors with their status, as Ollama answers them.
    events = await first_event(gateway_of(request).chat(chat_request, ctx))
    if chat_request.stream:
        return StreamingResponse(_ndjson(events, encoder, context), media_type=NDJSON,
                                 headers={**SSE_HEADERS, **ctx.response_headers()})
    collected = await collect_unless_gone(request, events)
    if collected is None:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
    for event in collected:
        encoder.chunks(event)
    body = encoder.response()
    if context is not None:
        body["context"] = await context("".join(encoder.text))
    return JSONResponse(body, headers=ctx.response_headers())


async def _ndjson(events: AsyncIterator[ChatEvent], encoder: ollama_encode.ReplyEncoder,
                  context: Callable[[str], Awaitable[list[int]]] | None = None):
    """The NDJSON lines; `context` fills the last one's (generate). An error after the first
    line is Ollama's {"error": ...} line, and the stream ends there. Cancellation (the client
    left) is not caught: it closes the events, and the engine aborts the request."""
    try:
        async for event in events:
            for chunk in encoder.chunks(event):
                if chunk.get("done") and context is not None:
                    chunk["context"] = await context("".join(encoder.text))
                yield _line(chunk)
        if encoder.final is None:  # a backend that ended without finishing: never a silent end
            raise TenshuError("the model's reply ended before it finished")
    except TenshuError as exc:
        yield _line(ollama.error_body(exc))
    except Exception as exc:
        log.exception("%s failed while streaming", encoder.kind)
        yield _line(ollama.error_body(TenshuError(f"internal error: {type(exc).__name__}")))
    finally:
        await events.aclose()


def _line(chunk: dict) -> bytes:
    return json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


# Embeddings.


@router.post("/api/embed", response_model=OllamaEmbedResponse, responses=_ERRORS)
async def embed(body: ollama.EmbedBody, request: Request, ctx: Context) -> dict:
    started = time.perf_counter_ns()
    gateway = gateway_of(request)
    inputs = ollama.parse_embed(body)
    if not inputs:  # Ollama's load call: nothing to embed, but the model must exist
        gateway.embedder_for(body.model)
        return {"model": body.model, "embeddings": []}
    # `truncate` is not passed on: the embedder always truncates to its window (Ollama's
    # default); truncate: false with an over-long input is embedded truncated, not refused.
    embedded = await unless_gone(request, gateway.embed(body.model, inputs))
    if embedded is None:
        return Response(status_code=499)  # the client left; the embedding was stopped
    vectors, tokens = embedded
    return {"model": body.model,
            "embeddings": [ollama_encode.shorten(v, body.dimensions) for v in vectors],
            "total_duration": time.perf_counter_ns() - started, "load_duration": 0,
            "prompt_eval_count": tokens}


@router.post("/api/embeddings", response_model=OllamaEmbeddingsResponse, responses=_ERRORS)
async def embeddings(body: ollama.EmbeddingsBody, request: Request, ctx: Context) -> dict:
    gateway = gateway_of(request)
    if not body.prompt:  # the older endpoint's load call
        gateway.embedder_for(body.model)
        return {"embedding": []}
    embedded = await unless_gone(request, gateway.embed(body.model, [body.prompt]))
    if embedded is None:
        return Response(status_code=499)
    return {"embedding": embedded[0][0]}
