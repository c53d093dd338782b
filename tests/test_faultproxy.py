"""Tests of tests/faultproxy.py, the fault-injecting proxy, against a small real upstream: a
starlette app on uvicorn with a JSON endpoint, an SSE stream of five events and an NDJSON one."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from tests.faultproxy import FaultProxy

EVENTS = 5


class Upstream:
    """The upstream: /echo answers with what it got; /sse and /ndjson stream EVENTS items.
    With ?gated=1, /sse holds everything after the first event until `gate` is set."""

    def __init__(self):
        self.gate = threading.Event()
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self.echo, methods=["POST"]),
            Route("/echo", self.echo, methods=["GET", "POST"]),
            Route("/sse", self.sse),
            Route("/ndjson", self.ndjson),
        ])

    async def echo(self, request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"method": request.method, "query": request.url.query,
                             "json": json.loads(body) if body else None,
                             "x-test": request.headers.get("x-test")})

    async def sse(self, request: Request) -> StreamingResponse:
        gated = request.query_params.get("gated") == "1"

        async def events():
            for i in range(EVENTS):
                if i == 1 and gated:
                    await asyncio.to_thread(self.gate.wait, 30)
                yield f"event: n\ndata: {json.dumps({'n': i})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def ndjson(self, request: Request) -> StreamingResponse:
        async def lines():
            for i in range(EVENTS):
                yield json.dumps({"n": i}) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def upstream():
    up = Upstream()
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(up.app, port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the upstream did not start"
        time.sleep(0.02)
    up.url = f"http://127.0.0.1:{port}"
    yield up
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def proxy(upstream):
    upstream.gate.clear()
    with FaultProxy(upstream.url) as p:
        yield p
    upstream.gate.set()  # a test that failed half-way must not leave the upstream waiting


def sse_data(lines) -> list[dict]:
    """The data of each SSE event read from `lines`, until the stream ends or breaks."""
    return [json.loads(line[6:]) for line in lines if line.startswith("data: ")]


def test_forwards_json_and_records_the_request(proxy):
    with httpx.Client(base_url=proxy.url) as client:
        response = client.post("/v1/chat/completions?a=1", json={"model": "m"},
                               headers={"x-test": "yes"})
    assert response.status_code == 200
    assert response.json() == {"method": "POST", "query": "a=1", "json": {"model": "m"},
                               "x-test": "yes"}
    [request] = proxy.requests
    assert (request.method, request.path, request.query) == ("POST", "/v1/chat/completions",
                                                             "a=1")
    assert request.json == {"model": "m"}
    assert request.headers["x-test"] == "yes"


def test_streams_each_event_as_it_arrives(proxy, upstream):
    # The upstream sends its first event and then waits: the client can only see that event
    # if the proxy forwards it at once instead of buffering the response.
    with httpx.Client(base_url=proxy.url, timeout=10) as client, \
            client.stream("GET", "/sse?gated=1") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:]) == {"n": 0}
        upstream.gate.set()
        rest = sse_data(lines)
    assert rest == [{"n": i} for i in range(1, EVENTS)]


def test_latency_delays_the_answer(proxy):
    proxy.latency = 2.0
    with httpx.Client(base_url=proxy.url, timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get("/echo")
        proxy.reset()
        assert client.get("/echo").status_code == 200


def test_refuse_then_reset_on_the_same_url(proxy):
    url = proxy.url
    with httpx.Client(base_url=url) as client:
        assert client.get("/echo").status_code == 200  # leaves a keep-alive connection open
        proxy.refuse()
        with pytest.raises(httpx.ConnectError):
            client.get("/echo")
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/echo")
        proxy.reset()
        assert proxy.url == url
        assert client.get("/echo").status_code == 200
    assert len(proxy.requests) == 2  # a refused request never arrives


def test_fail_once_with_retry_after(proxy):
    proxy.fail(429, retry_after=2, times=1)
    with httpx.Client(base_url=proxy.url) as client:
        failed = client.post("/v1/chat/completions", json={"model": "m"})
        assert failed.status_code == 429
        assert failed.headers["retry-after"] == "2"
        error = failed.json()["error"]
        assert error["type"] == "rate_limit_error" and error["message"]
        assert client.post("/v1/chat/completions", json={"model": "m"}).status_code == 200
    assert [r.json for r in proxy.requests] == [{"model": "m"}, {"model": "m"}]


@pytest.mark.parametrize(("path", "status", "expected"), [
    ("/v1/messages", 529, {"type": "error", "error": {"type": "overloaded_error"}}),
    ("/v1/messages", 429, {"type": "error", "error": {"type": "rate_limit_error"}}),
    ("/v1/messages", 500, {"type": "error", "error": {"type": "api_error"}}),
    ("/v1/chat/completions", 500, {"error": {"type": "server_error"}}),
    ("/api/chat", 503, {"error": None}),
])
def test_fail_speaks_the_protocol_of_the_path(proxy, path, status, expected):
    proxy.fail(status)
    with httpx.Client(base_url=proxy.url) as client:
        for _ in range(2):  # without `times`, every request fails
            response = client.post(path, json={})
            assert response.status_code == status
            assert "retry-after" not in response.headers
            body = response.json()
            assert body.keys() == expected.keys()
            if isinstance(body["error"], dict):
                assert body["error"]["type"] == expected["error"]["type"]
                assert body["error"]["message"]
            else:
                assert isinstance(body["error"], str) and body["error"]
    assert len(proxy.requests) == 2


def test_fail_with_a_given_body(proxy):
    proxy.fail(500, body={"custom": True})
    response = httpx.get(proxy.url + "/echo")
    assert (response.status_code, response.json()) == (500, {"custom": True})


def test_cut_after_two_events(proxy):
    proxy.cut_after(2)
    seen: list[dict] = []
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        with pytest.raises(httpx.RemoteProtocolError), client.stream("GET", "/sse") as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
        assert seen == [{"n": 0}, {"n": 1}]
        proxy.reset()
        with client.stream("GET", "/sse") as response:  # whole streams again after reset
            assert sse_data(response.iter_lines()) == [{"n": i} for i in range(EVENTS)]


def test_cut_after_counts_ndjson_lines(proxy):
    proxy.cut_after(1)
    seen: list[dict] = []
    with pytest.raises(httpx.RemoteProtocolError), \
            httpx.stream("GET", proxy.url + "/ndjson", timeout=10) as response:
        seen.extend(json.loads(line) for line in response.iter_lines() if line)
    assert seen == [{"n": 0}]


def test_silence_after_one_event(proxy):
    proxy.silence_after(1)
    seen: list[dict] = []
    timeout = httpx.Timeout(10, read=0.5)
    with pytest.raises(httpx.ReadTimeout), \
            httpx.stream("GET", proxy.url + "/sse", timeout=timeout) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
    assert seen == [{"n": 0}]


def test_requests_are_recorded_while_faulting_and_reset_can_clear_them(proxy):
    proxy.fail(503)
    httpx.post(proxy.url + "/v1/messages", json={"private": True})
    assert [(r.path, r.json) for r in proxy.requests] == [("/v1/messages", {"private": True})]
    proxy.reset(clear=True)
    assert proxy.requests == []
