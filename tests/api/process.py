"""`tenshu serve` in a process of its own, for tests that must kill, signal or trace it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.api.live import free_port


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen
    home: Path
    wrapped: bool = False  # `process` is a wrapper (strace) with the server under it

    def log(self) -> str:
        return (self.home / "serve.log").read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send `sig` and wait for the exit code (raises TimeoutExpired if it does not end)."""
        if self.process.poll() is None:
            if self.wrapped:
                # strace blocks fatal signals while its command runs (-I3, its default with
                # -o): the server must get the signal itself, and strace ends when it ends.
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)
        return self.process.wait(timeout)


def start(home: Path, *args: str, wrapper: tuple[str, ...] = (), port: int | None = None,
          ready_timeout: float = 180, checkout: Path | None = None) -> ServerProcess:
    """Start `tenshu serve ARGS` with TENSHU_HOME=home (a process of its own, its output in
    home/serve.log) and wait until it is ready. `wrapper` runs it under another command
    (strace); `checkout` runs another clone's tenshu (a benchmark's "before")."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = (home / "serve.log").open("a")
    env = {**os.environ, "TENSHU_HOME": str(home)}
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    process = subprocess.Popen(
        [*wrapper, sys.executable, "-m", "tenshu", "serve", "--port", str(port), *args],
        env=env, cwd=checkout, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)  # a group of its own: `running` ends wrapper and server alike
    log.close()
    server = ServerProcess(f"http://127.0.0.1:{port}", process, home, wrapped=bool(wrapper))
    deadline = time.monotonic() + ready_timeout
    while True:
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"tenshu serve did not start:\n{server.log()[-3000:]}")
        time.sleep(0.2)


@contextmanager
def running(home: Path, *args: str, **options):
    """`start`, and on the way out stop it (SIGTERM, then SIGKILL if it lingers)."""
    server = start(home, *args, **options)
    try:
        yield server
    finally:
        try:
            server.stop(timeout=60)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
        # A wrapper (strace) that is stopped detaches and leaves the server running: end
        # whatever is left of the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
