"""Fresh tokens: refreshed before they expire and after a 401, once for callers that find them
stale together, and a clear "connect again" when the provider no longer honours the grant."""

from __future__ import annotations

import asyncio
import time

import pytest

from tenshu.core.errors import NotFoundError, ReconnectRequiredError
from tenshu.integrations import Token, TokenSource, connect
from tests.integrations.conftest import USER


class Clock:
    """The token source's time: now, until a test lets time pass (no test sleeps for it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def connected(integration, store, server, browser):
    """A token source over a connected integration whose tokens live 10 minutes (refreshed
    within the last minute of their life), on a clock of the test's."""
    server.expires_in = 600
    await connect(integration, store, USER, open_url=browser.open, timeout=10)
    return TokenSource([integration], store, clock=Clock())


async def test_a_token_is_refreshed_before_it_expires(connected, store, server):
    first = await connected.access_token(USER, "work")
    assert server.requests["refresh_token"] == 0  # 10 minutes left: fresh enough

    connected.clock.now += 545  # within the minute before it expires
    second = await connected.access_token(USER, "work")

    assert second != first and server.requests["refresh_token"] == 1
    assert server.valid(first)  # it had not expired yet
    assert store.get(USER, "work").access_token == second
    assert await connected.access_token(USER, "work") == second  # not refreshed again


async def test_a_401_is_answered_by_one_refresh_and_one_retry(connected, server):
    server.kill_access_tokens()  # the service no longer takes the token the store holds

    response = await connected.authorized_request(USER, "work", "GET", server.api_url)

    assert response.status_code == 200 and response.json()["user"] == "ana@example.org"
    assert server.requests["refresh_token"] == 1 and server.requests["api"] == 2


async def test_a_revoked_grant_says_to_connect_again(connected, server):
    server.revoke_grants()

    with pytest.raises(ReconnectRequiredError) as error:
        await connected.authorized_request(USER, "work", "GET", server.api_url)

    message = str(error.value)
    assert "refused the refresh token (invalid_grant" in message
    assert message.endswith("connect again: tenshu integrations connect work")
    assert server.requests["refresh_token"] == 1


async def test_callers_that_find_it_stale_together_spend_the_refresh_token_once(connected,
                                                                                 server):
    connected.clock.now += 545
    server.token_delay = 0.2  # the refresh takes a while: the others arrive meanwhile

    tokens = await asyncio.gather(*(connected.access_token(USER, "work") for _ in range(5)))

    assert len(set(tokens)) == 1 and server.valid(tokens[0])
    assert server.requests["refresh_token"] == 1


async def test_requests_that_get_401_together_refresh_once(connected, server):
    server.kill_access_tokens()
    server.token_delay = 0.2

    responses = await asyncio.gather(*(
        connected.authorized_request(USER, "work", "GET", server.api_url) for _ in range(4)))

    assert [r.status_code for r in responses] == [200] * 4
    assert server.requests["refresh_token"] == 1


async def test_an_expired_token_without_a_refresh_token_says_to_connect_again(integration,
                                                                              store):
    now = time.time()
    store.put(USER, "work", Token("at-old", expires_at=now - 5, obtained_at=now - 3605))

    with pytest.raises(ReconnectRequiredError, match="gave no refresh token; connect again"):
        await TokenSource([integration], store).access_token(USER, "work")


async def test_not_connected_and_not_configured(integration, store):
    source = TokenSource([integration], store)
    with pytest.raises(ReconnectRequiredError,
                       match="'work': not connected; connect: tenshu integrations connect"):
        await source.access_token(USER, "work")
    with pytest.raises(NotFoundError, match="no integration named 'mail'; configured: work"):
        await source.access_token(USER, "mail")
