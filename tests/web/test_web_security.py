"""The web UI's defences, checked over HTTP as an attacker's page or script would try them: the
headers every page carries, the session cookie, CSRF tokens, Origin checks on the streaming
endpoint, the login form's own token, backoff after failed logins, and where login may send the
browser next.
"""

from __future__ import annotations

import httpx

from tests.web.conftest import PASSWORDS

PAGES = ["/chat", "/arena", "/memory", "/dashboard", "/runs", "/inbox", "/jobs", "/admin"]
CHAT = {"model": "tenshu-tiny", "max_tokens": 4, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]}


def logged_in(site, who: str) -> tuple[httpx.Client, str]:
    """A client holding `who`'s session cookie, as their browser would, and the CSRF token of
    their pages."""
    client = httpx.Client(base_url=site.base_url, timeout=120)
    client.get("/login")
    response = client.post("/login", data={"name": who, "password": PASSWORDS[who],
                                           "csrf": client.cookies["tenshu_login"]})
    assert response.status_code == 303, response.text
    page = client.get("/chat").text
    csrf = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    return client, csrf


def test_every_page_carries_a_strict_policy(site):
    client, _ = logged_in(site, "boss")
    for path in [*PAGES, "/login"]:
        response = client.get(path) if path != "/login" else httpx.get(site.base_url + path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy and "img-src 'self' data:" in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in response.text  # no inline script: only <script src=...>
        assert " style=" not in response.text and " onclick=" not in response.text


def test_pages_need_a_login_and_remember_where_to_go(site):
    response = httpx.get(site.base_url + "/dashboard?period=7d")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/dashboard%3Fperiod%3D7d"


def test_login_goes_only_to_a_page_of_this_server(site):
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        client = httpx.Client(base_url=site.base_url)
        client.get("/login")
        response = client.post("/login", data={
            "name": "ana", "password": PASSWORDS["ana"], "next": target,
            "csrf": client.cookies["tenshu_login"]})
        assert response.headers["location"] == "/chat", target


def test_the_login_form_needs_its_own_token(site):
    # another site's page posting a login form has no tenshu_login cookie to pair with
    response = httpx.post(site.base_url + "/login", data={
        "name": "ana", "password": PASSWORDS["ana"], "csrf": "guessed"})
    assert response.status_code == 403
    assert "tenshu_session" not in response.cookies


def test_the_cookie_alone_changes_nothing(site):
    client, csrf = logged_in(site, "ana")
    assert client.get("/tenshu/v1/me").json()["name"] == "ana"  # reading needs no token
    for token in (None, "wrong"):
        headers = {"x-csrf-token": token} if token else {}
        response = client.patch("/tenshu/v1/me", json={"record": "always"}, headers=headers)
        assert response.status_code == 403, response.text
        assert "CSRF" in response.json()["error"]["message"]
        assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 403
    assert client.get("/tenshu/v1/me").json()["record"] == "request"  # nothing changed
    ok = client.post("/v1/chat/completions", json=CHAT, headers={"x-csrf-token": csrf})
    assert ok.status_code == 200 and "data:" in ok.text


def test_another_origin_cannot_open_the_stream_even_with_the_cookie(site):
    client, csrf = logged_in(site, "ana")
    for origin in ("http://evil.example", "null", site.base_url.replace("127.0.0.1", "localhost")):
        response = client.post("/v1/chat/completions", json=CHAT, headers={
            "x-csrf-token": csrf, "Origin": origin})
        assert response.status_code == 403, origin
    same = client.post("/v1/chat/completions", json=CHAT, headers={
        "x-csrf-token": csrf, "Origin": site.base_url})
    assert same.status_code == 200
    # a page of another site fetching without an Origin (Sec-Fetch-Site says where it is from)
    sneaky = client.get("/tenshu/v1/conversations", headers={"Sec-Fetch-Site": "cross-site",
                                                            "Sec-Fetch-Mode": "cors"})
    assert sneaky.status_code == 403


def test_failed_logins_back_off(site):
    throttle = site.server.app.state.login_throttle
    client = httpx.Client(base_url=site.base_url)
    try:
        statuses = []
        for _ in range(5):
            client.get("/login")
            statuses.append(client.post("/login", data={
                "name": "nobody", "password": "wrong-password",
                "csrf": client.cookies["tenshu_login"]}).status_code)
        assert statuses[:3] == [401, 401, 401]
        assert 429 in statuses[3:]  # the fourth try waits a second, the fifth two
        client.get("/login")
        waited = client.post("/login", data={"name": "nobody", "password": "x",
                                             "csrf": client.cookies["tenshu_login"]})
        assert waited.status_code == 429 and int(waited.headers["retry-after"]) >= 1
        assert "Too many failed logins" in waited.text
    finally:  # the other tests log in from this address too
        throttle.succeeded("addr:127.0.0.1", "name:nobody")


def test_an_api_key_never_lands_in_a_page_or_the_browser_storage(site):
    client = httpx.Client(base_url=site.base_url)
    client.get("/login")
    response = client.post("/login", data={"key": site.keys["ana"],
                                           "csrf": client.cookies["tenshu_login"]})
    assert response.status_code == 303
    for path in PAGES[:-1]:
        assert site.keys["ana"] not in client.get(path).text
    assert site.keys["ana"] not in str(client.cookies.jar)
