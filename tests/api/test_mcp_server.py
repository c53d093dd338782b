"""tenshu's MCP server at /mcp (api/mcp.py), through the official `mcp` client over Streamable
HTTP against a live server on loopback, and through Claude Code: the tools and their schemas,
memory search and ingest, traces, models, routes and stats; a key required even where the rest
of the server lets loopback in without one; Host and Origin refused as tenshu refuses them; and
another user's memory and traces answering as missing ones.

The server keeps loopback key-less (require_keys=False) so that /mcp's own key requirement is
what is tested. It serves a random Qwen3-shaped checkpoint with a 32k window as "local-coder"
(Claude Code's prompt is long) and the default embedder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.transport_security import TransportSecurityMiddleware
from mcp.shared.exceptions import MCPError
from starlette.requests import Request

from tenshu.api.mcp import transport_security
from tenshu.api.security import SecurityMiddleware
from tenshu.config import ModelSpec, ServerSettings
from tenshu.config.agents import AgentSpec, AgentsSettings
from tenshu.config.routing import RouteSpec
from tests.api.live import live_server

DIARY = "# Moat\n\nThe moat key is hidden under the third stone of the bridge.\n"
TOOLS = {  # name -> (readOnly, destructive, idempotent, openWorld)
    "memory_search": (True, False, True, False),
    "memory_ingest": (False, False, True, False),
    "list_models": (True, False, True, False),
    "list_routes": (True, False, True, False),
    "get_trace": (True, False, True, False),
    "route_stats": (True, False, True, False),
    "list_agents": (True, False, True, False),
    "run_agent": (False, False, False, True),
    "get_run": (True, False, True, False),
    "pending_approvals": (True, False, True, False),
}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "raw", "version": "0"}}}
JSON_RPC = {"Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def world(tmp_path_factory, checkpoint):
    path = checkpoint("qwen3", max_position_embeddings=32768)
    with live_server(tmp_path_factory.mktemp("mcp") / "state.db",
                     models=(ModelSpec("local-coder", str(path)),),
                     tiers=(("local", ("local-coder",)),),
                     routes=(RouteSpec("assistant", tier="local", memory=("notes",)),),
                     require_keys=False, kv_cache_memory_gib=0.25, max_num_seqs=4,
                     agents=AgentsSettings((AgentSpec(
                         "tidy", "local-coder", tools=("delete_file",),
                         force_tools=("delete_file",), tool_choice="none",
                         max_tokens=400),))) as live:
        store = live.server.store
        for name in ("ana", "ben"):
            store.users.add(name)
        keys = {name: store.keys.create(f"{name}-key", user=name)[1] for name in ("ana", "ben")}
        ana = {"Authorization": f"Bearer {keys['ana']}"}
        doc = httpx.post(live.base_url + "/tenshu/v1/memory/collections/diary/documents",
                         params={"wait": "true"}, headers=ana, timeout=120,
                         files={"file": ("moat.md", DIARY.encode())})
        assert doc.status_code == 201, doc.text
        chat = httpx.post(live.base_url + "/v1/chat/completions", headers=ana, timeout=120,
                          json={"model": "local-coder", "max_tokens": 4,
                                "messages": [{"role": "user", "content": "hello"}]})
        assert chat.status_code == 200, chat.text
        yield {"live": live, "keys": keys, "request": chat.headers["request-id"]}


@asynccontextmanager
async def connect(world, who: str | None, mode: str = "auto"):
    """The official client, over Streamable HTTP, with `who`'s key (None: the test key)."""
    key = world["keys"][who] if who else world["live"].key
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"},
                                  timeout=120) as http:
        url = world["live"].base_url + "/mcp"
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


