"""`tenshu connect`: each tool's own settings files, real ones in a temporary home, written,
rewritten, shown and undone; and Claude Code itself, run with nothing but what connect wrote."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from tenshu.cli import main as tenshu
from tenshu.config import ModelSpec
from tenshu.store import open_store

KEY = "tsk-AbCdEfGh" + "x" * 32  # the shape of a tenshu key; its first 12 are its prefix
URL = "http://127.0.0.1:7311"
CLAUDE = Path(__file__).resolve().parents[2] / ".venv/claude-code/node_modules/.bin/claude"

# What a person already has in each tool's files, which connect must keep.
EXISTING = {
    "claude-code": {
        ".claude/settings.json": '{\n    "theme": "dark",\n    "env": {\n        "FOO": "bar",\n'
                                 '        "ANTHROPIC_API_KEY": "sk-ant-my-own"\n    }\n}\n',
        ".claude.json": '{\n  "numStartups": 7,\n  "mcpServers": {\n    "mine": {"type": "stdio", '
                        '"command": "mine-mcp"}\n  }\n}',
    },
    "codex": {
        "codex/config.toml": '# my Codex\nmodel = "gpt-5"  # the one I like\n\n'
                             '[mcp_servers.mine]\ncommand = "mine-mcp"\n',
    },
    "cursor": {
        ".cursor/mcp.json": '{\n  "mcpServers": {\n    "mine": {"command": "mine-mcp"}\n  }\n}\n',
    },
    "opencode": {
        "xdg/opencode/opencode.json": '{\n  "theme": "opencode",\n  "mcp": {\n    "mine": '
                                      '{"type": "local", "command": ["mine-mcp"]}\n  }\n}\n',
    },
}
FILE_TOOLS = list(EXISTING)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A person's home, and the folders each tool and tenshu read from the environment."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "codex"))
    monkeypatch.setenv("TENSHU_HOME", str(tmp_path / "tenshu"))
    for name in ("TENSHU_API_KEY", "CLAUDE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def connect(capsys, *args: str) -> tuple[int, str, str]:
    code = tenshu(["connect", *args])
    out, err = capsys.readouterr()
    return code, out, err


def put(home: Path, tool: str) -> dict[str, bytes]:
    """The tool's existing files, written into the home; their bytes, by name."""
    for name, text in EXISTING[tool].items():
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text(text)
    return snapshot(home, tool)


def snapshot(home: Path, tool: str) -> dict[str, bytes | None]:
    files = {name: home / name for name in EXISTING[tool]}
    return {name: path.read_bytes() if path.exists() else None for name, path in files.items()}


def read(home: Path, name: str) -> dict:
    text = (home / name).read_text()
    return tomllib.loads(text) if name.endswith(".toml") else json.loads(text)


