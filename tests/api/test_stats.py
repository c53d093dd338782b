"""/tenshu/v1/stats, /tenshu/v1/requests and /tenshu/v1/requests/{id} against a live server with
a route the sentinel scores and daily budgets: each member sees their own requests and their
own keys' budgets, an admin everyone's; ben cannot read ana's request by any id."""

from __future__ import annotations

import httpx
import pytest

from tenshu.config.routing import BudgetSpec, RouteSpec
from tests.api.live import live_server

CHAT = {"model": "tenshu-tiny", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """ana made three requests (one the sentinel scored, one that failed), ben one."""
    with live_server(tmp_path_factory.mktemp("stats") / "state.db", max_num_seqs=8,
                     tiers=(("local", ("tenshu-tiny",)),),
                     routes=(RouteSpec("auto", tier="local", simple_tier="local"),),
                     budgets=(BudgetSpec(key="ana-key", tier="local", daily_tokens=100_000),
                              BudgetSpec(key="ben-key", daily_usd=1.0))) as live:
        store = live.server.store
        for name, role in (("ana", "member"), ("ben", "member"), ("boss", "admin")):
            store.users.add(name, role=role)
        keys = {name: store.keys.create(f"{name}-key", user=name)[1]
                for name in ("ana", "ben", "boss")}
        clients = {name: httpx.Client(base_url=live.base_url, timeout=120,
                                      headers={"Authorization": f"Bearer {key}"})
                   for name, key in keys.items()}
        ana = clients["ana"]
        ok = ana.post("/v1/chat/completions", json=CHAT)
        scored = ana.post("/v1/chat/completions", json={**CHAT, "model": "auto"})
        failed = ana.post("/v1/chat/completions", json={
            **CHAT, "messages": [{"role": "user", "content": "moat " * 3000}]})
        assert (ok.status_code, scored.status_code, failed.status_code) == (200, 200, 400)
        bens = clients["ben"].post("/v1/chat/completions", json=CHAT)
        ids = {"ok": ok.headers["request-id"], "scored": scored.headers["request-id"],
               "failed": failed.headers["request-id"], "ben": bens.headers["request-id"],
               "chatcmpl": ok.json()["id"]}
        yield {"live": live, "c": clients, "ids": ids}
        for client in clients.values():
            client.close()


def test_a_member_sees_their_own_numbers_and_budgets(world):
    stats = world["c"]["ana"].get("/tenshu/v1/stats", params={"period": "1h"})
    assert stats.status_code == 200, stats.text
    data = stats.json()
    assert data["object"] == "stats" and data["period"] == "1h" and data["step"] == "minute"
    assert (data["totals"]["requests"], data["totals"]["errors"]) == (3, 1)
    assert sum(b["requests"] for b in data["series"]) == 3
    assert {r["name"]: (r["requests"], r["errors"]) for r in data["routes"]} == {
        "tenshu-tiny": (2, 1), "auto": (1, 0)}
    assert {b["name"] for b in data["backends"]} == {"tenshu-tiny", "none"}
    assert sum(data["ttft_ms"]["counts"]) == 2  # the failed request sent no token
    assert data["fallbacks"] == [{"backend": "tenshu-tiny", "kind": "context_length_exceeded",
                                  "count": 1}]
    assert list(data["verdicts"]["tiers"]) == ["local"]
    assert sum(data["verdicts"]["tiers"]["local"]) == 1
    assert {s["key"] for s in data["spend"]} == {"ana-key"}
    [budget] = data["budgets"]  # her key's; not ben's
    assert budget["key"] == "ana-key" and budget["tier"] == "local"
    assert budget["daily_tokens"] == 100_000 and 0 < budget["tokens"] < 1000


def test_an_admin_sees_everyone_or_one_user_and_the_read_is_logged(world):
    boss = world["c"]["boss"]
    everyone = boss.get("/tenshu/v1/stats", params={"period": "24h"}).json()
    assert everyone["totals"]["requests"] == 4 and everyone["step"] == "hour"
    assert [b["key"] for b in everyone["budgets"]] == ["ana-key", "ben-key"]
    bens = boss.get("/tenshu/v1/stats", params={"user": "ben"}).json()
    assert bens["totals"]["requests"] == 1 and [b["key"] for b in bens["budgets"]] == ["ben-key"]
    reads = boss.get("/tenshu/v1/admin-reads").json()["data"]
    assert ("ben", "read", "stats") in {(r["user"], r["action"], r["resource"]) for r in reads}
    assert len(boss.get("/tenshu/v1/requests", params={"limit": 100}).json()["data"]) == 4


def test_a_member_naming_another_user_is_told_no_such_user(world):
    ben = world["c"]["ben"]
    for path in ("/tenshu/v1/stats", "/tenshu/v1/requests"):
        named = ben.get(path, params={"user": "ana"})
        nobody = ben.get(path, params={"user": "ana"[::-1]})
        assert named.status_code == nobody.status_code == 404
        assert named.json()["error"]["message"].replace("ana", "X") == \
            nobody.json()["error"]["message"].replace("ana"[::-1], "X")


def test_the_explorer_pages_the_callers_requests_newest_first(world):
    ana, ids = world["c"]["ana"], world["ids"]
    page = ana.get("/tenshu/v1/requests").json()
    assert [r["request_id"] for r in page["data"]] == [ids["failed"], ids["scored"], ids["ok"]]
    assert page["data"][0]["status"] == 400 and page["data"][0]["user"] == "ana"
    assert page["data"][0]["key"] == "ana-key" and not page["has_more"]
    first = ana.get("/tenshu/v1/requests", params={"limit": 1}).json()
    assert first["has_more"] and first["last_id"] == ids["failed"]
    rest = ana.get("/tenshu/v1/requests", params={"limit": 5, "after": first["last_id"]}).json()
    assert [r["request_id"] for r in rest["data"]] == [ids["scored"], ids["ok"]]
    errors = ana.get("/tenshu/v1/requests", params={"errors": "true"}).json()["data"]
    assert [r["request_id"] for r in errors] == [ids["failed"]]
    ben = world["c"]["ben"]
    assert [r["request_id"] for r in ben.get("/tenshu/v1/requests").json()["data"]] == \
        [ids["ben"]]
    assert ben.get("/tenshu/v1/requests", params={"after": ids["ok"]}).json()["data"] == []


def test_one_requests_trace_by_any_id_a_client_saw(world):
    ana, ids = world["c"]["ana"], world["ids"]
    bare = ids["scored"].removeprefix("req_")
    for given in (ids["scored"], "turn_" + bare, "chatcmpl-" + bare, "msg_" + bare, bare):
        found = ana.get(f"/tenshu/v1/requests/{given}")
        assert found.status_code == 200, (given, found.text)
        assert found.json()["request_id"] == ids["scored"]
    data = found.json()
    assert data["routed"] == "auto" and data["tier"] == "local" and 0 <= data["score"] <= 1
    assert data["trace"]["reason"].startswith("sentinel")
    assert [(a["backend"], a["outcome"]) for a in data["trace"]["attempts"]] == [
        ("tenshu-tiny", "ok")]
    assert data["ttft_ms"] > 0 and data["duration_ms"] >= data["ttft_ms"]
    failed = ana.get(f"/tenshu/v1/requests/{ids['failed']}").json()
    assert failed["status"] == 400 and failed["error_kind"] == "context_length_exceeded"
    assert failed["trace"]["attempts"][0]["error"].startswith("context_length_exceeded:")
    assert ana.get(f"/tenshu/v1/requests/{ids['chatcmpl']}").json()["request_id"] == ids["ok"]


def test_ben_cannot_read_anas_request_by_any_id(world):
    ben, ids = world["c"]["ben"], world["ids"]
    bare = ids["ok"].removeprefix("req_")
    made_up = "0123456789abcdef01234567"
    for prefix in ("req_", "turn_", "chatcmpl-", "msg_", ""):
        theirs = ben.get(f"/tenshu/v1/requests/{prefix}{bare}")
        nobodys = ben.get(f"/tenshu/v1/requests/{prefix}{made_up}")
        assert theirs.status_code == nobodys.status_code == 404
        assert theirs.text.replace(bare, "ID") == nobodys.text.replace(made_up, "ID")
        assert {"message", "type"} <= set(theirs.json()["error"])  # OpenAI's error shape
    assert world["c"]["boss"].get(f"/tenshu/v1/requests/{ids['ok']}").json()["user"] == "ana"


def test_bad_input_is_a_400_and_no_key_a_401(world):
    ana = world["c"]["ana"]
    bad = ana.get("/tenshu/v1/stats", params={"period": "2h"})
    assert bad.status_code == 400 and "period" in bad.json()["error"]["message"]
    assert ana.get("/tenshu/v1/requests", params={"limit": 0}).status_code == 400
    anonymous = httpx.get(world["live"].base_url + "/tenshu/v1/stats")
    assert anonymous.status_code == 401 and "error" in anonymous.json()
