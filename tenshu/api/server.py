"""Build and run the whole server: models, gateway, state store, app, and uvicorn.

`build_server(settings)` starts loading every configured embedded model (or the built-in
default) in the background (backends/loading.py: /health answers at once, /ready once they are
in), connects the upstream ones, builds the router over them, and returns a Server whose `app`
any ASGI server can run; `run(server)` runs it with uvicorn and shuts down
gracefully: on SIGTERM/SIGINT it stops accepting, lets requests in flight finish for
`grace_seconds`, then ends those still running with the protocol's error event and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import uvicorn

from tenshu.agents.service import AgentService
from tenshu.api.app import create_app
from tenshu.api.auth import Authenticator
from tenshu.api.connection import ConnectionLimits, protocol_for
from tenshu.api.metrics import Metrics
from tenshu.backends.embedded import EmbeddedBackend
from tenshu.backends.embedding import DEFAULT_EMBEDDER, SentenceEmbedder, default_embedder_path
from tenshu.config import (
    ModelSpec,
    ServerSettings,
    credential,
    load_jobs_settings,
    tenshu_home,
)
from tenshu.conversations import ConversationStage
from tenshu.core.errors import NotFoundError
from tenshu.engine import EngineConfig
from tenshu.gateway import Gateway
from tenshu.jobs import Job, Scheduler, SystemProbe, configured_jobs
from tenshu.jobs.learn import NAME as LEARN_JOB
from tenshu.learn.registry import Registry
from tenshu.learn.serving import AdapterService
from tenshu.memory import Memory
from tenshu.memory.stage import MemoryStage
from tenshu.router.budget import Budgets, start_of_today
from tenshu.router.health import Deployment
from tenshu.router.router import Router
from tenshu.router.sentinel import EmbeddingSentinel, ModelSentinel
from tenshu.store import open_store

log = logging.getLogger("tenshu.server")


@dataclass
class Server:
    settings: ServerSettings
    gateway: Gateway
    store: object
    metrics: Metrics
    app: object


def build_server(settings: ServerSettings, state_db=None, adapters_root: Path | None = None,
                 jobs: list[Job] | None = None) -> Server:
    """Everything `tenshu serve` runs. `adapters_root`: the adapter registry (default
    $TENSHU_HOME/adapters); `jobs`: what the scheduler runs (default: tenshu.toml's)."""
    state_db = state_db or settings.store
    store = open_store(state_db)
    auth = Authenticator(store.keys, settings.keys_required)
    if not settings.loopback and not store.keys.any_active():
        store.close()
        raise ValueError(
            f"refusing to listen on {settings.host} without API keys: anyone who can reach "
            "this address could use the server. Create a key first (`tenshu keys create "
            "--name NAME`), or bind to 127.0.0.1")
    embedders = {}
    if settings.embedder and (path := default_embedder_path()) is not None:
        embedders[DEFAULT_EMBEDDER] = SentenceEmbedder(DEFAULT_EMBEDDER, path)
    router = build_router(settings, store, embedders)
    metrics = Metrics()
    writer = store.writer(journal=journal_path(state_db))
    conversations = ConversationStage(store.conversations, writer)
    memory = Memory(store, settings.memory, embedders=embedders)
    gateway = Gateway(router, embedders, observer=metrics, audit=writer,
                      conversations=conversations, memory=MemoryStage(memory))
    metrics.attach(gateway)
    app = create_app(settings, gateway, auth, metrics, store, memory)
    adapters = AdapterService(router, Registry(adapters_root or tenshu_home() / "adapters"),
                              max_loras=settings.max_loras)
    app.state.adapters = adapters if adapters.bases() else None
    jobs = configured_jobs() if jobs is None else jobs
    # a nightly run that promotes a version is served at once, not at the watch's next look
    jobs = [replace(job, on_done=_then_sync(adapters)) if job.name == LEARN_JOB else job
            for job in jobs]
    # heavy jobs wait for mains power, an idle machine and their hours ([jobs] in tenshu.toml)
    scheduler = app.state.scheduler = Scheduler(jobs, store.jobs, policy=load_jobs_settings(),
                                                probe=SystemProbe(gateway))
    metrics.attach_scheduler(scheduler)
    integrations = app.state.integrations = _token_source(settings)
    agents = app.state.agents = AgentService(settings.agents, gateway, store,
                                             home=tenshu_home(), memory=memory,
                                             integrations=integrations)
    context = app.state.context = _context_engine(settings, store, agents, memory)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await writer.start()
        if app.state.adapters is not None:
            await adapters.start()
        await scheduler.start()
        await agents.start()  # runs a stopped server left unfinished go on
        if context is not None:
            await context.start()  # after the agents: deliveries follow the runs they resume
        if failed := await asyncio.to_thread(memory.recover):
            log.warning("%d uploaded document(s) were not indexed before the server last "
                        "stopped; they are marked failed, to upload again", failed)
        try:
            async with app.state.mcp.run():  # /mcp's requests are served in its task group
                yield
        finally:
            if context is not None:
                await context.close()  # sources stop; deliveries' runs resume at next start
            await scheduler.close()  # running jobs are ended (SIGTERM) and marked cancelled
            await agents.close()  # runs stay as they are, to resume at the next start
            await adapters.close()
            await writer.close()
            await memory.aclose()
            await gateway.aclose()
            store.close()

    app.router.lifespan_context = lifespan
    return Server(settings, gateway, store, metrics, app)


def _token_source(settings: ServerSettings):
    """The tokens of the configured integrations, for agents' service tools (None: none)."""
    if not settings.integrations.integrations:
        return None
    from tenshu.integrations import Integration, TokenSource, open_token_store

    return TokenSource([Integration.from_spec(s) for s in settings.integrations.integrations],
                       open_token_store(tenshu_home()))


def _context_engine(settings: ServerSettings, store, agents: AgentService, memory):
    """The context engine, when tenshu.toml configures sources (None otherwise)."""
    context = settings.context
    if not context.sources:
        return None
    for pipeline in context.pipelines:  # a model that is not served: refused now, not at 7am
        try:
            agents.gateway.model_info(pipeline.model)
        except NotFoundError:
            raise ValueError(f"pipelines.{pipeline.name}.model: {pipeline.model!r} is not a "
                             "model or route this server serves") from None
    from tenshu.context.engine import ContextEngine
    from tenshu.context.notify import Notifier, channels_from_config

    return ContextEngine(context, store, agents,
                         Notifier(channels_from_config(dict(context.channels))), memory=memory)


def _then_sync(adapters: AdapterService):
    async def sync(_run) -> None:
        for change in await adapters.sync():
            log.info("%s", change)
    return sync


def journal_path(state_db) -> Path:
    """The record writer's write-ahead journal (audit records and turns): beside a SQLite
    state database, else in the home."""
    text = str(state_db)
    return (tenshu_home() if "://" in text else Path(text).expanduser().parent) / "audit.journal"


def build_router(settings: ServerSettings, store, embedders: dict) -> Router:
    """Every configured model's deployments, the sentinel, today's spend and the calibrated
    thresholds, as one Router."""
    routing = settings.routing
    deployments = {spec.name: _deployments(spec, settings) for spec in routing.models}
    sentinel = None
    if any(r.simple_tier for r in routing.routes):
        if routing.router.sentinel == "embedder":
            embedder = embedders.get(DEFAULT_EMBEDDER)
            if embedder is None and (path := default_embedder_path()) is not None:
                embedder = SentenceEmbedder(DEFAULT_EMBEDDER, path)
            sentinel = EmbeddingSentinel(embedder) if embedder is not None else None
        elif routing.router.sentinel:
            sentinel = ModelSentinel(deployments[routing.router.sentinel][0].backend)
        if sentinel is None:
            log.warning("no sentinel: routes with a simple_tier use their default tier")
    budgets = Budgets(routing)
    budgets.load(store.audit.spend_since(start_of_today()),
                 {k.id: k.name for k in store.keys.list()})
    return Router(routing, deployments, sentinel=sentinel, budgets=budgets,
                  thresholds=store.thresholds.all())


def _deployments(spec: ModelSpec, settings: ServerSettings) -> list[Deployment]:
    if spec.backend == "embedded":
        log.info("loading %s from %s", spec.name, spec.path)
        backend = EmbeddedBackend(spec.name, EngineConfig(
            model=spec.path, dtype=settings.dtype, device=settings.device,
            kv_cache_memory_gib=settings.kv_cache_memory_gib,
            kv_cache_dtype=settings.kv_cache_dtype, int8_activations=settings.int8_activations,
            max_num_seqs=settings.max_num_seqs, enable_lora=True,
            max_loras=settings.max_loras, max_lora_rank=settings.max_lora_rank,
            quantization=spec.quantization or settings.quantization or None,
            quantization_cache_dir=str(tenshu_home() / "cache")),
            keep_alive=settings.model_keep_alive_for(spec), load_timeout=settings.load_timeout)
        # what the engine runs at once, and the queue that may wait for it
        limit = settings.max_num_seqs + settings.max_queue
        source = (f"server.max_num_seqs {settings.max_num_seqs} + server.max_queue "
                  f"{settings.max_queue}")
        if spec.max_concurrency and spec.max_concurrency < limit:
            limit, source = spec.max_concurrency, f"max_concurrency {spec.max_concurrency}"
        return [Deployment(spec.name, spec, backend, limit=limit, limit_source=source)]
    # here, not at the top: the upstream clients (aiohttp) are imported only by a server that
    # has upstream models
    from tenshu.backends.upstream import Timeouts
    from tenshu.backends.upstreams import upstream_backend

    key = credential(spec.api_key_env)
    if spec.api_key_env and key is None:
        log.warning("%s: the environment variable %s is not set; %s will refuse requests "
                    "until it is", spec.name, spec.api_key_env, spec.endpoints[0])
    timeouts = Timeouts(spec.connect_timeout, spec.first_token_timeout, spec.idle_timeout)
    out = []
    for i, endpoint in enumerate(spec.endpoints):
        name = spec.name if len(spec.endpoints) == 1 else f"{spec.name}[{i}]"
        backend = upstream_backend(
            spec.backend, name, endpoint, upstream_model=spec.upstream_model or spec.name,
            api_key=key, api_key_env=spec.api_key_env, context_window=spec.context_window,
            timeouts=timeouts, max_concurrency=spec.max_concurrency)
        out.append(Deployment(name, spec, backend, limit=spec.max_concurrency,
                              limit_source=f"max_concurrency {spec.max_concurrency}"))
    return out


class _GracefulServer(uvicorn.Server):
    """uvicorn, plus: stop admitting at once, and end streams still running after the grace."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway, grace: float):
        super().__init__(config)
        self.gateway = gateway
        self.grace = grace

    @contextlib.contextmanager
    def capture_signals(self):
        """As uvicorn's, except that a graceful stop by signal exits 0 (uvicorn re-raises the
        signal afterwards, so the process would die of it: -15 for a clean SIGTERM)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        sigs = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in sigs}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets=None) -> None:
        self.gateway.begin_drain()

        async def end_stragglers():
            await asyncio.sleep(self.grace)
            if self.gateway.in_flight:
                log.warning("ending %d request(s) still running after the %.0f s grace period",
                            self.gateway.in_flight, self.grace)
                await self.gateway.abort_in_flight()

        stragglers = asyncio.create_task(end_stragglers())
        try:
            await super().shutdown(sockets)
        finally:
            stragglers.cancel()


