"""The integrations' fixtures: a real OAuth 2 server on loopback (oauth_server.py), an
integration of tenshu's configured against it, a token store, and a browser that signs in."""

from __future__ import annotations

import threading

import pytest

from tenshu.config.integrations import IntegrationSpec
from tenshu.integrations import FileTokenStore, Integration
from tests.integrations.browser import visit
from tests.integrations.oauth_server import AuthServer

SECRET_ENV = "TENSHU_TEST_OAUTH_SECRET"
USER = "1"  # a tenshu user's id


@pytest.fixture
def server():
    with AuthServer() as running:
        yield running


@pytest.fixture
def integration(server, monkeypatch) -> Integration:
    monkeypatch.setenv(SECRET_ENV, server.client.client_secret)
    return Integration.from_spec(IntegrationSpec(
        name="work", provider="custom", client_id=server.client.client_id,
        client_secret_env=SECRET_ENV, scopes=("read",), authorize_url=server.authorize_url,
        token_url=server.token_url, revoke_url=server.revoke_url))


@pytest.fixture
def store(tmp_path) -> FileTokenStore:
    return FileTokenStore(tmp_path / "private")


class Browser:
    """Opens URLs as connect() asks, each sign-in in a thread (the loop must stay free to
    answer the redirect); `pages` are what tenshu showed."""

    def __init__(self):
        self.state: str | None = None  # a forged state to bring back instead of the real one
        self.pages = []
        self.urls = []

    def open(self, url: str) -> None:
        self.urls.append(url)
        threading.Thread(target=lambda: self.pages.append(visit(url, state=self.state)),
                         daemon=True).start()


@pytest.fixture
def browser() -> Browser:
    return Browser()
