"""A run survives its server: `tenshu serve` (configured by tenshu.toml, as a person would) is
killed with -9 in the middle of a run and started again; the run resumes from its journal
without repeating a finished tool call, re-runs a read-only call that was cut off, and leaves
no MCP server process behind."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.api.process import start

NOTES = Path(__file__).with_name("notes_server.py")
WAIT = 120


def config(checkpoint_path: Path, folder: Path) -> str:
    return f"""
[server]
kv_cache_memory_gib = 0.25
max_num_seqs = 4
embedder = false

[[models]]
name = "agent-model"
path = "{checkpoint_path}"

[mcp.servers.notes]
command = ["{sys.executable}", "{NOTES}", "{folder}"]

[agents.cleaner]
model = "agent-model"
tools = ["mcp:notes"]
force_tools = ["notes__add_note", "notes__delete_notes"]
tool_choice = "none"
max_tokens = 200
approvals = {{ write = "allow" }}

[agents.waiter]
model = "agent-model"
tools = ["notes__wait_forever"]
force_tools = ["notes__wait_forever"]
tool_choice = "none"
max_tokens = 200
tool_timeout_s = 6
"""


def calls(folder: Path) -> list[str]:
    log = folder / "calls.log"
    return log.read_text().split() if log.exists() else []


def servers_alive(folder: Path) -> list[int]:
    """The notes server processes started for `folder` that are still running."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(NOTES).encode() in args and str(folder).encode() in args:
                found.append(int(entry.name))
    return found


def until(url: str, run_id: str, *states: str) -> dict:
    deadline = time.monotonic() + WAIT
    while True:
        run = httpx.get(f"{url}/tenshu/v1/runs/{run_id}", timeout=30).json()
        if run["status"] in states:
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.2)


@pytest.fixture
def home(tmp_path, checkpoint):
    folder = tmp_path / "notes"
    folder.mkdir()
    path = checkpoint("qwen3", max_position_embeddings=8192)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "tenshu.toml").write_text(config(path, folder))
    return tmp_path / "home", folder


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="counts processes through /proc")
def test_a_run_killed_mid_way_resumes_without_repeating_a_finished_call(home):
    home, folder = home
    server = start(home)
    try:
        response = httpx.post(f"{server.url}/tenshu/v1/agents/cleaner/runs",
                              json={"task": "tidy the notes", "wait": WAIT}, timeout=WAIT + 30)
        run = response.json()
        assert run["status"] == "waiting_approval", run
        assert calls(folder) == ["add_note"]
        server.process.kill()  # -9: no shutdown, nothing flushed but what was journaled
        server.process.wait(30)
    finally:
        if server.process.poll() is None:
            server.process.kill()
    # the stdio MCP server's stdin closed with its parent: it is gone too
    deadline = time.monotonic() + 30
    while servers_alive(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert servers_alive(folder) == []

    server = start(home)
    try:
        resumed = until(server.url, run["id"], "waiting_approval", "failed", "succeeded")
        assert resumed["status"] == "waiting_approval", resumed
        pending = httpx.get(f"{server.url}/tenshu/v1/approvals", timeout=30).json()["data"]
        assert [p["name"] for p in pending] == ["notes__delete_notes"]
        approved = httpx.post(f"{server.url}/tenshu/v1/runs/{run['id']}/approve", json={},
                              timeout=30)
        assert approved.status_code == 200, approved.text
        done = until(server.url, run["id"], "succeeded", "failed")
        assert done["status"] == "succeeded", done
        # the note was added once, before the kill; the delete ran once, after it
        assert calls(folder) == ["add_note", "delete_notes"]
        tools = [(s["name"], s["status"]) for s in done["steps"] if s["kind"] == "tool"]
        assert tools == [("notes__add_note", "done"), ("notes__delete_notes", "done")]
    finally:
        server.stop()
    assert servers_alive(folder) == []


def test_a_read_only_call_cut_off_by_a_kill_is_run_again(home):
    home, folder = home
    server = start(home)
    try:
        response = httpx.post(f"{server.url}/tenshu/v1/agents/waiter/runs",
                              json={"task": "wait"}, timeout=30)
        run = response.json()
        deadline = time.monotonic() + WAIT
        while calls(folder) != ["wait_forever"]:  # the call is running
            assert time.monotonic() < deadline
            time.sleep(0.1)
        server.process.kill()
        server.process.wait(30)
    finally:
        if server.process.poll() is None:
            server.process.kill()
    server = start(home)
    try:
        done = until(server.url, run["id"], "succeeded", "failed")
        assert done["status"] == "succeeded", done
        # read-only, so run again rather than asked about: and given up at its timeout
        assert calls(folder) == ["wait_forever", "wait_forever"]
        step = [s for s in done["steps"] if s["kind"] == "tool"][0]
        assert step["status"] == "failed"
        assert "did not answer within 6 s" in step["data"]["output"]["text"]
    finally:
        server.stop()
