"""`tenshu mcp`: the server's MCP tools offered over stdio, relayed to a live server's /mcp,
through the official client starting the command as MCP clients do (Claude Desktop, an IDE)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from mcp import Client, StdioServerParameters

from tests.api.live import free_port, live_server

NOTE = b"# Keys\n\nThe spare house key hangs behind the calendar in the pantry.\n"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("mcp-stdio") / "state.db") as live:
        r = httpx.post(live.base_url + "/tenshu/v1/memory/collections/notes/documents",
                       params={"wait": "true"}, headers=live.headers(), timeout=120,
                       files={"file": ("keys.md", NOTE)})
        assert r.status_code == 201, r.text
        yield live


def relay(*args: str, key: str | None) -> StdioServerParameters:
    env = {name: value for name, value in os.environ.items() if name != "TENSHU_API_KEY"}
    if key:
        env["TENSHU_API_KEY"] = key
    return StdioServerParameters(command=sys.executable, args=["-m", "tenshu", "mcp", *args],
                                 env=env)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_relay_lists_and_calls_the_servers_tools(live, mode):
    async with Client(relay("--url", live.base_url, key=live.key), mode=mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        found = await client.call_tool("memory_search", {"query": "where is the spare key"})
        missing = await client.call_tool("get_trace", {"request_id": "req_nothing"})
    assert {"memory_search", "memory_ingest", "get_trace"} <= set(tools)
    assert tools["memory_search"].annotations.read_only_hint is True
    assert tools["memory_search"].output_schema["properties"]["hits"]
    assert not found.is_error, found.content
    best = found.structured_content["hits"][0]
    assert "behind the calendar" in best["text"] and best["collection"] == "notes"
    assert "behind the calendar" in found.content[0].text
    assert missing.is_error and "not found" in missing.content[0].text


def tenshu_mcp(*args: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name != "TENSHU_API_KEY"}
    return subprocess.run([sys.executable, "-m", "tenshu", "mcp", *args], env=env, input="",
                          capture_output=True, text=True, timeout=120)


def test_a_server_that_cannot_be_reached_is_an_error_on_stderr():
    done = tenshu_mcp("--url", f"http://127.0.0.1:{free_port()}", "--key", "tsk-" + "y" * 40)
    assert done.returncode == 1
    assert done.stdout == ""  # stdout is the protocol's alone
    assert "cannot use tenshu's MCP server at http://127.0.0.1:" in done.stderr
    assert "tenshu serve" in done.stderr


def test_a_wrong_key_is_an_error_that_says_so(live):
    done = tenshu_mcp("--url", live.base_url, "--key", "tsk-" + "x" * 40)
    assert done.returncode == 1 and done.stdout == ""
    assert "401 invalid API key" in done.stderr


def test_without_a_key_it_says_where_to_give_one():
    done = tenshu_mcp()
    assert done.returncode == 1 and done.stdout == ""
    assert "TENSHU_API_KEY" in done.stderr and "--key" in done.stderr
