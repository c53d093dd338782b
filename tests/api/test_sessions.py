"""Browser sessions through /tenshu/v1/sessions (api/admin.py), logged in as a browser logs in
(the login form, its token paired with a cookie): each user lists only their own; a member
cannot end another's session (404, as a missing one) and an admin can; an ended session's cookie
is refused; the cookie alone, without the session's CSRF token, reads but changes nothing; and
no other site's page can use it. Then the admin-only views beside them: the loaded models and
the config check.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.api.live import live_server

PASSWORDS = {"ana": "ana-password-1", "ben": "ben-password-1", "boss": "boss-password-1"}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("sessions") / "state.db", embedder=False) as live:
        store = live.server.store
        for name, role in (("ana", "member"), ("ben", "member"), ("boss", "admin")):
            store.users.add(name, role=role, password=PASSWORDS[name])
        live.keys = {name: store.keys.create(f"{name}-key", user=name)[1] for name in PASSWORDS}
        yield live


class Browser:
    """One browser's cookies, logged in through the login form; `csrf` is the token its pages
    carry (the meta tag), which a page's script sends back with every change."""

    def __init__(self, live, name: str, agent: str = "test-browser/1.0"):
        self.client = httpx.Client(base_url=live.base_url, headers={"user-agent": agent},
                                   timeout=30)
        self.client.get("/login")
        answer = self.client.post("/login", data={
            "csrf": self.client.cookies["tenshu_login"], "name": name,
            "password": PASSWORDS[name], "next": "/admin"})
        assert answer.status_code == 303, answer.text
        page = self.client.get("/admin").text  # a member's is the not-found page: it has one too
        self.csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)[1]

    def get(self, path: str, **kw) -> httpx.Response:
        return self.client.get("/tenshu/v1" + path, **kw)

    def change(self, method: str, path: str, *, csrf: str | None = "mine", **kw):
        headers = kw.pop("headers", {})
        if csrf is not None:
            headers["x-csrf-token"] = self.csrf if csrf == "mine" else csrf
        return self.client.request(method, "/tenshu/v1" + path, headers=headers, **kw)

    def mine(self) -> list[dict]:
        answer = self.get("/sessions")
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]

    def session_id(self) -> str:
        return next(s["id"] for s in self.mine() if s["current"])


def test_each_user_lists_only_their_own_sessions(live):
    ana, ana_phone = Browser(live, "ana"), Browser(live, "ana", "phone/2.0")
    ben, boss = Browser(live, "ben"), Browser(live, "boss")
    listed = ana.mine()
    assert {s["user"] for s in listed} == {"ana"} and len(listed) == 2
    assert [s["id"] for s in listed if s["current"]] == [ana.session_id()]
    assert {s["user_agent"] for s in listed} == {"test-browser/1.0", "phone/2.0"}
    assert {s["via"] for s in listed} == {"password"}
    assert ana_phone.session_id() != ana.session_id()
    # a member may not ask for everyone's; an admin may, and sees theirs alone without asking
    assert ana.get("/sessions", params={"all": "true"}).status_code == 403
    assert {s["user"] for s in boss.mine()} == {"boss"}
    everyone = boss.get("/sessions", params={"all": "true"}).json()["data"]
    assert {ana.session_id(), ben.session_id(), boss.session_id()} <= {s["id"] for s in everyone}
    # with an API key instead of the cookie: the key's user's sessions, none of them "current"
    by_key = httpx.get(live.base_url + "/tenshu/v1/sessions",
                       headers={"Authorization": f"Bearer {live.keys['ana']}"}).json()["data"]
    assert {s["id"] for s in by_key} == {s["id"] for s in listed}
    assert not any(s["current"] for s in by_key)


