"""The HTTP connection's limits (api/connection.py), met as an attacker would meet them: a header
too large at once or never ending, a connection that sends nothing or a byte at a time, a body
that trickles, more connections than allowed, and an absolute-form target naming another host.
Each is answered (or the connection closed) without the request reaching the app."""

from __future__ import annotations

import json
import select
import socket
import time

import httpx
import pytest

from tests.api import raw
from tests.api.live import live_server

LIMITS = dict(header_timeout=2.0, body_timeout=2.0, body_min_kib_per_s=4.0, keep_alive=1.0,
              max_header_kib=16.0, max_connections=16)
CLOSES_WITHIN = 30.0  # generous: the limits above are seconds, a loaded machine is slower


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    state = tmp_path_factory.mktemp("connection") / "state.db"
    with live_server(state, key_name=None, embedder=False, **LIMITS) as live:
        yield live


def head(path: str = "/v1/models", *extra: str, method: str = "GET") -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: localhost", *extra]).encode()


def test_a_header_over_the_limit_is_431_in_the_protocols_format(live):
    big = "X-Big: " + "a" * 40_000
    openai = raw.request(live.base_url, head("/v1/models", big))
    assert openai.status == 431 and openai.headers["connection"] == "close"
    assert "16 KiB" in openai.json()["error"]["message"]
    ollama = raw.request(live.base_url, head("/api/tags", big))
    assert ollama.status == 431 and "server.max_header_kib" in ollama.json()["error"]
    many = raw.request(live.base_url, head("/v1/models", *(f"X-{i}: {'b' * 100}"
                                                           for i in range(300))))
    assert many.status == 431


def test_a_header_that_never_ends_is_refused_while_it_is_still_arriving(live):
    with raw.connect(live.base_url) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-Endless: ")
        sent = 0
        while sent < 20_000_000 and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(b"a" * 16_384)
            except OSError:
                break
            sent += 16_384
        reply = raw.read_reply(sock)
    assert reply is not None and reply.status == 431
    assert sent < 20_000_000  # answered long before the header would have ended


def test_a_connection_that_sends_nothing_is_closed(live):
    with raw.connect(live.base_url) as sock:
        assert raw.closed_within(sock, CLOSES_WITHIN)


def trickle(sock: socket.socket, data: bytes, interval: float) -> bool:
    """Send `data` a byte every `interval` seconds until the server answers or closes (True),
    or CLOSES_WITHIN seconds pass (False)."""
    deadline = time.monotonic() + CLOSES_WITHIN
    for i in range(len(data)):
        if select.select([sock], [], [], 0)[0]:
            return True
        if time.monotonic() > deadline:
            return False
        try:
            sock.sendall(data[i:i + 1])
        except OSError:
            return True
        time.sleep(interval)
    return False


def test_a_request_sent_a_byte_at_a_time_is_cut_off(live):
    request = head("/v1/models", *(f"X-Pad-{i}: {'p' * 40}" for i in range(40))) + b"\r\n\r\n"
    with raw.connect(live.base_url) as sock:
        assert trickle(sock, request, 0.2), "the server waited for the whole trickle"
        reply = raw.read_reply(sock)
    assert reply is None or reply.status == 408


def test_a_body_that_trickles_is_408(live):
    body = json.dumps({"model": "tenshu-tiny", "messages": [{"role": "user", "content": "hi"}],
                       "pad": "x" * 100_000}).encode()
    with raw.connect(live.base_url) as sock:
        sock.sendall(head("/v1/chat/completions", "Content-Type: application/json",
                          f"Content-Length: {len(body)}", method="POST") + b"\r\n\r\n")
        assert trickle(sock, body, 0.05), "the server waited for the whole trickle"
        reply = raw.read_reply(sock)
    assert reply is not None and reply.status == 408
    assert "body_min_kib_per_s" in reply.json()["error"]["message"]


def test_a_body_at_a_fair_rate_is_read_whole(live):
    body = json.dumps({"model": "tenshu-tiny", "max_tokens": 2, "temperature": 0,
                       "messages": [{"role": "user", "content": "hi"}],
                       "pad": "x" * 12_000}).encode()  # unknown fields are allowed
    with raw.connect(live.base_url) as sock:
        sock.sendall(head("/v1/chat/completions", "Content-Type: application/json",
                          f"Content-Length: {len(body)}", method="POST") + b"\r\n\r\n")
        for i in range(0, len(body), 4_000):  # well over 4 KiB/s, in pieces
            sock.sendall(body[i:i + 4_000])
            time.sleep(0.1)
        reply = raw.read_reply(sock)
    assert reply.status == 200, reply.body


def test_an_idle_kept_alive_connection_is_closed(live):
    with raw.connect(live.base_url) as sock:
        sock.sendall(head("/health") + b"\r\n\r\n")
        assert raw.read_reply(sock).status == 200
        assert raw.closed_within(sock, CLOSES_WITHIN)


def test_connections_past_the_limit_get_503_and_the_server_recovers(live):
    held: list[socket.socket] = []
    refused = None
    try:
        for _ in range(LIMITS["max_connections"] + 8):
            sock = raw.connect(live.base_url)
            sock.sendall(b"GET /health HTTP/1.1\r\n")  # a request begun, never finished
            held.append(sock)
            if select.select([sock], [], [], 0.2)[0]:
                refused = raw.read_reply(sock)
                break
        assert refused is not None and refused.status == 503
        assert len(held) <= LIMITS["max_connections"] + 1
        assert "server.max_connections" in refused.json()["error"]["message"]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + CLOSES_WITHIN
    while True:  # the held connections are gone once the server has seen them close
        try:
            if httpx.get(live.base_url + "/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_an_absolute_form_target_is_checked_as_the_host_it_names(live):
    port = live.base_url.rsplit(":", 1)[1]
    foreign = raw.request(live.base_url, b"GET http://evil.example/v1/models HTTP/1.1\r\n"
                                         b"Host: localhost")
    assert foreign.status == 403 and "evil.example" in foreign.json()["error"]["message"]
    for target in (f"http://localhost:{port}/health", f"http://[::1]:{port}/health"):
        local = raw.request(live.base_url, f"GET {target} HTTP/1.1\r\nHost: evil.example".encode())
        assert local.status == 200, target