async def test_tools_are_listed_with_their_schemas_and_what_they_do(world):
    async with connect(world, "ana") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == set(TOOLS)
    for name, (read_only, destructive, idempotent, open_world) in TOOLS.items():
        t = tools[name]
        a = t.annotations
        assert (a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint) == \
            (read_only, destructive, idempotent, open_world), name
        assert a.title and t.title == a.title and t.description
        assert t.output_schema["type"] == "object" and t.output_schema["properties"], name
    search = tools["memory_search"]
    assert search.input_schema["required"] == ["query"]
    assert set(search.input_schema["properties"]) == {"query", "collections", "k"}
    assert set(search.output_schema["properties"]) == {"hits", "collections"}
    assert tools["memory_ingest"].input_schema["required"] == ["collection", "text", "title"]
    assert tools["get_trace"].input_schema["required"] == ["request_id"]


async def test_an_agent_runs_through_mcp_and_its_approval_is_left_to_the_person(world):
    async with connect(world, "ana") as client:
        agents = (await client.call_tool("list_agents", {})).structured_content["agents"]
        assert [a["name"] for a in agents] == ["tidy"]
        result = await client.call_tool("run_agent", {"agent": "tidy", "task": "tidy up",
                                                      "wait_seconds": 120})
        run = result.structured_content
        assert not result.is_error and run["status"] == "waiting_approval", run
        assert run["waiting_for"]["tool"] == "delete_file"
        assert run["waiting_for"]["tool_class"] == "destructive"
        pending = (await client.call_tool("pending_approvals", {})).structured_content
        assert [p["run_id"] for p in pending["approvals"]] == [run["run_id"]]
        names = {t.name for t in (await client.list_tools()).tools}
        assert not {n for n in names if "approve" in n or "deny" in n}  # the person's, only
    async with connect(world, "ben") as client:
        theirs = await client.call_tool("get_run", {"run_id": run["run_id"]})
        nobodys = await client.call_tool("get_run", {"run_id": "run_" + "0" * 24})
        assert theirs.is_error and nobodys.is_error
        assert theirs.content[0].text.replace(run["run_id"], "ID") == \
            nobodys.content[0].text.replace("run_" + "0" * 24, "ID")
        assert (await client.call_tool("pending_approvals", {})).structured_content == \
            {"approvals": []}
    assert httpx.post(world["live"].base_url + f"/tenshu/v1/runs/{run['run_id']}/cancel",
                      headers={"Authorization": f"Bearer {world['keys']['ana']}"},
                      timeout=30).json()["status"] == "cancelled"


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # 2026's per-request protocol; 2025's
async def test_memory_search_finds_a_documents_text(world, mode):
    async with connect(world, "ana", mode) as client:
        found = await client.call_tool("memory_search", {"query": "where is the moat key"})
    assert not found.is_error, found.content
    best = found.structured_content["hits"][0]
    assert "third stone" in best["text"]
    assert (best["title"], best["collection"], best["source"]) == ("Moat", "diary", "moat.md")
    assert isinstance(best["chunk_id"], int) and best["score"] > 0
    assert found.structured_content["collections"] == ["diary"]
    assert "third stone" in json.loads(found.content[0].text)["hits"][0]["text"]


async def test_memory_ingest_adds_a_document_and_replaces_nothing(world):
    args = {"collection": "recipes", "title": "Bread", "text": "Knead the dough for ten minutes."}
    async with connect(world, "ben") as client:
        made = await client.call_tool("memory_ingest", args)
        assert not made.is_error, made.content
        doc = made.structured_content
        assert (doc["collection"], doc["title"], doc["created"]) == ("recipes", "Bread", True)
        again = await client.call_tool("memory_ingest", args)
        assert again.structured_content == {**doc, "created": False}
        other = await client.call_tool("memory_ingest", {**args, "text": "Buy flour."})
        assert other.is_error and "already" in other.content[0].text
        found = await client.call_tool("memory_search", {"query": "kneading dough",
                                                         "collections": ["recipes"], "k": 1})
    assert "ten minutes" in found.structured_content["hits"][0]["text"]
    ana = {"Authorization": f"Bearer {world['keys']['ana']}"}
    mine = httpx.get(world["live"].base_url + "/tenshu/v1/memory/collections/recipes",
                     headers=ana)
    assert mine.status_code == 404  # ben's, not ana's


