"""Build and run the whole server: models, gateway, state store, app, and uvicorn.

`build_server(settings)` loads every configured model (or the built-in default) and returns a
Server whose `app` any ASGI server can run; `run(server)` runs it with uvicorn and shuts down
gracefully: on SIGTERM/SIGINT it stops accepting, lets requests in flight finish for
`grace_seconds`, then ends those still running with the protocol's error event and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from dataclasses import dataclass

import uvicorn

from tenshu.api.app import create_app
from tenshu.api.auth import Authenticator
from tenshu.api.metrics import Metrics
from tenshu.backends.embedded import EmbeddedBackend
from tenshu.backends.embedding import DEFAULT_EMBEDDER, SentenceEmbedder, default_embedder_path
from tenshu.config import ServerSettings, state_db_path
from tenshu.engine import EngineConfig
from tenshu.gateway import Gateway
from tenshu.store import open_store

log = logging.getLogger("tenshu.server")


@dataclass
class Server:
    settings: ServerSettings
    gateway: Gateway
    store: object
    metrics: Metrics
    app: object


def build_server(settings: ServerSettings, state_db=None) -> Server:
    store = open_store(state_db or state_db_path())
    auth = Authenticator(store.keys, settings.require_keys)
    if not settings.loopback and not store.keys.any_active():
        store.close()
        raise ValueError(
            f"refusing to listen on {settings.host} without API keys: anyone who can reach "
            "this address could use the server. Create a key first (`tenshu keys create "
            "--name NAME`), or bind to 127.0.0.1")
    backends = {}
    for spec in settings.served_models():
        log.info("loading %s from %s", spec.name, spec.path)
        backends[spec.name] = EmbeddedBackend(spec.name, EngineConfig(
            model=spec.path, dtype=settings.dtype, device=settings.device,
            kv_cache_memory_gib=settings.kv_cache_memory_gib,
            max_num_seqs=settings.max_num_seqs))
    embedders = {}
    if settings.embedder and (path := default_embedder_path()) is not None:
        embedders[DEFAULT_EMBEDDER] = SentenceEmbedder(DEFAULT_EMBEDDER, path)
    metrics = Metrics()
    audit = store.audit_writer()
    gateway = Gateway(backends, embedders, max_queue=settings.max_queue, observer=metrics,
                      audit=audit)
    metrics.attach(gateway)
    app = create_app(settings, gateway, auth, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await audit.start()
        try:
            yield
        finally:
            await audit.close()
            gateway.close()
            store.close()

    app.router.lifespan_context = lifespan
    return Server(settings, gateway, store, metrics, app)


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
        timeout_graceful_shutdown=s.grace_seconds + 5,  # after the grace, streams end quickly
        proxy_headers=False, server_header=False, access_log=s.log_level == "debug",
    )
    return _GracefulServer(config, server.gateway, s.grace_seconds)


def run(server: Server) -> None:
    uvicorn_server(server).run()
