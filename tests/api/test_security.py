"""Host and Origin at the server's edge (api/security.py), tried as a web page on another site or
a hand-made request would try them: 20 foreign hosts, 12 malformed ones, a repeated Host, an
origin that differs only in its scheme, browser requests that carry no Origin, and the simple
cross-origin POSTs (text/plain, forms) a page can send without asking first."""

from __future__ import annotations

import httpx
import pytest

from tests.api import raw

FOREIGN_HOSTS = [
    "evil.example", "evil.example:7311", "192.168.1.5", "10.0.0.1:80", "0.0.0.0",
    "localhost.evil.example", "evil.localhost", "127.0.0.1.nip.io", "localhost.", "LOCALHOST.",
    "[::ffff:127.0.0.1]", "[fe80::1]", "[2001:db8::1]:7311", "example.com", "x", "1.1.1.1:1",
    "127.0.0.2", "169.254.169.254", "metadata.google.internal", "host.docker.internal",
]
MALFORMED_HOSTS = [
    "localhost:7403@evil.com", "[::1]evil.com", "localhost:abc", "localhost:99999",
    "evil.com/path", "local host", "localhost:7311:7311", "[::1", "::1", "user@localhost",
    "localhost:", "[not-an-ip]",
]
LOCAL_HOSTS = ["localhost", "localhost:1", "LocalHost:7311", "127.0.0.1", "127.0.0.1:7311",
               "[::1]", "[::1]:7311"]


def get(server, host: str, *extra: str, path: str = "/v1/models") -> raw.Reply:
    head = "\r\n".join([f"GET {path} HTTP/1.1", f"Host: {host}",
                        f"Authorization: Bearer {server.key}", *extra])
    return raw.request(server.base_url, head.encode())


def test_twenty_foreign_hosts_are_refused_in_each_protocols_format(server):
    assert len(FOREIGN_HOSTS) == 20
    for host in FOREIGN_HOSTS:
        openai = get(server, host)
        assert openai.status == 403, host
        assert "not allowed" in openai.json()["error"]["message"]
        ollama = get(server, host, path="/api/tags")
        assert ollama.status == 403 and "not allowed" in ollama.json()["error"], host


def test_malformed_hosts_are_400_and_repeated_hosts_too(server):
    for host in MALFORMED_HOSTS:
        reply = get(server, host)
        assert reply is None or reply.status == 400, host  # httptools itself refuses a few
        if reply is not None:
            assert "Host" in reply.json()["error"]["message"], host
    for hosts in (["localhost", "evil.example"], ["evil.example", "localhost"],
                  ["localhost", "localhost"]):
        head = "\r\n".join(["GET /health HTTP/1.1", *(f"Host: {h}" for h in hosts)])
        reply = raw.request(server.base_url, head.encode())
        assert reply.status == 400 and "exactly one Host" in reply.json()["error"]["message"]
    missing = raw.request(server.base_url, b"GET /health HTTP/1.1\r\nX-Nothing: 1")
    assert missing.status == 400


def test_local_hosts_are_served(server):
    for host in LOCAL_HOSTS:
        assert get(server, host).status == 200, host


def test_an_origin_must_match_this_server_in_scheme_host_and_port(server):
    port = server.base_url.rsplit(":", 1)[1]
    host = f"127.0.0.1:{port}"
    same = get(server, host, f"Origin: http://{host}")
    assert same.status == 200
    for origin in (f"https://{host}", f"http://localhost:{port}",
                   f"http://127.0.0.1:{int(port) + 1}", "null", f"http://{host}.evil.example",
                   "http://evil.example"):
        refused = get(server, host, f"Origin: {origin}")
        assert refused.status == 403, origin
        assert "Origin" in refused.json()["error"]["message"]


def test_a_browsers_cross_site_request_without_origin_is_refused(server):
    host = "localhost"
    for site in ("cross-site", "same-site"):
        script = get(server, host, f"Sec-Fetch-Site: {site}", "Sec-Fetch-Mode: no-cors")
        assert script.status == 403 and "Sec-Fetch-Site" in script.json()["error"]["message"]
        # a person following a link is a navigation: it may load a page
        link = get(server, host, f"Sec-Fetch-Site: {site}", "Sec-Fetch-Mode: navigate",
                   path="/health")
        assert link.status == 200
    for site in ("same-origin", "none"):
        assert get(server, host, f"Sec-Fetch-Site: {site}", "Sec-Fetch-Mode: cors").status == 200


@pytest.mark.parametrize(("path", "content_type", "body"), [
    ("/v1/chat/completions", "text/plain",
     '{"model": "tenshu-tiny", "messages": [{"role": "user", "content": "hi"}]}'),
    ("/api/generate", "application/x-www-form-urlencoded",
     '{"model": "tenshu-tiny", "prompt": "hi", "stream": false}'),
    ("/v1/messages", "multipart/form-data; boundary=x",
     '{"model": "tenshu-tiny", "max_tokens": 3, "messages": [{"role": "user", "content": "x"}]}'),
])
def test_simple_cross_origin_posts_are_refused_before_they_run(server, path, content_type, body):
    before = server.gateway.in_flight
    for headers in ({"Origin": "https://evil.example"},
                    {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}):
        response = httpx.post(server.base_url + path, content=body,
                              headers={**headers, "Content-Type": content_type,
                                       **server.headers()})
        assert response.status_code == 403, headers
    assert server.gateway.in_flight == before