async def test_a_tools_mistake_is_a_tool_error(world):
    async with connect(world, "ana") as client:
        bad = await client.call_tool("memory_search", {"query": "x", "collections": ["no/such/"]})
        missing = await client.call_tool("memory_search", {"query": "x",
                                                           "collections": ["nothing"]})
        empty = await client.call_tool("memory_ingest", {"collection": "diary", "title": "t",
                                                         "text": "  "})
    assert bad.is_error and "collection" in bad.content[0].text
    assert missing.is_error and "no collection named 'nothing'" in missing.content[0].text
    assert empty.is_error and "empty" in empty.content[0].text


async def test_get_trace_shows_ones_own_request(world):
    async with connect(world, "ana") as client:
        found = await client.call_tool("get_trace", {"request_id": world["request"]})
    assert not found.is_error, found.content
    trace = found.structured_content
    assert (trace["request_id"], trace["user"], trace["key"]) == \
        (world["request"], "ana", "ana-key")
    assert trace["model"] == "local-coder" and trace["status"] == 200
    assert [a["backend"] for a in trace["trace"]["attempts"]] == ["local-coder"]


async def test_models_routes_and_stats(world):
    async with connect(world, "ana") as client:
        models = (await client.call_tool("list_models", {})).structured_content["models"]
        routes = (await client.call_tool("list_routes", {})).structured_content
        stats = (await client.call_tool("route_stats", {"period": "1h"})).structured_content
    kinds = {m["id"]: m["kind"] for m in models}
    assert kinds == {"local-coder": "chat", "assistant": "route", "all-minilm-l6-v2": "embedding"}
    assert routes["tiers"] == [{"name": "local", "models": ["local-coder"]}]
    route = routes["routes"][0]
    assert (route["name"], route["default_tier"], route["tiers"], route["memory"]) == \
        ("assistant", "local", ["local"], ["notes"])
    assert stats["period"] == "1h" and stats["totals"]["requests"] >= 1
    assert "local-coder" in [r["name"] for r in stats["routes"]]


async def test_another_users_memory_answers_as_a_missing_one(world):
    async with connect(world, "ben") as client:
        hers = await client.call_tool("memory_search", {"query": "moat key",
                                                        "collections": ["ana/diary"]})
        none = await client.call_tool("memory_search", {"query": "moat key",
                                                        "collections": ["ana/nothing"]})
        everything = await client.call_tool("memory_search", {"query": "moat key", "k": 100})
        write = await client.call_tool("memory_ingest", {"collection": "ana/diary",
                                                         "title": "x", "text": "ben was here"})
    assert hers.is_error and none.is_error
    assert hers.content[0].text == none.content[0].text.replace("ana/nothing", "ana/diary")
    assert "third stone" not in json.dumps(everything.structured_content)
    assert write.is_error and "no collection named 'ana/diary'" in write.content[0].text


async def test_another_users_trace_answers_as_a_missing_one(world):
    made_up = "req_" + "0" * 24
    async with connect(world, "ben") as client:
        hers = await client.call_tool("get_trace", {"request_id": world["request"]})
        none = await client.call_tool("get_trace", {"request_id": made_up})
        stats = (await client.call_tool("route_stats", {})).structured_content
    assert hers.is_error and none.is_error
    assert hers.content[0].text == none.content[0].text.replace(made_up, world["request"])
    assert stats["totals"]["requests"] == 0  # ana's request is not counted for ben


