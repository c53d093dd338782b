"""One user's record is never another's: ben, with his own key in each header form, tries every
/tenshu/v1 endpoint, and the stored Responses API's, on ana's conversations, turns, feedback,
memory, agent runs and stored responses (by id, by guessed ids, through
list filters and cursors, by naming her) and tries to continue her conversation in a chat
request of each protocol. Every attempt fails as an id that does not exist fails; ana's record
is unchanged after; an admin's read of it is logged; members cannot reach the admin endpoints.
"""

from __future__ import annotations

import secrets

import httpx
import pytest

from tenshu.config.agents import AgentSpec, AgentsSettings
from tenshu.store.sql import utcnow as store_now
from tests.api.live import live_server

HEADER = "x-tenshu-conversation"
CHAT = {"model": "tenshu-tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    agents = AgentsSettings((AgentSpec("helper", "tenshu-tiny", max_tokens=4),))
    with live_server(tmp_path_factory.mktemp("isolation") / "state.db",
                     embedder=False, agents=agents) as live:
        store = live.server.store
        for name, role in (("ana", "member"), ("ben", "member"), ("boss", "admin")):
            store.users.add(name, role=role)
        keys = {name: store.keys.create(f"{name}-key", user=name)[1]
                for name in ("ana", "ben", "boss")}
        ana = {"Authorization": f"Bearer {keys['ana']}"}
        first = httpx.post(live.base_url + "/v1/chat/completions", timeout=60, json={
            **CHAT, "messages": [{"role": "user", "content": "ana's diary: the moat key"}]},
            headers={**ana, HEADER: "new"})
        conv = first.headers[HEADER]
        second = httpx.post(live.base_url + "/v1/messages", timeout=60, json=CHAT,
                            headers={**ana, HEADER: conv})
        turns = [first.headers["x-tenshu-turn"], second.headers["x-tenshu-turn"]]
        fb = httpx.post(live.base_url + "/tenshu/v1/feedback", headers=ana, json={
            "kind": "rating", "rating": 1, "turn_id": turns[0]}).json()["id"]
        doc = httpx.post(live.base_url + "/tenshu/v1/memory/collections/diary/documents",
                         params={"wait": "true"}, headers=ana, timeout=120, files={
                             "file": ("moat.md", b"# Moat\n\nThe moat key is under the stone.")})
        assert doc.status_code == 201, doc.text
        chunk = httpx.post(live.base_url + "/tenshu/v1/memory/search", headers=ana, json={
            "query": "moat key", "collection": "diary"}).json()["hits"][0]["chunk_id"]
        session, _ = store.sessions.create(store.users.get("ana").id, "password")
        run = httpx.post(live.base_url + "/tenshu/v1/agents/helper/runs", headers=ana,
                         json={"task": "ana's errand: fetch the moat key", "wait": 60},
                         timeout=90).json()
        assert run["status"] == "succeeded", run
        response = httpx.post(live.base_url + "/v1/responses", headers=ana, timeout=60, json={
            "model": "tenshu-tiny", "input": "ana's note: the moat key", "max_output_tokens": 4})
        assert response.status_code == 200, response.text
        ana_id = store.users.get("ana").id
        event = store.context.add_event("news", "e1", "feed.entry", {"title": "moat"},
                                        store_now())
        store.context.add_delivery(event, "brief", ana_id, store_now())
        store.context.finish(event, "brief", "failed", "ana's delivery failed")
        inbox = store.context.notify(ana_id, "ana's brief", "the moat key")
        yield {"event": str(event), "inbox": str(inbox),
               "response": response.json()["id"], "run": run["id"], "live": live, "keys": keys, "conv": conv, "turns": turns, "feedback": fb,
               "coll": "diary", "doc": str(doc.json()["id"]), "chunk": str(chunk),
               "session": session.id, "request": first.headers["request-id"]}


def as_(world, who: str, form: str = "bearer") -> dict:
    key = world["keys"][who]
    return {"Authorization": f"Bearer {key}"} if form == "bearer" else {"x-api-key": key}


def snapshot(world) -> dict:
    """Everything of ana's, as she reads it."""
    with httpx.Client(base_url=world["live"].base_url + "/tenshu/v1",
                      headers=as_(world, "ana")) as c:
        conv = c.get(f"/conversations/{world['conv']}").json()
        return {"conversation": conv, "list": c.get("/conversations").json(),
                "feedback": c.get("/feedback").json(),
                "export": c.get(f"/conversations/{world['conv']}/export").json(),
                "collection": c.get("/memory/collections/diary").json(),
                "documents": c.get("/memory/collections/diary/documents").json(),
                "shares": c.get("/memory/collections/diary/shares").json(),
                "run": c.get(f"/runs/{world['run']}").json(), "runs": c.get("/runs").json(),
                "response": c.get(world["live"].base_url + f"/v1/responses/{world['response']}"
                                  ).json(),
                "deliveries": c.get("/context/deliveries").json(), "inbox": c.get("/inbox").json()}


def attempts(world) -> list[tuple[str, str, dict, str]]:
    """(method, path, request arguments, what it is) of every way ben can try for ana's record.
    `{conv}`, `{turn}` and `{feedback}` are filled with ana's ids, or with made-up ones."""
    body = {"kind": "rating", "rating": -1, "turn_id": "{turn}"}
    return [
        ("GET", "/tenshu/v1/conversations/{conv}", {}, "read a conversation"),
        ("GET", "/tenshu/v1/conversations/{conv}?user=ana", {}, "read it by naming ana"),
        ("PATCH", "/tenshu/v1/conversations/{conv}", {"json": {"title": "ben was here"}},
         "rename it"),
        ("DELETE", "/tenshu/v1/conversations/{conv}", {}, "delete it"),
        ("GET", "/tenshu/v1/conversations/{conv}/export", {}, "export it as JSON"),
        ("GET", "/tenshu/v1/conversations/{conv}/export?format=markdown", {},
         "export it as Markdown"),
        ("GET", "/tenshu/v1/conversations?user=ana", {}, "list ana's conversations"),
        ("GET", "/tenshu/v1/feedback?user=ana", {}, "list ana's feedback"),
        ("POST", "/tenshu/v1/feedback", {"json": body}, "rate her turn"),
        ("POST", "/tenshu/v1/feedback", {"json": {"kind": "correction", "turn_id": "{turn}",
                                                  "text": "wrong"}}, "correct her turn"),
        ("POST", "/tenshu/v1/feedback", {"json": {"kind": "comment", "turn_id": "{turn}",
                                                  "text": "hm"}}, "comment on her turn"),
        ("POST", "/tenshu/v1/feedback", {"json": {"kind": "preference", "preference": "a",
                                                  "turn_id": "{turn}",
                                                  "other_turn_id": "{turn}"}},
         "prefer between her turns"),
        *memory_attempts(),
        ("DELETE", "/tenshu/v1/sessions/{session}", {}, "end her web session"),
        ("GET", "/tenshu/v1/requests/{turn}", {}, "read her request's trace by its turn id"),
        ("GET", "/tenshu/v1/requests/{request}", {}, "read her request's trace by its id"),
        ("GET", "/tenshu/v1/stats?user=ana", {}, "read ana's stats"),
        ("GET", "/tenshu/v1/runs/{run}", {}, "read her agent run"),
        ("GET", "/tenshu/v1/runs/{run}/events", {}, "follow her agent run"),
        ("POST", "/tenshu/v1/runs/{run}/approve", {"json": {}}, "approve her run's call"),
        ("POST", "/tenshu/v1/runs/{run}/deny", {"json": {"reason": "no"}}, "deny it"),
        ("POST", "/tenshu/v1/runs/{run}/cancel", {}, "cancel her run"),
        ("GET", "/tenshu/v1/requests?user=ana", {}, "list ana's requests"),
        ("POST", "/tenshu/v1/context/deliveries/{event}/brief/retry", {},
         "retry her failed delivery"),
        ("POST", "/tenshu/v1/inbox/{inbox}/read", {}, "mark her notification read"),
        ("DELETE", "/tenshu/v1/inbox/{inbox}", {}, "delete her notification"),
        ("GET", "/v1/responses/{response}", {}, "read her stored response"),
        ("GET", "/v1/responses/{response}/input_items", {}, "read what she asked in it"),
        ("DELETE", "/v1/responses/{response}", {}, "delete her response"),
        ("POST", "/v1/responses", {"json": {"model": "tenshu-tiny", "input": "and then?",
                                            "max_output_tokens": 4,
                                            "previous_response_id": "{response}"}},
         "continue her response"),
        ("POST", "/v1/chat/completions", {"json": CHAT, "headers": {HEADER: "{conv}"}},
         "continue it (OpenAI)"),
        ("POST", "/v1/messages", {"json": CHAT, "headers": {HEADER: "{conv}"}},
         "continue it (Anthropic)"),
        ("POST", "/api/chat", {"json": {**CHAT, "stream": False}, "headers": {HEADER: "{conv}"}},
         "continue it (Ollama)"),
        ("POST", "/api/generate", {"json": {"model": "tenshu-tiny", "prompt": "hi",
                                            "stream": False}, "headers": {HEADER: "{conv}"}},
         "continue it (Ollama generate)"),
    ]


def memory_attempts() -> list[tuple[str, str, dict, str]]:
    """Every way at ana's memory collection `{coll}` and its document `{doc}`."""
    at = "/tenshu/v1/memory/collections/{coll}"
    upload = {"files": {"file": ("x.md", b"# x\n\nben's words")}}
    return [
        ("GET", at, {}, "read her collection by its bare name (a name is the caller's)"),
        ("GET", at + "?owner=ana", {}, "read it by naming ana"),
        ("PATCH", at + "?owner=ana", {"json": {"cloud": True}}, "open it to the cloud"),
        ("DELETE", at + "?owner=ana", {}, "delete it"),
        ("GET", at + "/shares?owner=ana", {}, "list whom it is shared with"),
        ("PUT", at + "/shares/ben?owner=ana", {}, "share it with himself"),
        ("DELETE", at + "/shares/ben?owner=ana", {}, "unshare it"),
        ("GET", at + "/documents?owner=ana", {}, "list its documents"),
        ("POST", at + "/documents?owner=ana&wait=true", upload, "upload into it"),
        ("GET", at + "/documents/{doc}?owner=ana", {}, "read a document"),
        ("DELETE", at + "/documents/{doc}?owner=ana", {}, "delete a document"),
        ("GET", at + "/review?owner=ana", {}, "review its chunks"),
        ("GET", at + "/indexes?owner=ana", {}, "read its reindex status"),
        ("GET", "/tenshu/v1/memory/chunks/{chunk}", {}, "read one of its chunks by id"),
        ("POST", "/tenshu/v1/memory/search", {"json": {"query": "moat key",
                                                       "collection": "ana/{coll}"}},
         "search it"),
        ("POST", "/v1/chat/completions", {"json": CHAT, "headers": {
            "x-tenshu-memory": "ana/{coll}"}}, "chat with it as memory (OpenAI)"),
        ("POST", "/v1/messages", {"json": CHAT, "headers": {"x-tenshu-memory": "ana/{coll}"}},
         "chat with it as memory (Anthropic)"),
        ("POST", "/api/chat", {"json": {**CHAT, "stream": False},
                               "headers": {"x-tenshu-memory": "ana/{coll}"}},
         "chat with it as memory (Ollama)"),
    ]


def fill(value, ids: dict):
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(fill(v, ids) for v in value)
    return value


def shape(response: httpx.Response, ids: dict) -> tuple:
    """What a response tells apart: its status and its body with the ids blanked out."""
    text = response.text
    for value in sorted(ids.values(), key=len, reverse=True):  # "3" may be inside a longer id
        text = text.replace(value, "ID")
    return response.status_code, text


@pytest.mark.parametrize("form", ["bearer", "x-api-key"])
def test_ben_cannot_reach_anas_record_by_any_way(world, form):
    before = snapshot(world)
    base = world["live"].base_url
    anas = {"conv": world["conv"], "turn": world["turns"][0], "feedback": world["feedback"],
            "coll": world["coll"], "doc": world["doc"], "chunk": world["chunk"],
            "session": world["session"], "request": world["request"], "run": world["run"],
            "response": world["response"], "event": world["event"], "inbox": world["inbox"]}
    failures = []
    for method, path, kwargs, what in attempts(world):
        made_up = {"conv": "conv_" + secrets.token_hex(12),
                   "turn": "turn_" + secrets.token_hex(12), "feedback": "fb_" + secrets.token_hex(12),
                   "coll": "c" + secrets.token_hex(6), "doc": str(secrets.randbelow(10**6) + 1000),
                   "chunk": str(secrets.randbelow(10**6) + 1000),
                   "session": "ses_" + secrets.token_hex(10),
                   "request": "req_" + secrets.token_hex(12),
                   "run": "run_" + secrets.token_hex(12),
                   "response": "resp_" + secrets.token_hex(12),
                   "event": str(secrets.randbelow(10**6) + 1000),
                   "inbox": str(secrets.randbelow(10**6) + 1000)}
        answers = []
        for ids in (anas, made_up):
            args = fill(kwargs, ids)
            headers = {**as_(world, "ben", form), **args.pop("headers", {})}
            answers.append(httpx.request(method, base + fill(path, ids), headers=headers,
                                         timeout=60, **args))
        theirs, nobodys = answers
        if theirs.status_code < 400 or shape(theirs, anas) != shape(nobodys, made_up):
            failures.append((what, theirs.status_code, theirs.text[:200]))
    assert failures == []
    assert snapshot(world) == before


def test_lists_and_cursors_show_ben_only_his_own(world):
    base = world["live"].base_url + "/tenshu/v1"
    ben = as_(world, "ben")
    ben_conv = httpx.post(world["live"].base_url + "/v1/chat/completions", timeout=60,
                          json=CHAT, headers={**ben, HEADER: "new"}).headers[HEADER]
    for params in ({}, {"q": "moat"}, {"q": "diary"}, {"after": world["conv"]},
                   {"limit": 100}):
        data = httpx.get(base + "/conversations", params=params, headers=ben).json()["data"]
        assert world["conv"] not in {c["id"] for c in data}, params
    mine = httpx.get(base + "/conversations", headers=ben).json()["data"]
    assert [c["id"] for c in mine] == [ben_conv]
    for params in ({}, {"turn": world["turns"][0]}, {"conversation_id": world["conv"]},
                   {"after": world["feedback"]}):
        assert httpx.get(base + "/feedback", params=params, headers=ben).json()["data"] == [], \
            params
    assert httpx.get(base + "/memory/collections", headers=ben).json()["data"] == []
    made = httpx.post(base + "/memory/collections", json={"name": "diary"}, headers=ben)
    assert made.status_code == 201 and made.json()["owner"] == "ben"  # his own, beside hers
    assert [c["owner"] for c in httpx.get(base + "/memory/collections",
                                          headers=ben).json()["data"]] == ["ben"]
    found = httpx.post(base + "/memory/search", headers=ben,
                       json={"query": "moat key", "collection": "diary"}).json()["hits"]
    assert found == []
    assert httpx.get(base + "/runs", headers=ben).json()["data"] == []
    assert httpx.get(base + "/approvals", headers=ben).json()["data"] == []
    assert httpx.get(base + "/runs", params={"agent": "helper"},
                     headers=ben).json()["data"] == []
    for params in ({}, {"status": "failed"}, {"trigger": "brief"}):
        assert httpx.get(base + "/context/deliveries", params=params,
                         headers=ben).json()["data"] == [], params
    assert httpx.post(base + "/inbox/read", headers=ben).json() == {"read": 0}
    assert httpx.get(base + "/inbox", headers=ben).json() == {"object": "list", "data": [],
                                                               "unread": 0}


def test_members_cannot_use_the_admin_endpoints(world):
    base = world["live"].base_url + "/tenshu/v1"
    ben = as_(world, "ben")
    for method, path, body in (("GET", "/users", None), ("POST", "/users", {"name": "eve"}),
                               ("GET", "/users/ana", None), ("PATCH", "/users/ben",
                                                             {"role": "admin"}),
                               ("DELETE", "/users/ana", None), ("GET", "/keys", None),
                               ("POST", "/keys", {"name": "ben-2", "user": "ana"}),
                               ("DELETE", "/keys/ana-key", None), ("GET", "/admin-reads", None),
                               ("GET", "/models/loaded", None), ("GET", "/config/check", None),
                               ("GET", "/sessions?all=true", None),
                               ("GET", "/arena/leaderboard?scope=all", None),
                               ("GET", "/adapters", None),
                               ("POST", "/adapters/mine/promote", {}),
                               ("POST", "/adapters/mine/rollback", None),
                               ("GET", "/jobs", None), ("GET", "/jobs/learn-nightly/runs", None),
                               ("POST", "/jobs/learn-nightly/run", None),
                               ("POST", "/jobs/learn-nightly/pause", None),
                               ("POST", "/jobs/learn-nightly/resume", None),
                               ("GET", "/jobs/runs/jobrun_0123/log", None),
                               ("GET", "/mcp/servers", None),
                               ("GET", "/context/sources", None),
                               ("GET", "/context/events", None),
                               ("POST", "/mcp/servers/notes/approve", None)):
        r = httpx.request(method, base + path, json=body, headers=ben)
        assert r.status_code == 403, (method, path, r.text)
    assert world["live"].server.store.users.get("ben").role == "member"
    assert world["live"].server.store.users.get("eve") is None


def test_an_admin_reads_anas_record_and_the_read_is_logged(world):
    base = world["live"].base_url + "/tenshu/v1"
    boss = as_(world, "boss")
    assert httpx.get(base + f"/conversations/{world['conv']}", headers=boss).status_code == 404
    read = httpx.get(base + f"/conversations/{world['conv']}", params={"user": "ana"},
                     headers=boss)
    assert read.status_code == 200 and read.json()["turns"] == 2
    log = httpx.get(base + "/admin-reads", headers=boss).json()["data"]
    assert {(r["admin"], r["user"], r["action"], r["resource"]) for r in log} >= {
        ("boss", "ana", "read", f"conversation {world['conv']}")}


def test_every_tenshu_v1_endpoint_is_in_the_matrix(world):
    """A new endpoint must be added to the attempts (or the admin list) above."""
    paths = world["live"].server.app.openapi()["paths"]
    endpoints = {(method.upper(), path) for path, ops in paths.items()
                 if path.startswith("/tenshu/v1") for method in ops}
    covered = {("GET", "/tenshu/v1/conversations/{conversation_id}"),
               ("PATCH", "/tenshu/v1/conversations/{conversation_id}"),
               ("DELETE", "/tenshu/v1/conversations/{conversation_id}"),
               ("GET", "/tenshu/v1/conversations/{conversation_id}/export"),
               ("GET", "/tenshu/v1/conversations"), ("GET", "/tenshu/v1/feedback"),
               ("POST", "/tenshu/v1/feedback"),
               # the caller's own: there is no other user's to reach
               ("GET", "/tenshu/v1/me"), ("PATCH", "/tenshu/v1/me"),
               # admins only (test_members_cannot_use_the_admin_endpoints)
               ("GET", "/tenshu/v1/users"), ("POST", "/tenshu/v1/users"),
               ("GET", "/tenshu/v1/users/{name}"), ("PATCH", "/tenshu/v1/users/{name}"),
               ("DELETE", "/tenshu/v1/users/{name}"), ("GET", "/tenshu/v1/keys"),
               ("POST", "/tenshu/v1/keys"), ("DELETE", "/tenshu/v1/keys/{name_or_prefix}"),
               ("GET", "/tenshu/v1/admin-reads"),
               # memory (memory_attempts)
               ("GET", "/tenshu/v1/memory/collections/{name}"),
               ("PATCH", "/tenshu/v1/memory/collections/{name}"),
               ("DELETE", "/tenshu/v1/memory/collections/{name}"),
               ("GET", "/tenshu/v1/memory/collections/{name}/shares"),
               ("PUT", "/tenshu/v1/memory/collections/{name}/shares/{user}"),
               ("DELETE", "/tenshu/v1/memory/collections/{name}/shares/{user}"),
               ("GET", "/tenshu/v1/memory/collections/{name}/documents"),
               ("POST", "/tenshu/v1/memory/collections/{name}/documents"),
               ("GET", "/tenshu/v1/memory/collections/{name}/documents/{document_id}"),
               ("DELETE", "/tenshu/v1/memory/collections/{name}/documents/{document_id}"),
               ("GET", "/tenshu/v1/memory/collections/{name}/review"),
               ("POST", "/tenshu/v1/memory/search"),
               # the caller's own list, and making their own (test_lists_and_cursors...)
               ("GET", "/tenshu/v1/memory/collections"),
               ("POST", "/tenshu/v1/memory/collections"),
               ("GET", "/tenshu/v1/memory/collections/{name}/indexes"),
               ("GET", "/tenshu/v1/memory/chunks/{chunk_id}"),
               # the caller's own sessions; another's answers as a missing one (attempts)
               ("GET", "/tenshu/v1/sessions"), ("DELETE", "/tenshu/v1/sessions/{session_id}"),
               # admins only
               ("GET", "/tenshu/v1/models/loaded"), ("GET", "/tenshu/v1/config/check"),
               ("GET", "/tenshu/v1/adapters"), ("POST", "/tenshu/v1/adapters/{name}/promote"),
               ("POST", "/tenshu/v1/adapters/{name}/rollback"), ("GET", "/tenshu/v1/jobs"),
               ("GET", "/tenshu/v1/jobs/{name}/runs"), ("POST", "/tenshu/v1/jobs/{name}/run"),
               ("POST", "/tenshu/v1/jobs/{name}/pause"), ("POST", "/tenshu/v1/jobs/{name}/resume"),
               ("GET", "/tenshu/v1/jobs/runs/{run_id}/log"),
               # arena: the caller's own votes; scope=all is admins only (test_arena.py)
               ("GET", "/tenshu/v1/arena/contenders"), ("GET", "/tenshu/v1/arena/leaderboard"),
               # the dashboards: the caller's own requests (attempts name ana's)
               ("GET", "/tenshu/v1/stats"), ("GET", "/tenshu/v1/requests"),
               ("GET", "/tenshu/v1/requests/{request_id}"),
               # agent runs: ana's (attempts); the caller's own lists and runs (lists test);
               # the configured agents are the server's; MCP servers' pins are admins' only
               ("GET", "/tenshu/v1/runs/{run_id}"), ("GET", "/tenshu/v1/runs/{run_id}/events"),
               ("POST", "/tenshu/v1/runs/{run_id}/approve"),
               ("POST", "/tenshu/v1/runs/{run_id}/deny"),
               ("POST", "/tenshu/v1/runs/{run_id}/cancel"), ("GET", "/tenshu/v1/runs"),
               ("GET", "/tenshu/v1/approvals"), ("GET", "/tenshu/v1/agents"),
               ("POST", "/tenshu/v1/agents/{name}/runs"), ("GET", "/tenshu/v1/mcp/servers"),
               ("POST", "/tenshu/v1/mcp/servers/{name}/approve"),
               # the context engine: ana's delivery and inbox (attempts); the caller's own
               # lists (lists test); sources and events are admins' only
               ("POST", "/tenshu/v1/context/deliveries/{event_id}/{trigger}/retry"),
               ("POST", "/tenshu/v1/inbox/{item_id}/read"), ("DELETE", "/tenshu/v1/inbox/{item_id}"),
               ("POST", "/tenshu/v1/inbox/read"),  # the caller's own (lists test)
               ("GET", "/tenshu/v1/context/deliveries"), ("GET", "/tenshu/v1/inbox"),
               ("GET", "/tenshu/v1/context/triggers"), ("GET", "/tenshu/v1/context/sources"),
               ("GET", "/tenshu/v1/context/events")}
    assert endpoints == covered