def test_a_member_cannot_end_anothers_session_but_an_admin_can(live):
    ana, ben, boss = Browser(live, "ana"), Browser(live, "ben"), Browser(live, "boss")
    bens = ben.session_id()
    refused = ana.change("DELETE", f"/sessions/{bens}")
    missing = ana.change("DELETE", "/sessions/ses_00000000000000000000")
    assert refused.status_code == missing.status_code == 404
    assert refused.json()["error"]["type"] == missing.json()["error"]["type"]
    assert ben.get("/me").status_code == 200  # untouched

    ended = boss.change("DELETE", f"/sessions/{bens}")
    assert ended.status_code == 200 and ended.json()["deleted"] is True
    gone = ben.get("/me")
    assert gone.status_code == 401 and "log in again" in gone.json()["error"]["message"]
    assert ben.client.get("/admin").status_code == 303  # the pages send it to /login
    assert boss.change("DELETE", f"/sessions/{bens}").status_code == 404  # ended already
    assert ana.get("/me").status_code == 200 and boss.get("/me").status_code == 200


def test_a_user_ends_their_own_session(live):
    ana, other = Browser(live, "ana"), Browser(live, "ana")
    assert ana.change("DELETE", f"/sessions/{other.session_id()}").status_code == 200
    assert other.get("/sessions").status_code == 401
    assert ana.change("DELETE", f"/sessions/{ana.session_id()}").status_code == 200
    assert ana.get("/me").status_code == 401


def test_the_cookie_alone_reads_but_changes_nothing(live):
    ana, spare = Browser(live, "ana"), Browser(live, "ana")
    target = spare.session_id()
    assert ana.get("/me").json()["record"] == "request"
    for csrf in (None, "", "not-the-token", spare.csrf):  # missing, empty, wrong, another's
        assert ana.change("PATCH", "/me", json={"record": "never"},
                          csrf=csrf).status_code == 403, csrf
        refused = ana.change("DELETE", f"/sessions/{target}", csrf=csrf)
        assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    assert ana.get("/me").json()["record"] == "request"
    assert spare.get("/me").status_code == 200  # its session still lives
    assert target in {s["id"] for s in ana.mine()}
    # with the page's token, the same changes go through
    assert ana.change("PATCH", "/me", json={"record": "request"}).status_code == 200
    assert ana.change("DELETE", f"/sessions/{target}").status_code == 200


def test_another_sites_page_cannot_use_the_cookie(live):
    ana, spare = Browser(live, "ana"), Browser(live, "ana")
    target = spare.session_id()
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": live.base_url.replace("http:", "https:")},
                    {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}):
        assert ana.get("/sessions", headers=headers).status_code == 403, headers
        assert ana.change("DELETE", f"/sessions/{target}",
                          headers=dict(headers)).status_code == 403, headers
    assert spare.get("/me").status_code == 200
    # the server's own page, same origin, is let through
    same = {"Origin": live.base_url, "Sec-Fetch-Site": "same-origin"}
    assert ana.get("/sessions", headers=same).status_code == 200
    assert ana.change("DELETE", f"/sessions/{target}", headers=same).status_code == 200


def test_the_loaded_models_and_the_config_check_are_for_admins(live):
    ana, boss = Browser(live, "ana"), Browser(live, "boss")
    for path in ("/models/loaded", "/config/check"):
        assert ana.get(path).status_code == 403, path
        assert httpx.get(live.base_url + "/tenshu/v1" + path, headers={
            "Authorization": f"Bearer {live.keys['ben']}"}).status_code == 403, path

    models = boss.get("/models/loaded").json()["data"]
    tiny = next(m for m in models if m["name"] == "tenshu-tiny")
    assert tiny["kind"] == "chat" and tiny["backend"] == "embedded"
    assert tiny["locality"] == "local" and tiny["context_window"] > 0 and tiny["family"]
    [deployment] = tiny["deployments"]
    assert deployment["state"] == "healthy" and deployment["in_flight"] == 0
    assert deployment["limit"] > 0 and "max_num_seqs" in deployment["limit_source"]

    report = boss.get("/config/check").json()
    assert report["valid"] is True
    assert [m["name"] for m in report["models"]] == ["tenshu-tiny"]
    assert report["server"].startswith("127.0.0.1:") and report["warnings"] == []
    assert report["store"].endswith("state.db")
