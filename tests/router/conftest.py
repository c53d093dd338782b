"""Fixtures for routing tests: another tenshu process as the upstream, and a tenshu in front.

The upstream is a real `tenshu serve` in its own process, speaking all three protocols over a
random checkpoint whose window holds Claude Code's prompt. Tests put fault proxies
(tests/faultproxy.py) between the two, mark the upstream `cloud`, and watch what the front
tenshu does when it fails.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from tenshu.config import DEFAULT_MODEL_DIR, load_server_settings
from tests.api import process
from tests.api.live import live_server

UPSTREAM_MODEL = "up"
NARROW_MODEL = "narrow"  # the built-in tenshu-tiny: a 512-token window


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
    with process.running(home, "--model", f"{UPSTREAM_MODEL}={wide_checkpoint}", "--model",
                         f"{NARROW_MODEL}={DEFAULT_MODEL_DIR}", "--kv-cache-gib", "0.25") as up:
        yield up


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
