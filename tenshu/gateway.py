"""The gateway: the one pipeline every protocol's request goes through.

api/<protocol>.py parses a request into a ChatRequest and hands it here; the gateway finds the
model, admits the request (or refuses it when the queue is full or the server is draining),
runs it on its backend, observes it for /metrics and queues its audit record, and hands the
ChatEvent stream back to be encoded. Routing across tiers (router/) will slot in where
`backend_for` picks the backend today.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from tenshu.backends.base import Backend, Embedder, ModelInfo
from tenshu.core.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
    ShuttingDownError,
    TenshuError,
)
from tenshu.core.events import BlockDelta, ChatEvent, MessageFinish
from tenshu.core.messages import ToolResultBlock
from tenshu.core.request import ChatRequest, ToolChoice


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    protocol: str  # "openai", "anthropic" or "ollama"
    route: str
    key_id: int | None = None
    # the x-tenshu-tool-choice header: "required" or a tool's name (see force_tool_choice)
    tool_choice: str | None = None


def force_tool_choice(request: ChatRequest, choice: str | None) -> None:
    """Apply the x-tenshu-tool-choice header, for agents that cannot set tool_choice themselves
    (Claude Code) in front of a local model that will not call tools on its own.

    "required" forces one call of any offered tool, a tool's name forces that tool. It applies
    only to turns that start from the user's words: right after tool results the model answers
    freely, so an agent's loop still ends. A request that does not offer the tool, or whose
    client asked for no calls (tool_choice none), is left alone.
    """
    if not choice or not request.tools or not request.messages:
        return
    if request.tool_choice is not None and request.tool_choice.mode == "none":
        return
    if any(isinstance(b, ToolResultBlock) for b in request.messages[-1].content):
        return
    if choice == "required":
        request.tool_choice = ToolChoice("required", parallel=False)
    elif choice in {t.name for t in request.tools}:
        request.tool_choice = ToolChoice("tool", choice)


class Observer(Protocol):
    """What the gateway reports for /metrics (api/metrics.py implements it)."""

    def request_done(self, model: str, usage_in: int, usage_out: int, cached: int,
                     ttft_s: float | None, per_token_s: float | None) -> None: ...


class AuditSink(Protocol):
    def record(self, **fields: Any) -> None: ...


class Gateway:
    def __init__(
        self,
        backends: dict[str, Backend],
        embedders: dict[str, Embedder] | None = None,
        *,
        max_queue: int = 256,
        observer: Observer | None = None,
        audit: AuditSink | None = None,
    ):
        if not backends:
            raise ValueError("the gateway needs at least one model")
        self.backends = backends
        self.embedders = embedders or {}
        self.max_queue = max_queue
        self.observer = observer
        self.audit = audit
        self.in_flight = 0
        self.draining = False

    # -- models -------------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return [b.info for b in self.backends.values()] + [e.info for e in self.embedders.values()]

    def model_info(self, model: str) -> ModelInfo:
        """Any served model (chat or embedding) by name; raises ModelNotFoundError."""
        name = _canonical(model)
        found = self.backends.get(name) or self.embedders.get(name)
        if found is None:
            raise ModelNotFoundError(model, [m.name for m in self.models()])
        return found.info

    def backend_for(self, model: str) -> Backend:
        backend = self.backends.get(_canonical(model))
        if backend is None:
            if _canonical(model) in self.embedders:
                raise InvalidRequestError(
                    f"{model!r} is an embedding model; it cannot chat", field="model")
            raise ModelNotFoundError(model, list(self.backends))
        return backend

    def embedder_for(self, model: str) -> Embedder:
        embedder = self.embedders.get(_canonical(model))
        if embedder is None:
            if _canonical(model) in self.backends:
                raise InvalidRequestError(
                    f"{model!r} is a chat model; embeddings come from "
                    f"{', '.join(self.embedders) or 'no model here'}", field="model")
            raise ModelNotFoundError(model, list(self.embedders))
        return embedder

    # -- requests -----------------------------------------------------------------------------

    def admit(self) -> None:
        """Refuse a request the server cannot take now (raises); check before any work."""
        if self.draining:
            raise ShuttingDownError("the server is shutting down; retry against another one")
        stats = [b.stats() for b in self.backends.values()]
        if self.in_flight >= sum(s.max_running for s in stats) + self.max_queue:
            raise OverloadedError(
                f"{self.queue_depth()} requests are already waiting for the engine (the queue "
                f"holds {self.max_queue}); retry shortly",
                retry_after=1,
            )

    def queue_depth(self) -> int:
        """Requests admitted but not yet running in an engine."""
        running = sum(b.stats().running for b in self.backends.values())
        return max(0, self.in_flight - running)

    async def chat(self, request: ChatRequest, ctx: RequestContext) -> AsyncIterator[ChatEvent]:
        backend = self.backend_for(request.model)
        force_tool_choice(request, ctx.tool_choice)
        self.admit()
        self.in_flight += 1
        start = time.perf_counter()
        first = last = None
        usage = None
        error: TenshuError | None = None
        try:
            async for event in backend.chat(request):
                if isinstance(event, BlockDelta) and (event.text or event.partial_json):
                    last = time.perf_counter()
                    first = first or last
                elif isinstance(event, MessageFinish):
                    usage = _add_usage(usage, event)
                yield event
        except TenshuError as exc:
            error = exc
            raise
        except BaseException:  # the client left (cancelled), or a bug
            error = _ClientClosed()
            raise
        finally:
            self.in_flight -= 1
            self._done(request, ctx, start, first, last, usage, error)

    async def count_tokens(self, request: ChatRequest) -> int:
        return await self.backend_for(request.model).count_tokens(request)

    async def embed(self, model: str, inputs: list[str]) -> tuple[list[list[float]], int]:
        embedder = self.embedder_for(model)
        if self.draining:
            raise ShuttingDownError("the server is shutting down; retry against another one")
        return await embedder.embed(inputs)

    # -- shutdown -----------------------------------------------------------------------------

    def begin_drain(self) -> None:
        """Stop admitting requests; those in flight go on."""
        self.draining = True

    async def abort_in_flight(self) -> None:
        """End every running request now (their streams close with a shutdown error)."""
        for backend in self.backends.values():
            await backend.abort_all()

    def close(self) -> None:
        for backend in [*self.backends.values(), *self.embedders.values()]:
            backend.close()

    # -- bookkeeping --------------------------------------------------------------------------

    def _done(self, request, ctx, start, first, last, usage, error) -> None:
        usage_in, usage_out, cached = usage or (0, 0, 0)
        ttft = first - start if first else None
        per_token = (last - first) / (usage_out - 1) if first and usage_out > 1 else None
        if self.observer is not None:
            self.observer.request_done(request.model, usage_in, usage_out, cached, ttft, per_token)
        if self.audit is not None:
            self.audit.record(
                request_id=ctx.request_id, key_id=ctx.key_id, protocol=ctx.protocol,
                route=ctx.route, model=request.model, status=error.status if error else 200,
                input_tokens=usage_in, output_tokens=usage_out,
                ttft_ms=round(ttft * 1000, 3) if ttft is not None else None,
                duration_ms=round((time.perf_counter() - start) * 1000, 3),
                error_kind=error.kind if error else None,
            )


class _ClientClosed(TenshuError):
    """For the audit log: the client went away before the reply ended (nginx's 499)."""

    status = 499
    kind = "aborted"


def _canonical(model: str) -> str:
    """Ollama clients add a tag (`name:latest`); tenshu's names carry none."""
    return model.removesuffix(":latest")


def _add_usage(total: tuple[int, int, int] | None, finish: MessageFinish) -> tuple[int, int, int]:
    u = finish.usage
    if total is None:
        return u.input_tokens, u.output_tokens, u.cached_tokens
    return total[0], total[1] + u.output_tokens, total[2]
