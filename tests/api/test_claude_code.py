"""Claude Code itself, pointed at a live tenshu server: `claude -p` must answer, run a tool and
send its result back, or report a context overflow, and never hang.

`make install` puts Claude Code into .venv/claude-code; the tests are skipped where it (or node)
is missing. Claude Code runs with HOME in a temporary directory, so the user's own settings are
neither read nor touched, and with every model alias mapped to the served model.

Its prompt (system prompt, tool definitions and reminders) runs to many thousand tokens; the
test checkpoints' template knows no tools, so tenshu adds Claude Code's tool definitions to the
system prompt in its generic format (docs/structured-output.md). The answering tests serve a
random checkpoint with a 32k window.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tenshu.config import ModelSpec
from tests.api.live import live_server

CLAUDE = Path(__file__).resolve().parents[2] / ".venv/claude-code/node_modules/.bin/claude"
TIMEOUT = 300  # seconds; Claude Code gives up on its own well before this

pytestmark = pytest.mark.skipif(
    not CLAUDE.exists() or shutil.which("node") is None,
    reason="Claude Code is not installed (`make claude-code` installs it; it needs node)",
)


def claude(server, model: str, prompt: str, home: Path, *args: str,
           headers: str | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": server.base_url,
        "ANTHROPIC_API_KEY": server.key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "ANTHROPIC_SMALL_FAST_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": model,
    }
    for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_MODEL", "CLAUDE_CONFIG_DIR",
                 "ANTHROPIC_CUSTOM_HEADERS"):
        env.pop(name, None)  # the developer's own Claude Code settings must not leak in
    if headers:
        env["ANTHROPIC_CUSTOM_HEADERS"] = headers
    return subprocess.run(
        [str(CLAUDE), "-p", prompt, "--model", model, *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.fixture(scope="module")
def wide_server(tmp_path_factory, checkpoint):
    """A random Qwen3-shaped checkpoint whose window holds Claude Code's whole prompt."""
    path = checkpoint("qwen3", max_position_embeddings=32768)
    state = tmp_path_factory.mktemp("claude-code-state") / "state.db"
    with live_server(
        state,
        models=(ModelSpec("local-coder", str(path)),),
        embedder=False,
        kv_cache_memory_gib=0.25,
        max_num_seqs=4,
    ) as live:
        yield live


def test_claude_code_answers_through_tenshu(wide_server, tmp_path):
    backend = wide_server.gateway.backend_for("local-coder")
    seen_before = backend.prefix_cache_counts()[0]
    done = claude(wide_server, "local-coder", "say hello", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip()  # a random model's words, but words that reached the terminal
    # Claude Code's own prompt went through the model, not a shortened one
    assert backend.prefix_cache_counts()[0] - seen_before > 5000


def test_claude_code_runs_a_forced_tool_and_sends_its_result_back(wide_server, tmp_path):
    """A random model never calls a tool by itself; x-tenshu-tool-choice forces Read on the
    turn that starts from the prompt. Claude Code must run the call tenshu produced (its path
    is whatever the random model wrote, so Read reports an error, which is still the tool's
    result), send the tool_result back, get its final answer and finish the session."""
    (tmp_path / "notes.txt").write_text("the meeting is at noon\n")
    done = claude(wide_server, "local-coder", "read notes.txt", tmp_path,
                  "--output-format", "stream-json", "--verbose", "--max-turns", "3",
                  headers="x-tenshu-tool-choice: Read")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    messages = [e["message"] for e in events if e.get("type") in ("assistant", "user")]
    uses = [b for m in messages if m["role"] == "assistant" for b in m["content"]
            if b["type"] == "tool_use"]
    results = [b for m in messages if m["role"] == "user" and isinstance(m["content"], list)
               for b in m["content"] if b["type"] == "tool_result"]
    assert [u["name"] for u in uses] == ["Read"]
    assert isinstance(uses[0]["input"]["file_path"], str)  # the call passed Claude Code's checks
    assert [r["tool_use_id"] for r in results] == [uses[0]["id"]]
    final = events[-1]
    assert final["type"] == "result" and final["subtype"] == "success", final
    assert final["num_turns"] == 2


def test_claude_code_reports_a_prompt_too_long_for_the_model(server, tmp_path):
    """tenshu-tiny's 512-token window cannot hold Claude Code's prompt: Claude Code must say so
    and stop (subprocess.run raises if it hangs past the timeout)."""
    done = claude(server, "tenshu-tiny", "say hello", tmp_path)
    output = (done.stdout + done.stderr).lower()
    assert done.returncode != 0 or "too long" in output
    assert "prompt is too long" in output, output
