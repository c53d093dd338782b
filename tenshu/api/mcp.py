"""tenshu's own MCP server, at /mcp on the API's port: the person's memory, the models and
routes served, request traces and routing stats, agent runs and the approvals they wait for
(api/mcp_agents.py), as tools any MCP client (Claude Code, Claude Desktop, an agent) can call. `tenshu mcp` (cli/mcp.py) relays the same tools over stdio.

    POST /mcp      Streamable HTTP: the official SDK's transport and MCPServer
    GET, DELETE    405: there is no event stream and no session to end

The transport is stateless and answers in JSON. Every POST carries its key and is served on its
own, as every other route of this app is: no session state lives between requests, so none can
be reached with another person's key, and none is lost when the server restarts; no tool here
streams progress or asks the client anything back, which is what sessions would be for. The
SDK's session manager still runs the task that serves each request: McpEndpoint
(api/mcp_endpoint.py) makes it at the first request and runs it until the server's lifespan
ends (api/server.py).

Security, in the order a request meets it:
- tenshu's SecurityMiddleware (api/security.py): the Host and Origin checks every route has;
- a key, even on loopback (unlike the rest of tenshu, which lets loopback in key-less while no
  key exists): the same Authenticator and failed-login counting as every route, made to
  require one; without a valid key, 401 with WWW-Authenticate and an error in OpenAI's shape;
- the SDK's DNS-rebinding check, given the same names as tenshu's: the loopback names, the bind
  address and server.allowed_hosts, at the server's port, and their http origins plus
  server.cors_origins. (Off loopback, tenshu's own check leaves Host alone since keys are
  required there; /mcp still answers only to those names: list the ones clients use in
  server.allowed_hosts.)

Each tool call acts for the key's user (a Principal): `caller(ctx)` gives it to the tool with
the request, whose app holds tenshu's services, and the tool calls the same functions as
/tenshu/v1, so ownership is the store's, decided in SQL. Another user's resource fails as a
missing one does. Database work goes to the thread pool (`_run`), as in the HTTP routes.

To add tools, write a group and add it to TOOL_GROUPS:

    def agent_tools(mcp: MCPServer) -> None:
        @tool(mcp, title="List runs", read_only=True, destructive=False, idempotent=True)
        async def list_runs(ctx: Context, limit: Annotated[int, Field(ge=1, le=100)] = 20
                            ) -> Runs:  # a pydantic model: the output schema
            '''The caller's agent runs, newest first.'''  # the description
            me = caller(ctx)
            found = await _run(me.state.store.runs.list, me.principal, limit=limit)
            return Runs(runs=[Run.model_validate(r.to_json()) for r in found])
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field
from starlette.requests import Request

from tenshu import __version__
from tenshu.api.mcp_endpoint import PRINCIPAL
from tenshu.api.memory import memory_of
from tenshu.api.stats import overview, trace_of
from tenshu.api.tenshu import _run
from tenshu.config import LOOPBACK_HOSTS, ServerSettings
from tenshu.core.errors import InvalidRequestError, NotFoundError, TenshuError
from tenshu.memory.ingest import content_hash
from tenshu.router.policy import route_tiers
from tenshu.store import Principal

log = logging.getLogger("tenshu.api.mcp")
INSTRUCTIONS = (
    "tenshu is the person's own AI server. Search their documents with memory_search before "
    "answering from memory, add notes with memory_ingest, and explain what the server did with "
    "list_models, list_routes, get_trace and route_stats.")


# -- the tools' side: who calls, and how a tool is registered -------------------------------------


@dataclass(frozen=True)
class Caller:
    """Whom a tool call acts for, and the HTTP request that carried it (its app is tenshu's:
    `state` holds the store, memory, gateway, ... that /tenshu/v1 uses)."""

    principal: Principal
    request: Request

    @property
    def state(self):
        return self.request.app.state


def caller(ctx: Context) -> Caller:
    """The caller of the tool call `ctx` belongs to (McpEndpoint put them in the request)."""
    request = ctx.request_context.request
    principal = request.scope.get("state", {}).get(PRINCIPAL) if request is not None else None
    if principal is None:  # only a transport other than McpEndpoint's can get here
        raise ToolError("this call came without an authenticated caller")
    return Caller(principal, request)


def tool(mcp: MCPServer, *, title: str, read_only: bool, destructive: bool, idempotent: bool,
         open_world: bool = False) -> Callable:
    """Register an async function as a tool of `mcp`. The SDK reads its name, its docstring (the
    description) and its type hints (the input schema, and from the returned model the output
    schema); what the tool does to the world is declared here, so no hint is left to a client's
    guess. A tenshu error becomes the tool's error result (isError) with its message."""
    annotations = ToolAnnotations(title=title, read_only_hint=read_only,
                                  destructive_hint=destructive, idempotent_hint=idempotent,
                                  open_world_hint=open_world)

    def register(fn):
        @functools.wraps(fn)
        async def run(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except TenshuError as exc:
                if exc.status >= 500:
                    log.error("MCP tool %s failed: %s", fn.__name__, exc)
                raise ToolError(str(exc)) from exc

        mcp.add_tool(run, title=title, description=inspect.cleandoc(fn.__doc__ or ""),
                     annotations=annotations, structured_output=True)
        return fn

    return register


# -- memory ---------------------------------------------------------------------------------------


class MemoryHit(BaseModel):
    text: str = Field(description="the chunk's text")
    score: float = Field(description="higher is better (fused keyword and meaning ranks)")
    title: str = Field(description="the document's title")
    source: str = Field(description="the document's file name, path or URL")
    section: str = Field(description="the headings the chunk sits under, outermost first")
    page: int | None = Field(description="the page, for a PDF")
    collection: str = Field(description="its collection: yours by name, another's as owner/name")
    chunk_id: int


class MemorySearch(BaseModel):
    hits: list[MemoryHit] = Field(description="best first")
    collections: list[str] = Field(description="the collections searched")


class IngestedDocument(BaseModel):
    document_id: int
    collection: str
    title: str
    chunks: int = Field(description="the pieces it was cut into for search")
    created: bool = Field(description="false: this text was there already under this title")


Query = Annotated[str, Field(min_length=1, max_length=4000,
                             description="what to look for, in words or keywords")]
Collections = Annotated[list[str] | None, Field(
    description="the collections to search: yours by name, or owner/name for one shared with "
                "you; none (or empty): every collection you can read")]
CollectionName = Annotated[str, Field(
    min_length=1, max_length=129,
    description="your collection (made if it does not exist yet)")]
Text = Annotated[str, Field(min_length=1, description="the document's text: Markdown or plain")]
Title = Annotated[str, Field(min_length=1, max_length=200,
                             description="the document's title, unique in the collection")]


def memory_tools(mcp: MCPServer) -> None:
    @tool(mcp, title="Search memory", read_only=True, destructive=False, idempotent=True)
    async def memory_search(ctx: Context, query: Query, collections: Collections = None,
                            k: Annotated[int, Field(ge=1, le=100)] = 5) -> MemorySearch:
        """Search the person's documents (their own collections and those shared with them) by
        keywords and meaning. Each hit is a passage with its document's title, its collection
        and a score, best first."""
        me = caller(ctx)
        memory = memory_of(me.request)
        names = list(collections or ())
        if not names:
            names = [c.name for c in await _run(memory.store.collections.list, me.principal)]
            if not names:
                return MemorySearch(hits=[], collections=[])
        hits = await memory.search(me.principal, query, names, k=k)
        return MemorySearch(collections=list(dict.fromkeys(names)), hits=[
            MemoryHit(text=h.text, score=round(h.score, 6), title=h.title, source=h.source,
                      section=h.section, page=h.page, collection=h.collection,
                      chunk_id=h.chunk_id) for h in hits])

    @tool(mcp, title="Add to memory", read_only=False, destructive=False, idempotent=True)
    async def memory_ingest(ctx: Context, collection: CollectionName, text: Text,
                            title: Title) -> IngestedDocument:
        """Add a text (Markdown or plain) to one of the person's collections as a document,
        indexed for memory_search before this returns. Nothing is replaced: the same title and
        text again is the same document, and a title already used for another text is refused
        (choose another title)."""
        me = caller(ctx)
        memory = memory_of(me.request)
        data = f"# {title.strip()}\n\n{text}".encode()
        if not text.strip():
            raise InvalidRequestError("the text is empty", field="text")
        if len(data) > memory.settings.max_file_bytes:
            raise InvalidRequestError(f"the text is larger than memory's limit of "
                                      f"{memory.settings.max_file_mb:g} MB", field="text")
        # the document's name in the collection: its title, as a Markdown file
        source = "".join(c if c.isprintable() and c not in "/\\" else "-"
                         for c in title.strip()) + ".md"
        ingester = await _run(memory.ingester, me.principal, collection)
        known = (await _run(ingester.indexed)).get(source)
        if known is not None:  # (a failed try of the same text is tried again)
            doc_id, digest, status = known
            if digest != content_hash(data):
                raise InvalidRequestError(
                    f"collection {collection!r} has a document titled {title!r} already; "
                    "choose another title", field="title")
            if status == "ready":
                doc = await _run(memory.store.collections.document, me.principal, collection,
                                 doc_id)
                return IngestedDocument(document_id=doc.id, collection=collection,
                                        title=doc.title, chunks=doc.chunks, created=False)
        doc = await memory.upload(me.principal, collection, data, source, "text/markdown",
                                  wait=True)
        if doc.status != "ready":
            raise InvalidRequestError(f"the text could not be indexed: {doc.error}")
        return IngestedDocument(document_id=doc.id, collection=collection, title=doc.title,
                                chunks=doc.chunks, created=True)


# -- models and routes ----------------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str = Field(description="the name to ask for")
    kind: Literal["chat", "route", "embedding"] = Field(
        description="route: a virtual model that picks a tier of models per request")
    context_window: int = Field(description="tokens")
    owned_by: str
    parent: str | None = Field(description="for a LoRA adapter: the model it adapts")


class Models(BaseModel):
    models: list[ModelCard]


class Rule(BaseModel):
    tier: str
    when: str = Field(description="the conditions that send a request to the tier")


class RouteCard(BaseModel):
    name: str
    answers: list[str] = Field(description="other model names (globs) the route answers to")
    default_tier: str
    tiers: list[str] = Field(description="every tier it may use: default, rules', fallbacks")
    rules: list[Rule]
    simple_tier: str | None = Field(description="where the sentinel sends simple requests")
    threshold: float | None = Field(description="the sentinel's complexity threshold")
    memory: list[str] = Field(description="collections its requests retrieve from")
    context_window: int


class Tier(BaseModel):
    name: str
    models: list[str]


class Routes(BaseModel):
    routes: list[RouteCard]
    tiers: list[Tier]


def model_tools(mcp: MCPServer) -> None:
    @tool(mcp, title="List models", read_only=True, destructive=False, idempotent=True)
    async def list_models(ctx: Context) -> Models:
        """The models this server serves (as GET /v1/models lists them): chat models, routes
        (virtual models over tiers) and embedders, each with its context window."""
        infos = caller(ctx).state.gateway.models()
        return Models(models=[
            ModelCard(id=i.name, kind="route" if i.family == "route" else i.kind,
                      context_window=i.context_window, owned_by=i.owned_by,
                      parent=i.parent or None) for i in infos])

    @tool(mcp, title="List routes", read_only=True, destructive=False, idempotent=True)
    async def list_routes(ctx: Context) -> Routes:
        """The routes of the router's configuration: for each, the tiers of models it may
        send a request to, its rules and sentinel, and the collections it retrieves from;
        and the models in each tier."""
        router = caller(ctx).state.gateway.router
        return Routes(
            tiers=[Tier(name=name, models=list(members))
                   for name, members in router.tiers.items()],
            routes=[RouteCard(
                name=r.name, answers=list(r.models), default_tier=r.tier,
                tiers=route_tiers(r, router.all_tiers),
                rules=[Rule(tier=rule.tier, when=rule.describe()) for rule in r.rules],
                simple_tier=r.simple_tier,
                threshold=router.thresholds.get(r.name, r.threshold) if r.simple_tier else None,
                memory=list(r.memory), context_window=router.context_window(r))
                for r in router.routes])


# -- traces and stats -----------------------------------------------------------------------------


class Trace(BaseModel):
    request_id: str
    ts: datetime
    user: str | None
    key: str | None = Field(description="the API key's name (none: a web session)")
    protocol: str
    route: str = Field(description="the HTTP route called")
    model: str = Field(description="the model asked for")
    routed: str | None = Field(description="the route (or model) it was routed as")
    tier: str | None
    backend: str | None = Field(description="the deployment that answered (none: none did)")
    status: int
    error_kind: str | None
    input_tokens: int
    output_tokens: int
    ttft_ms: float | None
    duration_ms: float
    fallbacks: int
    cost_usd: float
    score: float | None = Field(description="the sentinel's complexity score")
    trace: dict[str, Any] = Field(
        description="why: the policy's reason, each candidate tried, memory used, errors")


class Tally(BaseModel):
    name: str
    requests: int
    errors: int
    tokens: int
    cost_usd: float


class Fallback(BaseModel):
    backend: str
    kind: str
    count: int


class Spend(BaseModel):
    key: str | None
    tier: str | None
    requests: int
    tokens: int
    cost_usd: float


class Budget(BaseModel):
    key: str | None
    tier: str | None
    budget: str
    tokens: int
    daily_tokens: int | None
    cost_usd: float
    daily_usd: float | None
    share: float = Field(description="the part spent today (1: spent)")


class RouteStats(BaseModel):
    period: str
    since: datetime
    until: datetime
    totals: dict[str, float | int | None] = Field(
        description="requests, errors, tokens, fallbacks, cost and latency percentiles")
    routes: list[Tally] = Field(description="per route (or model asked for), busiest first")
    backends: list[Tally] = Field(description="per deployment that answered")
    fallbacks: list[Fallback] = Field(description="failed attempts by deployment and error")
    spend: list[Spend] = Field(description="per API key and tier")
    budgets: list[Budget] = Field(description="today's use of the daily budgets")


RequestId = Annotated[str, Field(
    min_length=1, max_length=100,
    description="the request's id (req_..., from its request-id header) or an id a client "
                "saw for it: chatcmpl-..., msg_..., turn_...")]


def trace_tools(mcp: MCPServer) -> None:
    @tool(mcp, title="Get a request's trace", read_only=True, destructive=False,
          idempotent=True)
    async def get_trace(ctx: Context, request_id: RequestId) -> Trace:
        """Where one request went and why: its route and tier, every backend tried, errors,
        tokens, cost and timings (nothing of the conversation). Members see their own
        requests; admins anyone's."""
        me = caller(ctx)
        found = await trace_of(me.request, me.principal, request_id)
        if found is None:
            raise NotFoundError(f"request {request_id!r} not found")
        return Trace.model_validate(found.to_json(trace=True))

    @tool(mcp, title="Routing stats", read_only=True, destructive=False, idempotent=True)
    async def route_stats(ctx: Context,
                          period: Literal["1h", "24h", "7d", "30d"] = "24h") -> RouteStats:
        """What the server did over the period (as GET /tenshu/v1/stats counts it): requests,
        errors, tokens, cost and latency in total, per route and per deployment, the fallbacks,
        spend per key and tier, and today's budgets. Members see their own requests; admins
        everyone's."""
        me = caller(ctx)
        found, budgets = await overview(me.request, me.principal, period, None)
        data = found.to_json()
        return RouteStats.model_validate({
            "period": period, "budgets": [b.to_json() for b in budgets],
            **{name: data[name] for name in ("since", "until", "totals", "routes", "backends",
                                             "fallbacks", "spend")}})


TOOL_GROUPS: tuple[Callable[[MCPServer], None], ...] = (memory_tools, model_tools, trace_tools)


def build_mcp_server(groups: Iterable[Callable[[MCPServer], None]] = TOOL_GROUPS) -> MCPServer:
    # log_level: the SDK calls logging.basicConfig with it (a no-op once logging is set up, as
    # `tenshu serve` does first); WARNING keeps a bare embedding from turning on INFO logs
    mcp = MCPServer("tenshu", title="tenshu", version=__version__, instructions=INSTRUCTIONS,
                    log_level="WARNING")
    for register in groups:
        register(mcp)
    return mcp


# -- the HTTP side ---------------------------------------------------------------------------------


def transport_security(settings: ServerSettings) -> TransportSecuritySettings:
    """The SDK's DNS-rebinding check, with the names SecurityMiddleware admits on loopback
    (localhost, 127.0.0.1, ::1 and server.allowed_hosts) and the bind address, each at the
    server's port (any port, where it is chosen at bind time: port 0), and their http origins
    besides server.cors_origins ("*" there allows any origin here too, as it does there)."""
    names = dict.fromkeys(n.lower() for n in (*sorted(LOOPBACK_HOSTS), settings.host,
                                                *settings.allowed_hosts))
    hosts = []
    for name in names:
        netloc = f"[{name}]" if ":" in name else name
        hosts.append(f"{netloc}:{settings.port or '*'}")
        if settings.port == 80:  # a client may leave the default port out
            hosts.append(netloc)
    origins = [f"http://{h}" for h in hosts]
    for origin in settings.cors_origins:
        # the SDK's "X:*" matches what starts with "X:", so "http:*" is any http origin
        origins += ["http:*", "https:*"] if origin == "*" else [origin]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                     allowed_hosts=hosts, allowed_origins=origins)


def session_manager(settings: ServerSettings):
    """The SDK's session manager over tenshu's tools (with the agents' of api/mcp_agents.py),
    as McpEndpoint (api/mcp_endpoint.py) serves them: stateless, answering in JSON, behind the
    SDK's DNS-rebinding check."""
    from tenshu.api.mcp_agents import agent_tools  # built on this module's `tool` and `caller`

    server = build_mcp_server((*TOOL_GROUPS, agent_tools))
    server.streamable_http_app(  # made for its session manager; its routes are not used
        stateless_http=True, json_response=True,
        transport_security=transport_security(settings),
        max_request_body_size=settings.max_body_bytes)
    return server.session_manager
