"""Connecting and disconnecting, against a real OAuth 2 server on loopback: PKCE, the state
check, the loopback redirect and its page, and revocation."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import replace

import pytest

from tenshu.core.errors import IntegrationError
from tenshu.integrations import TokenSource, connect, disconnect
from tenshu.integrations.oauth import authorization_request, exchange
from tests.integrations.browser import authorize
from tests.integrations.conftest import USER


async def settle(browser, count=1):
    """Wait for the browser's thread to have its page."""
    for _ in range(200):
        if len(browser.pages) >= count:
            return
        await asyncio.sleep(0.01)


async def test_connect_signs_in_with_pkce_and_keeps_the_token(integration, store, server,
                                                              browser):
    token = await connect(integration, store, USER, open_url=browser.open, timeout=10)

    assert store.get(USER, "work") == token
    assert server.valid(token.access_token) and token.refresh_token
    assert token.scopes == ("read",) and token.expires_at > token.obtained_at
    assert server.challenges == ["S256"]  # the code was asked for with an S256 challenge
    assert "code_challenge_method=S256" in browser.urls[0]
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in browser.urls[0]
    await settle(browser)
    page = browser.pages[0]
    assert page.status_code == 200
    assert "connected to work" in page.text and "You can close this tab" in page.text


async def test_the_server_refuses_the_code_with_a_wrong_verifier(integration, server):
    request = authorization_request(integration, "http://127.0.0.1:9/callback")
    code = dict(p.split("=", 1) for p in authorize(request.url).split("?", 1)[1].split("&"))

    wrong = replace(request, code_verifier="x" * 64)
    with pytest.raises(IntegrationError, match="refused the authorization code.*invalid_grant"):
        await exchange(integration, wrong, code["code"])
    token = await exchange(integration, request, code["code"])  # the right one is taken
    assert server.valid(token.access_token)


async def test_an_answer_with_another_state_is_refused(integration, store, server, browser):
    browser.state = "forged-ståte"  # not even ASCII
    with pytest.raises(IntegrationError, match="state that is not the one tenshu sent"):
        await connect(integration, store, USER, open_url=browser.open, timeout=10)

    assert store.get(USER, "work") is None
    assert server.requests["authorization_code"] == 0  # its code was never exchanged
    await settle(browser)
    assert browser.pages[0].status_code == 400
    assert "could not connect work" in browser.pages[0].text


async def test_a_refusal_at_the_provider_is_reported(integration, store, server, browser):
    server.consent = False
    with pytest.raises(IntegrationError, match="the provider answered access_denied"):
        await connect(integration, store, USER, open_url=browser.open, timeout=10)
    assert store.get(USER, "work") is None


async def test_no_answer_in_time_says_to_run_it_again(integration, store):
    with pytest.raises(IntegrationError, match="no answer from the browser within 0.2 s; run "
                                               "`tenshu integrations connect work` again"):
        await connect(integration, store, USER, open_url=lambda url: None, timeout=0.2)


async def test_disconnect_revokes_the_grant_and_deletes_the_token(integration, store, server,
                                                                  browser):
    token = await connect(integration, store, USER, open_url=browser.open, timeout=10)

    outcome = await disconnect(integration, store, USER)

    assert (outcome.removed, outcome.revoked) == (True, True)
    assert server.revoked == ["refresh_token", "access_token"]
    assert not server.valid(token.access_token)
    assert store.get(USER, "work") is None
    again = await disconnect(integration, store, USER)
    assert (again.removed, again.problem) == (False, "not connected")


async def test_without_a_revocation_endpoint_the_token_is_deleted_here(integration, store,
                                                                       server, browser):
    integration = replace(integration, provider=replace(integration.provider, revoke_url=""))
    await connect(integration, store, USER, open_url=browser.open, timeout=10)

    outcome = await disconnect(integration, store, USER)

    assert (outcome.removed, outcome.revoked) == (True, False)
    assert outcome.problem == "custom has no revocation endpoint"
    assert server.revoked == [] and store.get(USER, "work") is None


async def test_a_revocation_that_fails_still_deletes_the_token(integration, store, server,
                                                               browser):
    await connect(integration, store, USER, open_url=browser.open, timeout=10)
    broken = replace(integration, provider=replace(integration.provider,
                                                   revoke_url=server.base + "/nowhere"))

    outcome = await disconnect(broken, store, USER)

    assert (outcome.removed, outcome.revoked) == (True, False)
    assert "answered HTTP 404" in outcome.problem
    assert store.get(USER, "work") is None


async def test_no_token_reaches_a_log(integration, store, server, browser, caplog):
    caplog.set_level(logging.DEBUG)
    await connect(integration, store, USER, open_url=browser.open, timeout=10)
    server.kill_access_tokens()
    source = TokenSource([integration], store)
    assert (await source.authorized_request(USER, "work", "GET", server.api_url)).is_success
    await disconnect(integration, store, USER)

    # the server's side (authlib.oauth2.rfc6749...) logs what it issues; tenshu's must not
    ours = [r for r in caplog.records if not r.name.startswith("authlib.oauth2.rfc")]
    logged = "\n".join(f"{r.name}: {r.getMessage()}" for r in ours)
    assert "HTTP Request: POST " + server.token_url in logged  # the calls were logged
    assert [s for s in server.secrets() if s in logged] == []


async def test_an_idle_connection_does_not_hold_up_the_sign_in(integration, store, browser):
    idle = []

    def preconnect_then_open(url):  # as browsers do: a socket opened ahead, left silent
        port = int(url.split("127.0.0.1%3A", 1)[1].split("%2F", 1)[0])
        idle.append(socket.create_connection(("127.0.0.1", port)))
        browser.open(url)

    started = time.monotonic()
    await connect(integration, store, USER, open_url=preconnect_then_open, timeout=10)
    assert time.monotonic() - started < 3  # not the idle socket's 10 s read timeout
    idle[0].close()
