"""Authentication at the server's edge: beyond loopback, keys stay required for the server's
whole life; of 40 ways to present credentials, only the right key in the two documented headers
gets in, on every protocol; and wrong keys from an address beyond this machine are slowed down
without locking out the right one."""

from __future__ import annotations

import base64

import httpx
import pytest
from starlette.requests import Request

from tenshu.api.auth import Authenticator, FailedLogins
from tenshu.core.errors import AuthenticationError, OverloadedError
from tenshu.store import open_store
from tests.api.live import live_server

# One probe per protocol: what each answers a request it refuses is its own error format.
PROBES = [("GET", "/v1/models", None), ("GET", "/api/tags", None),
          ("POST", "/v1/messages/count_tokens",
           {"model": "tenshu-tiny", "messages": [{"role": "user", "content": "hi"}]})]


def call(base_url: str, headers, path="/v1/models", method="GET", body=None, **kwargs):
    return httpx.request(method, base_url + path, headers=headers, json=body, **kwargs)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """Keys required (one exists), bound to loopback."""
    with live_server(tmp_path_factory.mktemp("auth") / "state.db", embedder=False) as live:
        yield live


@pytest.fixture(scope="module")
def exposed(tmp_path_factory):
    """Listening on every address (so the Host check is off): keys are always required, and
    the server refuses to start without one."""
    state = tmp_path_factory.mktemp("exposed") / "state.db"
    with pytest.raises(ValueError, match="refusing to listen on 0.0.0.0 without API keys"):
        live_server(state, embedder=False, host="0.0.0.0", key_name=None).__enter__()
    with open_store(state) as store:
        _, key = store.keys.create("tests")
    with live_server(state, embedder=False, host="0.0.0.0", key_name=None) as live:
        live.key = key
        yield live


def test_beyond_loopback_revoking_the_last_key_locks_the_server(exposed):
    assert call(exposed.base_url, exposed.headers()).status_code == 200
    exposed.server.store.keys.revoke("tests")
    for probe_method, path, body in PROBES:
        for headers in ({}, exposed.headers()):  # no key, and the revoked one
            refused = call(exposed.base_url, headers, path, probe_method, body)
            assert refused.status_code == 401, (path, headers)
    assert httpx.get(exposed.base_url + "/health").status_code == 200  # probes stay open
    assert httpx.get(exposed.base_url + "/ready").json() == {"status": "ready"}
    _, key = exposed.server.store.keys.create("again")
    assert call(exposed.base_url, {"x-api-key": key}).status_code == 200


def forms(key: str, revoked: str) -> list[tuple[str, list[tuple[str, str]], dict]]:
    """(what, headers, extra request arguments): the first five must get in, no other may."""
    other = "tsk-" + "A" * 40
    basic = base64.b64encode(f"user:{key}".encode()).decode()
    return [
        ("bearer", [("Authorization", f"Bearer {key}")], {}),
        ("x-api-key", [("x-api-key", key)], {}),
        ("both, agreeing", [("Authorization", f"Bearer {key}"), ("x-api-key", key)], {}),
        ("scheme in any case", [("Authorization", f"bEaReR {key}")], {}),
        ("two spaces after the scheme", [("Authorization", f"Bearer  {key}")], {}),
        ("nothing", [], {}),
        ("empty Authorization", [("Authorization", "")], {}),
        ("scheme alone", [("Authorization", "Bearer")], {}),
        ("two credentials in one header", [("Authorization", f"Bearer {key}, Basic {basic}")],
         {}),
        ("no scheme", [("Authorization", key)], {}),
        ("Basic", [("Authorization", f"Basic {basic}")], {}),
        ("Token scheme", [("Authorization", f"Token {key}")], {}),
        ("key and more", [("Authorization", f"Bearer {key} {key}")], {}),
        ("one character short", [("x-api-key", key[:-1])], {}),
        ("one character more", [("x-api-key", key + "x")], {}),
        ("one character changed", [("x-api-key", key[:-1] + ("B" if key[-1] != "B" else "C"))],
         {}),
        ("upper case", [("x-api-key", key.upper())], {}),
        ("lower case", [("x-api-key", key.lower())], {}),
        ("the display prefix", [("x-api-key", key[:12])], {}),
        ("the part after the prefix", [("x-api-key", key[4:])], {}),
        ("another well-formed key", [("x-api-key", other)], {}),
        ("the revoked key", [("x-api-key", revoked)], {}),
        ("the key's hash", [("x-api-key", __import__("hashlib").sha256(key.encode())
                             .hexdigest())], {}),
        ("headers disagreeing", [("Authorization", f"Bearer {key}"), ("x-api-key", other)], {}),
        ("right key, bad Authorization", [("Authorization", "Basic x"), ("x-api-key", key)], {}),
        ("Authorization twice", [("Authorization", f"Bearer {key}"),
                                 ("Authorization", f"Bearer {other}")], {}),
        ("x-api-key twice", [("x-api-key", key), ("x-api-key", other)], {}),
        ("query api_key", [], {"params": {"api_key": key}}),
        ("query key", [], {"params": {"key": key}}),
        ("cookie", [("Cookie", f"api_key={key}; session={key}")], {}),
        ("api-key header", [("api-key", key)], {}),
        ("X-Auth-Token", [("X-Auth-Token", key)], {}),
        ("Proxy-Authorization", [("Proxy-Authorization", f"Bearer {key}")], {}),
        ("anthropic-version alone", [("anthropic-version", "2023-06-01")], {}),
        ("empty x-api-key", [("x-api-key", "")], {}),
        ("x-api-key of dashes", [("x-api-key", "-" * 44)], {}),
        ("a placeholder", [("Authorization", "Bearer ollama")], {}),
        ("sk- style key", [("Authorization", "Bearer sk-" + "a" * 48)], {}),
        ("key in the path's query, encoded", [], {"params": {"Authorization": f"Bearer {key}"}}),
        ("x-api-key with the scheme", [("x-api-key", f"Bearer {key}")], {}),
    ]


