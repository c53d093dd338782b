"""Codex itself against a live tenshu, twice over: in `--oss` mode, pointed at tenshu as at a
local Ollama (it must accept tenshu's /api/version, which must be 0.13.4 or later, find or "pull"
the model, and answer over /v1/responses); and as a model provider, configured by nothing but
what `tenshu connect codex` wrote, on a server that requires a key. As a provider Codex also
sends its MCP servers' tools as `namespace` tools and offers OpenAI's hosted web_search on
every turn (tests/api/test_responses.py has what tenshu makes of each).

Skipped where Codex is not installed: `make install` puts it in .venv/codex, where this test
looks (or have `codex` on PATH). It runs with HOME and CODEX_HOME in a temporary directory and
OPENAI_* removed, so the user's own settings are neither read nor touched, and nothing calls
OpenAI.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tenshu.cli import main as tenshu
from tenshu.config import ModelSpec
from tests.api.live import live_server
from tests.chat.conftest import TEMPLATES

_LOCAL = Path(__file__).resolve().parents[2] / ".venv/codex/node_modules/.bin/codex"
CODEX = str(_LOCAL) if _LOCAL.exists() else shutil.which("codex")

pytestmark = pytest.mark.skipif(CODEX is None, reason="Codex is not installed")


@pytest.fixture(scope="module")
def wide_server(tmp_path_factory, checkpoint):
    """A random Qwen3-shaped checkpoint whose 32k window holds Codex's prompt; no key yet."""
    path = tmp_path_factory.mktemp("codex-coder")
    shutil.copytree(checkpoint("qwen3", max_position_embeddings=32768), path, dirs_exist_ok=True)
    (path / "chat_template.jinja").write_text(TEMPLATES["qwen"])
    state = tmp_path_factory.mktemp("codex-state") / "state.db"
    with live_server(state, key_name=None, models=(ModelSpec("coder", str(path)),),
                     embedder=False, kv_cache_memory_gib=0.5, max_num_seqs=4) as live:
        yield live


@pytest.fixture
def keyed(wide_server):
    """The module's server with a key, for one test: while a key is active the server requires
    one of every request, loopback's too. Revoked after it, as `--oss` mode sends none."""
    store = wide_server.server.store
    record, key = store.keys.create(f"codex-{secrets.token_hex(3)}")
    yield record, key
    store.keys.revoke(record.name)


def codex_env(home: Path) -> dict:
    (home / ".codex").mkdir(exist_ok=True)
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("OPENAI_", "CODEX_"))}
    return {**env, "HOME": str(home), "CODEX_HOME": str(home / ".codex")}


def codex_exec(home: Path, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CODEX, "exec", *flags, "--skip-git-repo-check", "say hello"],
                          env=env or codex_env(home), cwd=home, capture_output=True, text=True,
                          timeout=300)


def test_codex_oss_answers_through_tenshu(wide_server, tmp_path):
    env = {**codex_env(tmp_path), "CODEX_OSS_BASE_URL": f"{wide_server.base_url}/v1"}
    backend = wide_server.gateway.backend_for("coder")
    seen_before = backend.prefix_cache_counts()[0]
    done = codex_exec(tmp_path, "--oss", "--local-provider", "ollama", "-m", "coder", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "too old" not in done.stderr
    assert done.stdout.strip()  # a random model's words, but words that reached the terminal
    assert backend.prefix_cache_counts()[0] - seen_before > 2000  # Codex's own prompt


@pytest.mark.parametrize("connect_flags, codex_flags", [
    ((), ("-c", "model_provider=tenshu", "-m", "coder")),  # as connect's own hint says
    (("--default",), ()),
], ids=["chosen", "default"])
def test_codex_answers_through_tenshu_with_only_what_connect_wrote(
        wide_server, keyed, tmp_path, monkeypatch, connect_flags, codex_flags):
    record, key = keyed
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / ".codex"))
    monkeypatch.setenv("TENSHU_HOME", str(tmp_path / "tenshu"))
    assert tenshu(["connect", "codex", "--url", wide_server.base_url, "--key", key,
                   "--model", "coder", *connect_flags]) == 0
    keyless = httpx.post(f"{wide_server.base_url}/v1/responses", timeout=30,
                         json={"model": "coder", "input": "hi", "max_output_tokens": 2})
    assert keyless.status_code == 401  # so an answer below came with connect's key

    backend = wide_server.gateway.backend_for("coder")
    seen_before = backend.prefix_cache_counts()[0]
    done = codex_exec(tmp_path, *codex_flags)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "provider: tenshu" in done.stderr and "model: coder" in done.stderr
    assert done.stdout.strip()
    assert backend.prefix_cache_counts()[0] - seen_before > 2000  # Codex's own prompt
    assert "/v1/responses" in answered_with(wide_server, record.id)
    # and the MCP server connect wrote is one Codex reads as meant: on, with the key as a bearer
    listed = subprocess.run([CODEX, "mcp", "list"], env=codex_env(tmp_path), cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    (line,) = [s for s in listed.stdout.splitlines() if s.startswith("tenshu ")]
    assert line.split()[1:] == [f"{wide_server.base_url}/mcp", "-", "enabled", "Bearer", "token"]


def answered_with(live, key_id: int) -> list[str]:
    """The routes the key's requests went to that were answered, once the audit writer (which
    flushes every half second) has logged them."""
    deadline = time.monotonic() + 10
    while True:
        rows = live.server.store.audit.recent(50)
        routes = [r.route for r in rows if r.key_id == key_id and r.status == 200]
        if routes or time.monotonic() > deadline:
            return routes
        time.sleep(0.2)
