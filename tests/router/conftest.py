"""Fixtures for routing tests: another tenshu process as the upstream, and a tenshu in front.

The upstream is a real `tenshu serve` in its own process, speaking all three protocols over a
random checkpoint whose window holds Claude Code's prompt. Tests put fault proxies
(tests/faultproxy.py) between the two, mark the upstream `cloud`, and watch what the front
tenshu does when it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import httpx
import pytest

from tenshu.config import DEFAULT_MODEL_DIR, load_server_settings
from tests.api.live import free_port, live_server

UPSTREAM_MODEL = "up"
NARROW_MODEL = "narrow"  # the built-in tenshu-tiny: a 512-token window


class Upstream:
    def __init__(self, url: str, process: subprocess.Popen):
        self.url = url
        self.process = process


@pytest.fixture(scope="session")
def wide_checkpoint(checkpoint):
    """The random Qwen3-shaped checkpoint of the Claude Code tests (32k window)."""
    return checkpoint("qwen3", max_position_embeddings=32768)


@pytest.fixture(scope="session")
def upstream(tmp_path_factory, wide_checkpoint):
    """`tenshu serve` in its own process: no keys, loopback only, models `up` (a 32k window)
    and `narrow` (512)."""
    home = tmp_path_factory.mktemp("upstream-home")
    (home / "tenshu.toml").write_text("[server]\nembedder = false\nlog_level = \"warning\"\n")
    port = free_port()
    log = (home / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tenshu", "serve", "--model",
         f"{UPSTREAM_MODEL}={wide_checkpoint}", "--model", f"{NARROW_MODEL}={DEFAULT_MODEL_DIR}",
         "--port", str(port), "--kv-cache-gib", "0.25"],
        env={**os.environ, "TENSHU_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the upstream tenshu did not start:\n"
                               + (home / "serve.log").read_text()[-3000:])
        time.sleep(0.2)
    try:
        yield Upstream(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def routing_settings(tmp_path: Path, text: str) -> dict:
    """The routing fields of ServerSettings for a tenshu.toml text, for `live_server`."""
    file = tmp_path / "tenshu.toml"
    file.write_text(text)
    settings = load_server_settings(file)
    names = ("models", "tiers", "routes", "budgets", "router")
    return {f.name: getattr(settings, f.name) for f in fields(settings) if f.name in names}


def front_server(tmp_path: Path, text: str, **settings):
    """A live tenshu (in this process) with the routing of `text`, and an API key."""
    return live_server(tmp_path / "state.db", embedder=False, kv_cache_memory_gib=0.25,
                       max_num_seqs=8, **routing_settings(tmp_path, text), **settings)
