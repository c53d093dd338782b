"""Codex itself in `--oss` mode, pointed at a live tenshu as at a local Ollama: it must accept
tenshu's /api/version (it wants 0.13.4 or later), find or "pull" the model, and answer over
/v1/responses.

Skipped where Codex is not installed: `npm install --prefix .venv/codex @openai/codex` puts it
where this test looks (or have `codex` on PATH). It runs with HOME in a temporary directory, so
the user's own settings are neither read nor touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tenshu.config import ModelSpec
from tests.api.live import live_server
from tests.chat.conftest import TEMPLATES

_LOCAL = Path(__file__).resolve().parents[2] / ".venv/codex/node_modules/.bin/codex"
CODEX = str(_LOCAL) if _LOCAL.exists() else shutil.which("codex")

pytestmark = pytest.mark.skipif(CODEX is None, reason="Codex is not installed")


@pytest.fixture(scope="module")
def wide_server(tmp_path_factory, checkpoint):
    """A random Qwen3-shaped checkpoint whose 32k window holds Codex's prompt."""
    path = tmp_path_factory.mktemp("codex-coder")
    shutil.copytree(checkpoint("qwen3", max_position_embeddings=32768), path, dirs_exist_ok=True)
    (path / "chat_template.jinja").write_text(TEMPLATES["qwen"])
    state = tmp_path_factory.mktemp("codex-state") / "state.db"
    with live_server(state, key_name=None, models=(ModelSpec("coder", str(path)),),
                     embedder=False, kv_cache_memory_gib=0.5, max_num_seqs=4) as live:
        yield live


def test_codex_oss_answers_through_tenshu(wide_server, tmp_path):
    (tmp_path / ".codex").mkdir()
    env = {**os.environ, "HOME": str(tmp_path), "CODEX_HOME": str(tmp_path / ".codex"),
           "CODEX_OSS_BASE_URL": f"{wide_server.base_url}/v1"}
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_OSS_PORT"):
        env.pop(name, None)
    backend = wide_server.gateway.backend_for("coder")
    seen_before = backend.prefix_cache_counts()[0]
    done = subprocess.run(
        [CODEX, "exec", "--oss", "--local-provider", "ollama", "-m", "coder",
         "--skip-git-repo-check", "say hello"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "too old" not in done.stderr
    assert done.stdout.strip()  # a random model's words, but words that reached the terminal
    assert backend.prefix_cache_counts()[0] - seen_before > 2000  # Codex's own prompt
