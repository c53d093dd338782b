"""One person on their own machine (loopback, no keys): the browser goes straight in as the local
owner, with a session and a CSRF token like anyone's; once a key exists, the pages ask for a
login like the API does."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from tests.api.live import live_server


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("local") / "state.db", key_name=None,
                     embedder=False) as live:
        yield live


def test_the_local_owner_goes_straight_in_and_chats(browser, local):
    context = browser.new_context()
    try:
        page = context.new_page()
        errors = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.goto(local.base_url + "/")  # a browser at the root lands on the chat
        page.wait_for_url("**/chat")
        expect(page.locator(".who .user")).to_have_text("owner")
        cookie = next(c for c in context.cookies() if c["name"] == "tenshu_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.fill("#prompt", "hello")
        page.press("#prompt", "Enter")
        expect(page.locator("#send")).to_be_visible(timeout=120_000)
        expect(page.locator(".turn .answer")).not_to_be_empty()
        assert errors == []
    finally:
        context.close()


def test_ollama_clients_still_get_their_probe_at_the_root(local):
    response = httpx.get(local.base_url + "/")
    assert response.text == "Ollama is running"


def test_a_key_made_later_closes_the_open_door(local):
    client = httpx.Client(base_url=local.base_url)
    assert client.get("/chat").status_code == 200
    local.server.store.keys.create("laptop")
    try:
        local.server.store.keys.forget()
        fresh = httpx.get(local.base_url + "/chat")
        assert fresh.status_code == 303 and fresh.headers["location"].startswith("/login")
        # the session it was let into before ends too, on the pages and on the API
        assert client.get("/chat").status_code == 303
        assert client.get("/tenshu/v1/me").status_code == 401
    finally:
        local.server.store.keys.revoke("laptop")
        local.server.store.keys.forget()