def test_only_the_right_key_in_the_documented_headers_gets_in(guarded):
    key = guarded.key
    _, revoked = guarded.server.store.keys.create("to-revoke")
    guarded.server.store.keys.revoke("to-revoke")
    cases = forms(key, revoked)
    assert len(cases) == 40
    bypasses = []
    for i, (what, headers, extra) in enumerate(cases):
        for method, path, body in PROBES:
            response = call(guarded.base_url, headers, path, method, body, **extra)
            allowed = i < 5
            if allowed != (response.status_code == 200):
                bypasses.append((what, path, response.status_code))
            if not allowed:
                assert response.status_code == 401, (what, path)
                text = response.text
                assert key not in text and key[4:20] not in text, what  # never echoed
                error = response.json()
                if path.startswith("/api/"):
                    assert isinstance(error["error"], str)
                elif path.startswith("/v1/messages"):
                    assert error["type"] == "error" and error["error"]["type"] == \
                        "authentication_error"
                else:
                    assert error["error"]["type"] == "authentication_error"
    assert bypasses == []


def _request(headers: dict, client: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/v1/models",
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
                    "client": (client, 50000), "query_string": b""})


def test_wrong_keys_from_one_address_are_slowed_down_and_the_right_key_still_passes(tmp_path):
    with open_store(tmp_path / "state.db") as store:
        _, key = store.keys.create("laptop")
        auth = Authenticator(store.keys, True, FailedLogins(limit=20, window=60))
        remote, neighbour = "203.0.113.7", "198.51.100.3"
        for i in range(20):
            with pytest.raises(AuthenticationError):
                auth.check(_request({"x-api-key": f"tsk-{i:040d}"}, remote))
        with pytest.raises(OverloadedError) as slowed:
            auth.check(_request({"x-api-key": "tsk-" + "z" * 40}, remote))
        assert slowed.value.status == 429 and 0 < slowed.value.retry_after <= 60
        assert "too many failed authentication attempts" in str(slowed.value)
        assert auth.check(_request({"x-api-key": key}, remote)).name == "laptop"
        with pytest.raises(AuthenticationError):  # another address is not slowed
            auth.check(_request({"x-api-key": "tsk-" + "z" * 40}, neighbour))
        for _ in range(50):  # nor is this machine
            with pytest.raises(AuthenticationError):
                auth.check(_request({"x-api-key": "tsk-" + "z" * 40}, "127.0.0.1"))


def test_failed_logins_forget_the_oldest_addresses_first():
    failures = FailedLogins(limit=1, window=60, max_clients=100)
    for i in range(1_000):
        failures.failed(f"10.0.{i // 256}.{i % 256}")
        failures.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(failures._clients) <= 100
    assert failures.wait("10.0.3.231") > 0  # the newest are kept
    assert failures.wait("10.0.0.0") == 0