def test_a_key_is_required_even_where_loopback_needs_none(world):
    url = world["live"].base_url
    assert httpx.get(url + "/v1/models").status_code == 200  # key-less loopback elsewhere
    for headers, error in (({}, None), ({"Authorization": "Bearer tsk-" + "x" * 40},
                                        "invalid_token"),
                           ({"x-api-key": "wrong"}, "invalid_token")):
        r = httpx.post(url + "/mcp", json=INITIALIZE, headers={**JSON_RPC, **headers})
        assert r.status_code == 401, r.text
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert (f'error="{error}"' in challenge) if error else "error=" not in challenge
        assert r.json()["error"]["type"] == "authentication_error"
    ok = httpx.post(url + "/mcp", json=INITIALIZE,
                    headers={**JSON_RPC, "x-api-key": world["keys"]["ana"]})
    assert ok.status_code == 200 and ok.json()["result"]["serverInfo"]["name"] == "tenshu"


def test_only_post_is_served(world):
    """No event stream (GET) and no session to end (DELETE): the 405 the MCP spec allows."""
    key = {**JSON_RPC, "Authorization": f"Bearer {world['keys']['ana']}"}
    for method in ("GET", "DELETE"):
        r = httpx.request(method, world["live"].base_url + "/mcp", headers=key, timeout=10)
        assert (r.status_code, r.headers["allow"]) == (405, "POST"), r.text


async def test_the_official_client_is_refused_without_a_valid_key(world):
    async with httpx2.AsyncClient(headers={"Authorization": "Bearer tsk-" + "y" * 40}) as http:
        transport = streamable_http_client(world["live"].base_url + "/mcp", http_client=http)
        with pytest.raises(BaseException) as refused:  # in the client's task groups
            async with Client(transport, mode="legacy"):
                pass
    inner = refused.value
    while isinstance(inner, BaseExceptionGroup):
        inner = inner.exceptions[0]
    assert isinstance(inner, MCPError), refused.value


def test_a_foreign_host_or_origin_is_refused(world):
    live = world["live"]
    key = {**JSON_RPC, "Authorization": f"Bearer {world['keys']['ana']}"}
    port = live.base_url.rsplit(":", 1)[1]
    for extra in ({"Host": f"evil.example:{port}"}, {"Origin": "http://evil.example"},
                  {"Origin": f"http://localhost:{port}.evil.example"}):
        r = httpx.post(live.base_url + "/mcp", json=INITIALIZE, headers={**key, **extra})
        assert r.status_code == 403, (extra, r.text)
    for extra in ({"Origin": live.base_url}, {"Host": f"LocalHost:{port}"},
                  {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}):
        same = httpx.post(live.base_url + "/mcp", json=INITIALIZE, headers={**key, **extra})
        assert same.status_code == 200, (extra, same.text)


@pytest.mark.parametrize("settings", [
    ServerSettings(port=7311),
    ServerSettings(port=7311, allowed_hosts=("tenshu.lan",), cors_origins=("https://app.lan",)),
    ServerSettings(host="10.1.2.3", port=8080),
    ServerSettings(host="::1", port=7311, cors_origins=("*",)),
])
async def test_the_sdks_rebinding_check_admits_what_tenshus_admits(settings):
    """/mcp has two Host and Origin checks, tenshu's and the SDK's: they must agree on every
    request a client could send to this port (the SDK's is also on off loopback, where
    tenshu's leaves Host to the keys)."""
    tenshu = SecurityMiddleware(None, settings)
    sdk = TransportSecurityMiddleware(transport_security(settings))
    port = settings.port
    # (a Host in capitals, which tenshu lower-cases and the SDK would not, is tested live:
    # McpEndpoint lower-cases it before the SDK sees it)
    hosts = ["127.0.0.1", "localhost", "[::1]", "tenshu.lan", "10.1.2.3", "evil.example",
             "127.0.0.2"]
    for host in hosts:
        for origin in (None, f"http://{host}:{port}", "https://app.lan", "http://evil.example",
                       "http://localhost.evil.example", "http://LocalHost:7311"):
            headers = [(b"host", f"{host}:{port}".encode()),
                       (b"content-type", b"application/json")]
            if origin:
                headers.append((b"origin", origin.encode()))
            scope = {"type": "http", "method": "POST", "path": "/mcp", "scheme": "http",
                     "headers": headers, "query_string": b""}
            ours = tenshu.refuse(scope) is None
            theirs = await sdk.validate_request(Request(scope), is_post=True) is None
            if settings.loopback:
                assert ours == theirs, (host, origin, ours, theirs)
            else:  # tenshu leaves Host to the keys there; the SDK's check is the stricter
                assert ours or not theirs, (host, origin, ours, theirs)