def check_connected(home: Path, tool: str, key: str, url: str = URL, model: str = "tenshu-tiny",
                    kept: bool = True):
    """The tool's files send it to tenshu and, if `kept`, still hold what the person had."""
    bearer = {"Authorization": f"Bearer {key}"}
    if tool == "claude-code":
        settings = read(home, ".claude/settings.json")
        env = dict(settings["env"])
        if kept:
            assert settings["theme"] == "dark" and env.pop("FOO") == "bar"
        assert env == {
            "ANTHROPIC_BASE_URL": url,
            "ANTHROPIC_AUTH_TOKEN": key,
            "ANTHROPIC_API_KEY": "",
            "ANTHROPIC_DEFAULT_OPUS_MODEL": model,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
            "ANTHROPIC_SMALL_FAST_MODEL": model,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        state = read(home, ".claude.json")
        assert state["mcpServers"]["tenshu"] == {"type": "http", "url": f"{url}/mcp",
                                                 "headers": bearer}
        if kept:
            assert state["numStartups"] == 7 and state["mcpServers"]["mine"]["command"]
    elif tool == "codex":
        config = read(home, "codex/config.toml")
        assert config["model_providers"]["tenshu"] == {
            "name": "tenshu", "base_url": f"{url}/v1", "wire_api": "responses",
            "experimental_bearer_token": key}
        assert config["mcp_servers"]["tenshu"] == {"url": f"{url}/mcp", "http_headers": bearer}
        if kept and config.get("model") == "gpt-5":
            text = (home / "codex/config.toml").read_text()
            assert text.startswith('# my Codex\nmodel = "gpt-5"  # the one I like\n')
    elif tool == "cursor":
        servers = read(home, ".cursor/mcp.json")["mcpServers"]
        assert servers["tenshu"] == {"url": f"{url}/mcp", "headers": bearer}
        assert not kept or servers["mine"] == {"command": "mine-mcp"}
    else:
        config = read(home, "xdg/opencode/opencode.json")
        assert config["provider"]["tenshu"] == {
            "npm": "@ai-sdk/openai-compatible", "name": "tenshu",
            "options": {"baseURL": f"{url}/v1", "apiKey": key}, "models": {model: {}}}
        assert config["mcp"]["tenshu"] == {"type": "remote", "url": f"{url}/mcp",
                                           "headers": bearer}
        assert not kept or (config["theme"], config["mcp"]["mine"]["type"]) == ("opencode",
                                                                                 "local")


@pytest.mark.parametrize("tool", FILE_TOOLS)
def test_connect_writes_the_tools_settings_and_keeps_the_rest(home, capsys, tool):
    before = put(home, tool)
    code, out, err = connect(capsys, tool, "--key", KEY)
    assert code == 0, err
    check_connected(home, tool, KEY)
    for name in EXISTING[tool]:
        assert (home / f"{name}.tenshu-backup").read_bytes() == before[name]
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600  # it holds the key now
    assert f"{tool} now uses tenshu at {URL}" in out
    assert KEY not in out + err
    if tool == "claude-code":  # the person's own layout: four-space indents, kept
        assert '\n    "theme": "dark",' in (home / ".claude/settings.json").read_text()
        assert not (home / ".claude.json").read_text().endswith("\n")


@pytest.mark.parametrize("tool", FILE_TOOLS)
def test_connecting_again_changes_nothing(home, capsys, tool):
    put(home, tool)
    assert connect(capsys, tool, "--key", KEY)[0] == 0
    connected = snapshot(home, tool)
    backups = {n: (home / f"{n}.tenshu-backup").read_bytes() for n in EXISTING[tool]}
    code, out, _ = connect(capsys, tool, "--key", KEY)
    assert code == 0
    assert "already connected" in out
    assert snapshot(home, tool) == connected
    assert {n: (home / f"{n}.tenshu-backup").read_bytes() for n in EXISTING[tool]} == backups


@pytest.mark.parametrize("tool", FILE_TOOLS)
def test_a_dry_run_shows_a_masked_diff_and_writes_nothing(home, capsys, tool):
    before = put(home, tool)
    code, out, _ = connect(capsys, tool, "--key", KEY, "--dry-run")
    assert code == 0
    assert snapshot(home, tool) == before
    assert not list(home.rglob("*.tenshu-backup")) and not (home / "tenshu/connect").exists()
    assert "+++ " in out and "/mcp" in out
    assert KEY not in out and KEY[:12] in out  # the prefix says which key, the rest is hidden
    if tool == "claude-code":
        assert "sk-ant-my-own" not in out  # nor does the person's own key show


@pytest.mark.parametrize("tool", FILE_TOOLS)
def test_undo_puts_the_original_bytes_back(home, capsys, tool):
    before = put(home, tool)
    assert connect(capsys, tool, "--key", KEY)[0] == 0
    assert connect(capsys, tool, "--key", KEY)[0] == 0
    code, out, _ = connect(capsys, tool, "--undo")
    assert code == 0 and "no longer uses tenshu" in out
    assert snapshot(home, tool) == before
    assert not list(home.rglob("*.tenshu-backup"))
    assert "nothing to undo" in connect(capsys, tool, "--undo")[1]


@pytest.mark.parametrize("tool", FILE_TOOLS)
def test_files_connect_made_are_owner_only_and_undo_removes_them(home, capsys, tool):
    assert connect(capsys, tool, "--key", KEY)[0] == 0
    check_connected(home, tool, KEY, kept=False)
    for name in EXISTING[tool]:
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600
        assert not (home / f"{name}.tenshu-backup").exists()  # nothing to keep
    assert connect(capsys, tool, "--undo")[0] == 0
    assert set(snapshot(home, tool).values()) == {None}


@pytest.mark.parametrize("tool", FILE_TOOLS)
def test_a_malformed_file_is_an_error_naming_it_and_nothing_is_written(home, capsys, tool):
    name = next(iter(EXISTING[tool]))
    broken = '[mcp_servers\nurl = "x"\n' if name.endswith(".toml") else '{\n  "a": 1,\n  oops\n}\n'
    put(home, tool)
    (home / name).write_text(broken)
    before = snapshot(home, tool)
    code, out, err = connect(capsys, tool, "--key", KEY)
    assert code == 1
    assert str(home / name) in err and "line " in err and "Traceback" not in err
    assert snapshot(home, tool) == before
    assert not list(home.rglob("*.tenshu-backup")) and not (home / "tenshu/connect").exists()


def test_without_a_key_one_is_made_in_the_local_store_and_kept(home, capsys):
    code, out, _ = connect(capsys, "claude-code")
    assert code == 0
    assert "made the API key 'claude-code'" in out and "first key" in out
    token = read(home, ".claude/settings.json")["env"]["ANTHROPIC_AUTH_TOKEN"]
    check_connected(home, "claude-code", token, kept=False)
    with open_store(home / "tenshu/state.db") as store:
        assert store.keys.verify(token).name == "claude-code"
    # again: the key it wrote is reused, so nothing changes and no second key is made
    files = snapshot(home, "claude-code")
    assert "already connected" in connect(capsys, "claude-code")[1]
    assert snapshot(home, "claude-code") == files
    with open_store(home / "tenshu/state.db") as store:
        assert [k.name for k in store.keys.list()] == ["claude-code"]
    assert "tenshu keys revoke claude-code" in connect(capsys, "claude-code", "--undo")[1]


def test_the_key_comes_from_tenshu_api_key(home, capsys, monkeypatch):
    monkeypatch.setenv("TENSHU_API_KEY", KEY)
    assert connect(capsys, "cursor")[0] == 0
    check_connected(home, "cursor", KEY, kept=False)
    assert not (home / "tenshu/state.db").exists()


def test_another_machines_server_needs_a_key(home, capsys):
    code, _, err = connect(capsys, "codex", "--url", "https://tenshu.example.net")
    assert code == 1 and "--key" in err
    assert not (home / "codex").exists()


def test_undo_keeps_what_the_tool_wrote_since(home, capsys):
    """Claude Code rewrites ~/.claude.json as it runs: undo takes out tenshu's server only."""
    before = put(home, "claude-code")
    assert connect(capsys, "claude-code", "--key", KEY)[0] == 0
    state = read(home, ".claude.json") | {"numStartups": 8, "projects": {"/work": {}}}
    (home / ".claude.json").write_text(json.dumps(state, indent=2))
    files = snapshot(home, "claude-code")
    code, out, _ = connect(capsys, "claude-code", "--undo", "--dry-run")
    assert code == 0 and '-    "tenshu": {' in out and KEY not in out
    assert snapshot(home, "claude-code") == files
    code, out, _ = connect(capsys, "claude-code", "--undo")
    assert code == 0 and "reverted tenshu's entries" in out
    assert (home / ".claude/settings.json").read_bytes() == before[".claude/settings.json"]
    assert read(home, ".claude.json") == {"numStartups": 8, "projects": {"/work": {}},
                                          "mcpServers": {"mine": {"type": "stdio",
                                                                  "command": "mine-mcp"}}}


def test_models_and_url(home, capsys):
    url = "http://127.0.0.1:8123"
    code, _, _ = connect(capsys, "claude-code", "--key", KEY, "--url", url + "/",
                         "--model", "auto", "--haiku", "small")
    assert code == 0
    env = read(home, ".claude/settings.json")["env"]
    assert env["ANTHROPIC_BASE_URL"] == url
    assert (env["ANTHROPIC_DEFAULT_OPUS_MODEL"], env["ANTHROPIC_DEFAULT_SONNET_MODEL"],
            env["ANTHROPIC_DEFAULT_HAIKU_MODEL"], env["ANTHROPIC_SMALL_FAST_MODEL"]) == \
        ("auto", "auto", "small", "small")
    assert connect(capsys, "codex", "--url", url + "/v1", "--key", KEY)[0] == 1


def test_codex_default_makes_tenshu_its_model_and_undo_takes_it_back(home, capsys):
    before = put(home, "codex")
    code, out, _ = connect(capsys, "codex", "--key", KEY)
    assert code == 0 and "codex -c model_provider=tenshu -m tenshu-tiny" in out
    config = read(home, "codex/config.toml")
    assert config["model"] == "gpt-5" and "model_provider" not in config
    assert connect(capsys, "codex", "--key", KEY, "--default", "--model", "local-coder")[0] == 0
    config = read(home, "codex/config.toml")
    check_connected(home, "codex", KEY)
    assert (config["model_provider"], config["model"]) == ("tenshu", "local-coder")
    assert config["mcp_servers"]["mine"] == {"command": "mine-mcp"}
    assert connect(capsys, "codex", "--undo")[0] == 0
    assert snapshot(home, "codex") == before


def test_opencode_default(home, capsys):
    assert connect(capsys, "opencode", "--key", KEY, "--default")[0] == 0
    assert read(home, "xdg/opencode/opencode.json")["model"] == "tenshu/tenshu-tiny"
    assert connect(capsys, "cursor", "--key", KEY, "--default")[0] == 1


def test_env_prints_exports_and_writes_nothing(home, capsys):
    code, out, _ = connect(capsys, "env", "--key", KEY)
    assert code == 0
    assert out.splitlines() == [
        f"export OPENAI_BASE_URL={URL}/v1",
        f"export OPENAI_API_KEY={KEY}",
        f"export ANTHROPIC_BASE_URL={URL}",
        f"export ANTHROPIC_AUTH_TOKEN={KEY}",
        f"export OLLAMA_HOST={URL}",
    ]
    assert sorted(p.name for p in home.iterdir()) == []


# -- Claude Code itself ---------------------------------------------------------------------------


@pytest.mark.skipif(not CLAUDE.exists() or shutil.which("node") is None,
                    reason="Claude Code is not installed (`make install` installs it; needs node)")
def test_claude_code_answers_through_tenshu_with_only_what_connect_wrote(
        home, capsys, checkpoint, tmp_path_factory):
    from tests.api.live import live_server

    path = checkpoint("qwen3", max_position_embeddings=32768)  # holds Claude Code's prompt
    state = tmp_path_factory.mktemp("connect-state") / "state.db"
    with live_server(state, models=(ModelSpec("local-coder", str(path)),), embedder=False,
                     kv_cache_memory_gib=0.25, max_num_seqs=4) as live:
        code, _, err = connect(capsys, "claude-code", "--url", live.base_url, "--key", live.key,
                               "--opus", "local-coder", "--sonnet", "local-coder",
                               "--haiku", "local-coder")
        assert code == 0, err
        backend = live.gateway.backend_for("local-coder")
        seen_before = backend.prefix_cache_counts()[0]
        env = {name: value for name, value in os.environ.items()
               if not name.startswith("ANTHROPIC_") and name != "CLAUDE_CONFIG_DIR"}
        done = subprocess.run([str(CLAUDE), "-p", "say hello", "--output-format", "json"],
                              env={**env, "HOME": str(home)}, cwd=home, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["type"] == "result" and not result["is_error"], result
        assert backend.prefix_cache_counts()[0] - seen_before > 5000  # its prompt reached tenshu
        # and tenshu's MCP server, from ~/.claude.json, answers the key connect put there
        listed = subprocess.run([str(CLAUDE), "mcp", "list"], env={**env, "HOME": str(home)},
                                cwd=home, capture_output=True, text=True, timeout=120)
        line = next(s for s in listed.stdout.splitlines() if s.startswith("tenshu:"))
        assert f"{live.base_url}/mcp" in line and "Connected" in line, listed.stdout