def uvicorn_server(server: Server, sock=None) -> uvicorn.Server:
    s = server.settings
    config = uvicorn.Config(
        server.app, host=s.host, port=s.port, log_level=s.log_level,
        http=protocol_for(ConnectionLimits.of(s)), timeout_keep_alive=s.keep_alive,
        timeout_graceful_shutdown=s.grace_seconds + 5,  # after the grace, streams end quickly
        proxy_headers=False, server_header=False,
        # tenshu logs each request itself, when it ends (api/metrics.py's access log): uvicorn's
        # line would come when the headers go out, before a stream has run, and twice over
        access_log=False,
    )
    return _GracefulServer(config, server.gateway, s.grace_seconds)


def run(server: Server) -> None:
    settle_heap()
    uvicorn_server(server).run()
    _exit_if_work_lingers(LINGER_SECONDS)


LINGER_SECONDS = 3.0


def _exit_if_work_lingers(seconds: float) -> None:
    """The last guarantee that a stop ends the process. By now uvicorn has stopped, requests have
    been ended and state written; what may remain is work in a worker thread nobody waits for
    (a long tokenization, an embedding batch), which Python would otherwise wait for at exit,
    however long it takes. Such work gets a few seconds to notice the stop, then the process
    exits without it."""
    deadline = time.monotonic() + seconds
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
    lingering = [t.name for t in threading.enumerate()
                 if t is not threading.current_thread() and not t.daemon and t.is_alive()]
    if lingering:
        log.warning("exiting with work still running in %s", ", ".join(lingering))
        logging.shutdown()
        os._exit(0)


def settle_heap() -> None:
    """Move what start-up allocated out of the garbage collector's sight, and collect less often.

    Loading torch, transformers and the models leaves millions of long-lived objects; a full
    collection walks them all and, on the 2-core machine of docs/benchmarks.md, stalled the event
    loop for up to 270 ms, every few hundred requests. Frozen, they are never scanned again (nor
    freed: they live as long as the server anyway), and a full collection sees only what requests
    allocate. A routed request leaves a few hundred objects for the collector, so at the default
    threshold (700) the youngest generation was collected about every other request; at 20,000,
    every few dozen: 8% less CPU per request in benchmarks/router.py.

    `tenshu serve` turns the collector off while it starts (cli/serve.py): it would otherwise
    walk the growing heap again and again as the imports fill it. It is turned on here.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)
    gc.enable()