# -- Claude Code ----------------------------------------------------------------------------------

CLAUDE = Path(__file__).resolve().parents[2] / ".venv/claude-code/node_modules/.bin/claude"


@pytest.mark.skipif(not CLAUDE.exists() or shutil.which("node") is None,
                    reason="Claude Code is not installed (`make claude-code`; it needs node)")
def test_claude_code_calls_memory_search_through_tenshus_mcp_server(world, tmp_path):
    """Claude Code, given /mcp in --mcp-config and forced (x-tenshu-tool-choice) to call
    memory_search on its first turn, sends the tool's hits back to the model. The random model
    writes the arguments: where it names collections of its own, the search is an error, so
    the run is repeated (a few times at most) until its call searches everything."""
    live = world["live"]
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"tenshu": {
        "type": "http", "url": live.base_url + "/mcp",
        "headers": {"Authorization": f"Bearer {world['keys']['ana']}"}}}}))
    env = {**os.environ, "HOME": str(tmp_path), "ANTHROPIC_BASE_URL": live.base_url,
           "ANTHROPIC_API_KEY": world["keys"]["ana"],
           "ANTHROPIC_CUSTOM_HEADERS": "x-tenshu-tool-choice: mcp__tenshu__memory_search",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
           # MCP tools in the request's tools, not deferred behind Claude Code's tool search
           # (with --tools "", no built-in tool is sent either: the prompt fits the window)
           "ENABLE_TOOL_SEARCH": "false",
           **{f"ANTHROPIC_{m}": "local-coder" for m in (
               "SMALL_FAST_MODEL", "DEFAULT_HAIKU_MODEL", "DEFAULT_SONNET_MODEL",
               "DEFAULT_OPUS_MODEL")}}
    for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_MODEL", "CLAUDE_CONFIG_DIR"):
        env.pop(name, None)
    for _ in range(4):
        done = subprocess.run(
            [str(CLAUDE), "-p", "where is the moat key?", "--model", "local-coder",
             "--mcp-config", str(config), "--strict-mcp-config", "--tools", "",
             "--allowedTools", "mcp__tenshu__memory_search",
             "--output-format", "stream-json", "--verbose", "--max-turns", "3"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        events = [json.loads(line) for line in done.stdout.splitlines()
                  if line.startswith("{")]
        init = next(e for e in events if e.get("subtype") == "init")
        assert [(s["name"], s["status"]) for s in init["mcp_servers"]] == \
            [("tenshu", "connected")], init["mcp_servers"]
        messages = [e["message"] for e in events if e.get("type") in ("assistant", "user")]
        uses = [b for m in messages if m["role"] == "assistant" for b in m["content"]
                if b["type"] == "tool_use"]
        results = [b for m in messages if m["role"] == "user" and isinstance(m["content"], list)
                   for b in m["content"] if b["type"] == "tool_result"]
        assert [u["name"] for u in uses] == ["mcp__tenshu__memory_search"], done.stdout[-6000:]
        assert [r["tool_use_id"] for r in results] == [uses[0]["id"]]
        if not uses[0]["input"].get("collections"):
            break  # searched every collection ana can read
    else:
        pytest.fail(f"the random model named collections in each call: {uses[0]['input']}")
    sent = json.dumps(results[0]["content"])
    assert not results[0].get("is_error"), sent
    assert "third stone" in sent and "diary" in sent
