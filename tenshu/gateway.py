"""The gateway: the one pipeline every protocol's request goes through.

api/<protocol>.py parses a request into a ChatRequest and hands it here; the gateway finds the
candidates (router/), admits the request (or refuses it while the server is draining), runs it
on the first candidate that answers and has room (each deployment's limit bounds its queue),
falling back while nothing has been sent, observes it for /metrics, queues its audit record
with its trace, and hands the ChatEvent stream back to be encoded.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from tenshu.backends.base import Backend, Embedder
from tenshu.config.routing import RouteSpec
from tenshu.core.errors import (
    ContextLengthError,
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
    ShuttingDownError,
    TenshuError,
    UpstreamError,
)
from tenshu.core.events import BlockDelta, ChatEvent, MessageFinish, MessageStart
from tenshu.core.messages import ToolResultBlock
from tenshu.core.models import ModelInfo
from tenshu.core.request import ChatRequest, ToolChoice, estimate_tokens
from tenshu.router.health import Deployment, should_fall_back
from tenshu.router.policy import route_tiers
from tenshu.router.router import Router
from tenshu.router.trace import Attempt, Trace

if TYPE_CHECKING:
    from tenshu.conversations import Recording
    from tenshu.memory.stage import Retrieval
    from tenshu.store.conversations import TurnRecord
    from tenshu.store.people import Principal

CONVERSATION_HEADER = "x-tenshu-conversation"  # the stage's (tenshu/conversations.py HEADER)
REWIND_HEADER = "x-tenshu-rewind"  # answer again from before a turn (regenerate, edit)


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    protocol: str  # "openai", "anthropic" or "ollama"
    route: str
    key_id: int | None = None
    # the x-tenshu-tool-choice header: "required" or a tool's name (see force_tool_choice)
    tool_choice: str | None = None
    key_name: str | None = None
    key_private: bool = False  # the key's setting: its requests never leave the machine
    key_memory: tuple[str, ...] = ()  # the key's setting: collections to retrieve from
    headers: dict[str, str] = field(default_factory=dict)  # the request's, names in lower case
    trace: Trace = field(default_factory=Trace)  # filled in as the request is routed
    principal: Principal | None = None  # whom the request acts for (its key's user, or owner)
    answer_headers: dict[str, str] = field(default_factory=dict)  # set by the stages

    def response_headers(self) -> dict[str, str]:
        """What the response tells about the request: its route and backend, its
        conversation and turn."""
        return {**self.trace.headers(), **self.answer_headers}


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
    """Takes each request's audit record, and the conversation turn it answered, if it was
    recorded (store/writer.py's RecordWriter)."""

    def record(self, *, turn: TurnRecord | None = None, **fields: Any) -> None: ...


class ConversationStages(Protocol):
    """What the gateway asks of conversations (tenshu/conversations.py implements it)."""

    async def open(self, request: ChatRequest, principal: Principal | None, asked: str | None,
                   request_id: str) -> Recording | None: ...


class MemoryStages(Protocol):
    """What the gateway asks of memory (memory/stage.py implements it)."""

    async def retrieve(self, request: ChatRequest, ctx: RequestContext,
                       route_memory: tuple[str, ...], *, window: int, prompt_tokens: int,
                       count: Callable[[ChatRequest], Awaitable[int]] | None = None
                       ) -> Retrieval | None: ...


class Gateway:
    def __init__(
        self,
        router: Router,
        embedders: dict[str, Embedder] | None = None,
        *,
        observer: Observer | None = None,
        audit: AuditSink | None = None,
        conversations: ConversationStages | None = None,
        memory: MemoryStages | None = None,
    ):
        if not router.deployments:
            raise ValueError("the gateway needs at least one model")
        self.router = router
        # every deployment's backend by its name (a model's name, [i] for replicas)
        self.backends: dict[str, Backend] = {
            d.name: d.backend for group in router.deployments.values() for d in group}
        self.embedders = embedders or {}
        self.observer = observer
        self.audit = audit
        self.conversations = conversations
        self.memory = memory
        self.in_flight = 0
        # time.time() when a request last ended: whether the server is idle, for the job
        # scheduler's energy policy (jobs/policy.py's SystemProbe, with in_flight)
        self.last_request_at: float | None = None
        self.draining = False
        self.created = int(time.time())

    # -- models -------------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """Every name a client may ask for: models, routes, embedders."""
        chat = [replace(group[0].backend.info, name=name)
                for name, group in self.router.deployments.items()]
        routes = [self._route_info(r) for r in self.router.routes]
        return chat + routes + [e.info for e in self.embedders.values()]

    def load_states(self) -> dict[str, str]:
        """Each embedded model's load: "loading", "ready", "unloaded" (released while idle,
        loaded again by its next request) or "failed: why" (backends/loading.py)."""
        return {name: group[0].backend.loader.state
                for name, group in self.router.deployments.items()
                if getattr(group[0].backend, "loader", None) is not None}

    def loaded(self) -> bool:
        """Whether every embedded model has loaded once (it may have been unloaded since)."""
        return all(group[0].backend.loader.has_loaded
                   for group in self.router.deployments.values()
                   if getattr(group[0].backend, "loader", None) is not None)

    def _route_info(self, route: RouteSpec, name: str | None = None) -> ModelInfo:
        return ModelInfo(name=name or route.name, created=self.created, owned_by="tenshu",
                         context_window=self.router.context_window(route), family="route")

    def model_info(self, model: str) -> ModelInfo:
        """Any served model (chat or embedding) or route by name; raises ModelNotFoundError."""
        name = _canonical(model)
        if name in self.router.deployments:
            return replace(self.router.deployments[name][0].backend.info, name=name)
        if (route := self.router.route_for(name)) is not None:
            return self._route_info(route, name)
        if name in self.embedders:
            return self.embedders[name].info
        raise ModelNotFoundError(model, [m.name for m in self.models()])

    def backend_for(self, model: str) -> Backend:
        """The backend a model (or a route's default tier) runs on first."""
        name = _canonical(model)
        if name in self.router.deployments:
            return self.router.deployments[name][0].backend
        if (route := self.router.route_for(name)) is not None:
            first = self.router.tiers[route.tier][0]
            return self.router.deployments[first][0].backend
        if name in self.embedders:
            raise InvalidRequestError(f"{model!r} is an embedding model; it cannot chat",
                                      field="model")
        raise ModelNotFoundError(model, self.router.names())

    def embedder_for(self, model: str) -> Embedder:
        embedder = self.embedders.get(_canonical(model))
        if embedder is None:
            if self.router.known(_canonical(model)):
                raise InvalidRequestError(
                    f"{model!r} is a chat model; embeddings come from "
                    f"{', '.join(self.embedders) or 'no model here'}", field="model")
            raise ModelNotFoundError(model, list(self.embedders))
        return embedder

    # -- requests -----------------------------------------------------------------------------

    def admit(self) -> None:
        """Refuse a request while the server is draining (raises); check before any work. A
        full queue is each deployment's to refuse (Deployment.can_take)."""
        if self.draining:
            raise ShuttingDownError("the server is shutting down; retry against another one")

    def queue_depth(self) -> int:
        """Requests handed to a deployment but not yet running there (waiting for an engine)."""
        return sum(max(0, d.in_flight - d.backend.stats().running)
                   for group in self.router.deployments.values() for d in group)

    async def chat(self, request: ChatRequest, ctx: RequestContext) -> AsyncIterator[ChatEvent]:
        """The request's events from the first candidate that answers. A candidate that fails
        before its first token is set aside for the next; after that, its failure is raised
        from the stream (the protocol's in-stream error)."""
        request.model = _canonical(request.model)
        if request.model in self.embedders:
            self.backend_for(request.model)  # raises: an embedding model cannot chat
        force_tool_choice(request, ctx.tool_choice)
        recording = None
        if self.conversations is not None:
            recording = await self.conversations.open(
                request, ctx.principal, ctx.headers.get(CONVERSATION_HEADER), ctx.request_id,
                rewind=ctx.headers.get(REWIND_HEADER))
            if recording is not None:
                ctx.answer_headers.update(recording.headers())
        retrieval = await self._retrieve(request, ctx)
        trace = ctx.trace
        candidates = await self.router.plan(
            request, trace, key_name=ctx.key_name, key_private=ctx.key_private,
            headers=ctx.headers, prompt_tokens=estimate_tokens(request),
            private=retrieval.private if retrieval else None)
        self.admit()
        self.in_flight += 1
        start = time.perf_counter()
        first = last = None
        usage = None
        error: TenshuError | None = None
        served: Deployment | None = None
        try:
            served, events = await self._first_answer(request, candidates, trace)
            try:
                async for event in events:
                    if isinstance(event, BlockDelta) and (event.text or event.partial_json):
                        last = time.perf_counter()
                        first = first or last
                    elif isinstance(event, MessageFinish):
                        usage = _add_usage(usage, event)
                    elif isinstance(event, MessageStart):
                        trace.adapter = event.adapter or trace.adapter
                        if retrieval is not None:
                            event = replace(event, sources=retrieval.sources())
                    if recording is not None:
                        recording.fold.add(event)
                    yield event
            except TenshuError as exc:
                served.failed(exc, self.router.settings.router)
                raise
            finally:
                served.release()
                await events.aclose()
        except TenshuError as exc:
            error = exc
            raise
        except BaseException:  # the client left (cancelled), or a bug
            error = _ClientClosed()
            raise
        finally:
            self.in_flight -= 1
            self.last_request_at = time.time()
            self._done(request, ctx, served, start, first, last, usage, error, recording,
                       retrieval)

    async def _retrieve(self, request: ChatRequest, ctx: RequestContext) -> Retrieval | None:
        """The memory stage: chunks from the collections the request, its key or its route
        name, put into the prompt; None when memory is off or found nothing."""
        if self.memory is None:
            return None
        route = self.router.route_for(request.model)
        window = self.model_info(request.model).context_window
        local = self._first_local(request.model)
        if local is not None:  # the window of the model that will serve what stays here
            window = local.backend.info.context_window or window
        retrieval = await self.memory.retrieve(
            request, ctx, route.memory if route else (), window=window,
            prompt_tokens=estimate_tokens(request),
            # counted by a local model only: counting with a cloud one would send the chunks
            count=local.backend.count_tokens if local is not None else None)
        if retrieval is not None:
            ctx.answer_headers.update(retrieval.headers())
            ctx.trace.memory = {"collections": sorted({h.collection for h in retrieval.hits}),
                                "chunks": [h.chunk_id for h in retrieval.hits]}
        return retrieval

    def _first_local(self, model: str) -> Deployment | None:
        """The first local deployment a request for `model` may go to, in its route's order."""
        name = _canonical(model)
        if name in self.router.deployments:
            names = [name]
        elif (route := self.router.route_for(name)) is not None:
            names = [m for t in route_tiers(route, self.router.all_tiers)
                     for m in self.router.tiers[t]]
        else:
            return None
        return next((d for m in names for d in self.router.deployments[m]
                     if d.spec.is_local), None)

    async def _first_answer(self, request: ChatRequest, candidates: list[Deployment],
                            trace: Trace) -> tuple[Deployment, AsyncIterator[ChatEvent]]:
        """Try candidates in order until one sends its first content event; return it with a
        stream that replays what it sent so far. The caller releases the deployment."""
        error: TenshuError | None = None
        too_long_at = 0  # a candidate's window the prompt did not fit
        for deployment in candidates:
            window = deployment.backend.info.context_window
            if too_long_at and window and window <= too_long_at:
                trace.attempts.append(Attempt(deployment.name, "skipped",
                                              "its context window is no larger"))
                continue
            if not deployment.can_take():
                trace.attempts.append(Attempt(deployment.name, "skipped", "at its limit"))
                error = error or OverloadedError(deployment.full(), retry_after=1)
                continue
            began = time.perf_counter()
            deployment.acquire()
            events = deployment.backend.chat(request)
            head: list[ChatEvent] = []
            try:
                async for event in events:
                    head.append(event)
                    if not isinstance(event, MessageStart):
                        break
            except TenshuError as exc:
                deployment.failed(exc, self.router.settings.router)  # before release: a probe
                deployment.release()
                await events.aclose()
                trace.attempts.append(Attempt(deployment.name, "error", f"{exc.kind}: {exc}",
                                              _ms(began)))
                if not should_fall_back(exc):
                    raise
                if isinstance(exc, ContextLengthError):
                    too_long_at = window or too_long_at
                error = exc
                continue
            except BaseException:
                deployment.release()
                await events.aclose()
                raise
            deployment.succeeded()
            trace.attempts.append(Attempt(deployment.name, "ok", ms=_ms(began)))
            trace.backend = deployment.name
            return deployment, _replay(head, events)
        if error is None:
            raise UpstreamError(f"no model could take the request for {request.model!r}")
        raise error

    async def count_tokens(self, request: ChatRequest) -> int:
        return await self.backend_for(request.model).count_tokens(request)

    async def embed(self, model: str, inputs: list[str]) -> tuple[list[list[float]], int]:
        embedder = self.embedder_for(model)
        self.admit()
        self.in_flight += 1  # so a stop waits for it, then ends it after the grace period
        try:
            return await embedder.embed(inputs)
        finally:
            self.in_flight -= 1
            self.last_request_at = time.time()

    # -- shutdown -----------------------------------------------------------------------------

    def begin_drain(self) -> None:
        """Stop admitting requests; those in flight go on."""
        self.draining = True

    async def abort_in_flight(self) -> None:
        """End every running request now (their streams close with a shutdown error)."""
        for backend in self.backends.values():
            await backend.abort_all()
        for embedder in self.embedders.values():
            embedder.abort_all()

    async def aclose(self) -> None:
        for backend in [*self.backends.values(), *self.embedders.values()]:
            backend.close()
            if (aclose := getattr(backend, "aclose", None)) is not None:
                await aclose()

    def close(self) -> None:
        for backend in [*self.backends.values(), *self.embedders.values()]:
            backend.close()

    # -- bookkeeping --------------------------------------------------------------------------

    def _done(self, request, ctx, served, start, first, last, usage, error, recording,
              retrieval) -> None:
        usage_in, usage_out, cached = usage or (0, 0, 0)
        ttft = first - start if first else None
        per_token = (last - first) / (usage_out - 1) if first and usage_out > 1 else None
        trace = ctx.trace
        model = served.model if served else request.model
        if served is not None:
            trace.cost_usd = served.spec.cost(usage_in, usage_out)
            self.router.budgets.add(ctx.key_name, served.model, usage_in + usage_out,
                                    trace.cost_usd)
        if self.observer is not None:
            self.observer.request_done(model, usage_in, usage_out, cached, ttft, per_token)
        ttft_ms = round(ttft * 1000, 3) if ttft is not None else None
        duration_ms = round((time.perf_counter() - start) * 1000, 3)
        turn = None
        # a stopped answer (the client left after its first token) is kept as far as it got, as
        # the person saw it: the conversation goes on from what they read
        stopped = isinstance(error, _ClientClosed) and first is not None
        trace.stopped = stopped
        trace_json = trace.to_json()
        if recording is not None and (error is None or stopped) and served is not None:
            turn = recording.turn(
                ctx.request_id, model=request.model, routed=trace.route,
                backend=trace.backend, input_tokens=usage_in, output_tokens=usage_out,
                ttft_ms=ttft_ms, duration_ms=duration_ms, trace=trace_json,
                sources=[h.chunk_id for h in retrieval.hits] if retrieval else [],
                adapter=trace.adapter)
        if self.audit is not None:  # the turn, if any, goes with the audit record: one write
            self.audit.record(
                request_id=ctx.request_id, key_id=ctx.key_id, protocol=ctx.protocol,
                user_id=ctx.principal.user_id if ctx.principal else None,
                route=ctx.route, model=request.model, status=error.status if error else 200,
                input_tokens=usage_in, output_tokens=usage_out, ttft_ms=ttft_ms,
                duration_ms=duration_ms, error_kind=error.kind if error else None,
                routed=trace.route, tier=trace.tier, backend=trace.backend,
                fallbacks=trace.fallbacks, cost_usd=trace.cost_usd, score=trace.score,
                trace=trace_json, turn=turn,
            )


async def _replay(head: list[ChatEvent], events: AsyncIterator[ChatEvent]):
    """`head`, then the rest of `events`; closing it closes `events` (which aborts the work)."""
    try:
        for event in head:
            yield event
        async for event in events:
            yield event
    finally:
        await events.aclose()


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


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
