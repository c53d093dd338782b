"""A real tenshu server on loopback, in a background thread, for tests that use real clients."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from tenshu.api.server import Server, build_server, uvicorn_server
from tenshu.config import ServerSettings


@dataclass
class LiveServer:
    server: Server
    base_url: str  # http://127.0.0.1:PORT
    key: str | None

    @property
    def gateway(self):
        return self.server.gateway

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(state_db, *, key_name: str | None = "tests", adapters_root=None, jobs=None,
                wait_ready: bool = True, **settings):
    """Serve ServerSettings(**settings) on a free port; create an API key first if key_name.
    `adapters_root`: the adapter registry's folder (default: the test session's home's);
    `jobs`: the scheduler's (default: none). Returns once /ready says the models are loaded
    (they load in the background: /health answers before), or with `wait_ready=False` as soon
    as the server answers HTTP."""
    settings.setdefault("port", free_port())
    settings.setdefault("log_level", "warning")
    server = build_server(ServerSettings(**settings), state_db=state_db,
                          adapters_root=adapters_root, jobs=jobs or [])
    key = server.store.keys.create(key_name)[1] if key_name else None
    uv = uvicorn_server(server)
    thread = threading.Thread(target=uv.run, name="tenshu-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    live = LiveServer(server, f"http://127.0.0.1:{settings['port']}", key)
    try:
        if wait_ready:
            wait_until_ready(live)
        yield live
    finally:
        uv.should_exit = True
        thread.join(timeout=30)


def wait_until_ready(live: LiveServer, timeout: float = 300) -> None:
    """Poll /ready until it answers 200 (every embedded model loaded); raise with what it said
    if it has not by `timeout` or says a model failed."""
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(f"{live.base_url}/ready", headers=live.headers(), timeout=10)
        if answer.status_code == 200:
            return
        if answer.json().get("status") == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"the test server is not ready: {answer.text}")
        time.sleep(0.05)
