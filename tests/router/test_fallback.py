"""Fallback across real servers: a tenshu in front, another tenshu process behind fault proxies.

The front serves a random checkpoint itself (`local`, the small tier) and reaches the upstream
tenshu as `cloud` (Anthropic protocol), `cloud-openai` (OpenAI protocol) and `lan-ollama`
(Ollama protocol, on loopback so local). Each proxy injects one fault at a time; the tests
check what the client sees, the x-tenshu-* headers, what reached the upstream, and the trace.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.faultproxy import FaultProxy
from tests.router.conftest import NARROW_MODEL, UPSTREAM_MODEL, front_server

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                   "required": ["city"]}}}]


@pytest.fixture(scope="module")
def proxies(upstream):
    with FaultProxy(upstream.url) as a, FaultProxy(upstream.url) as o, \
            FaultProxy(upstream.url) as ol:
        yield {"anthropic": a, "openai": o, "ollama": ol}


@pytest.fixture(scope="module")
def front(tmp_path_factory, wide_checkpoint, proxies):
    config = f"""
[[models]]
name = "local"
path = "{wide_checkpoint}"

[[models]]
name = "cloud"
backend = "anthropic"
endpoint = "{proxies['anthropic'].url}"
upstream_model = "{UPSTREAM_MODEL}"
locality = "cloud"
price_input = 3.0
price_output = 15.0
connect_timeout = 2
first_token_timeout = 4
idle_timeout = 2

[[models]]
name = "cloud-openai"
backend = "openai"
endpoint = "{proxies['openai'].url}/v1"
upstream_model = "{UPSTREAM_MODEL}"
locality = "cloud"

[[models]]
name = "lan-ollama"
backend = "ollama"
endpoint = "{proxies['ollama'].url}"
upstream_model = "{UPSTREAM_MODEL}"

[[models]]
name = "cloud-narrow"
backend = "openai"
endpoint = "{proxies['openai'].url}/v1"
upstream_model = "{NARROW_MODEL}"
locality = "cloud"

[[models]]
name = "solo"
backend = "anthropic"
endpoint = "{proxies['anthropic'].url}"
upstream_model = "{UPSTREAM_MODEL}"
locality = "cloud"
max_concurrency = 1

[tiers]
small = ["local"]
strong = ["cloud"]
narrow = ["cloud-narrow"]
single = ["solo"]

[[routes]]
name = "auto"
models = ["claude-*"]
tier = "strong"
fallback = ["small"]

[[routes]]
name = "long"
tier = "narrow"
fallback = ["small"]

[[routes]]
name = "one-at-a-time"
tier = "single"
fallback = ["small"]

[router]
cooldown_failures = 1000

[[budgets]]
key = "thrifty"
tier = "strong"
daily_tokens = 1
"""
    with front_server(tmp_path_factory.mktemp("front"), config) as live:
        yield live


@pytest.fixture(autouse=True)
def healthy(front, proxies):
    """Every test starts with plain proxies and rested deployments."""
    for proxy in proxies.values():
        proxy.reset(clear=True)
    for group in front.gateway.router.deployments.values():
        for d in group:
            d.failures.clear()
            d.resting_until = 0.0
    yield


def post_messages(front, stream: bool = False, model: str = "auto", key: str | None = None,
                  headers: dict | None = None, text: str = "hello") -> httpx.Response:
    body = {"model": model, "max_tokens": 8, "stream": stream,
            "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{front.base_url}/v1/messages", json=body, timeout=60, headers={
        "x-api-key": key or front.key, "anthropic-version": "2023-06-01", **(headers or {})})


def trace_of(front, response: httpx.Response):
    """The request's audit record, once the writer has flushed it."""
    request_id = response.headers["request-id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (record := front.server.store.audit.find(request_id)) is not None:
            return record
        time.sleep(0.1)
    raise AssertionError(f"no audit record for {request_id}")


def test_a_healthy_cloud_answers_and_says_so(front, proxies):
    r = post_messages(front)
    assert r.status_code == 200, r.text
    assert r.headers["x-tenshu-route"] == "auto"
    assert r.headers["x-tenshu-backend"] == "cloud"
    assert r.headers["x-tenshu-fallbacks"] == "0"
    assert [q.path for q in proxies["anthropic"].requests] == ["/v1/messages"]
    assert proxies["anthropic"].requests[0].json["model"] == UPSTREAM_MODEL
    record = trace_of(front, r)
    assert (record.routed, record.tier, record.backend) == ("auto", "strong", "cloud")
    assert record.cost_usd > 0  # priced per million tokens


@pytest.mark.parametrize("fault", ["refuse", "429", "500", "529", "latency", "cut-early"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_cloud_falls_back_to_local_before_the_first_token(front, proxies, fault,
                                                                    stream):
    proxy = proxies["anthropic"]
    if fault == "refuse":
        proxy.refuse()
    elif fault == "latency":
        proxy.latency = 6  # past the 4 s first-token timeout
    elif fault == "cut-early":
        proxy.cut_after(1)  # message_start only: no token has been sent
    else:
        proxy.fail(int(fault), retry_after=30 if fault == "429" else None)
    r = post_messages(front, stream=stream)
    assert r.status_code == 200, r.text
    assert r.headers["x-tenshu-backend"] == "local"
    assert r.headers["x-tenshu-fallbacks"] == "1"
    if stream:
        assert "event: message_stop" in r.text and "event: error" not in r.text
    else:
        assert r.json()["content"] is not None
    record = trace_of(front, r)
    attempts = json.loads(record.trace)["attempts"]
    assert [(a["backend"], a["outcome"]) for a in attempts] == [("cloud", "error"),
                                                                ("local", "ok")]
    assert record.fallbacks == 1 and record.status == 200


def test_a_429_rests_the_cloud_for_its_retry_after(front, proxies):
    proxy = proxies["anthropic"]
    proxy.fail(429, retry_after=30, times=1)
    assert post_messages(front).headers["x-tenshu-backend"] == "local"
    seen = len(proxy.requests)
    r = post_messages(front)  # the proxy would answer now, but the cloud is resting
    assert r.headers["x-tenshu-backend"] == "local" and r.headers["x-tenshu-fallbacks"] == "0"
    assert len(proxy.requests) == seen
    attempts = json.loads(trace_of(front, r).trace)["attempts"]
    assert attempts[0]["outcome"] == "skipped" and "cooling down" in attempts[0]["error"]


@pytest.mark.parametrize("fault", ["cut", "silence"])
def test_after_the_first_token_a_failure_is_an_in_stream_error(front, proxies, fault):
    proxy = proxies["anthropic"]
    # message_start, ping, content_block_start, a first delta: the client has had a token
    (proxy.cut_after if fault == "cut" else proxy.silence_after)(4)
    r = post_messages(front, stream=True)
    assert r.status_code == 200 and r.headers["x-tenshu-backend"] == "cloud"
    assert "event: content_block_delta" in r.text
    assert "event: error" in r.text and "event: message_stop" not in r.text
    error = json.loads(r.text.split("event: error\ndata: ")[1].split("\n")[0])
    assert error["error"]["type"] in ("api_error", "timeout_error")


def test_a_prompt_too_long_for_one_window_goes_to_a_larger_one(front, proxies):
    """cloud-narrow's window is not configured, so only its upstream can say the prompt does
    not fit; the route then moves on to the local model's 32k window."""
    r = post_messages(front, model="long", text="the castle keep " * 400)
    assert r.status_code == 200, r.text
    assert r.headers["x-tenshu-backend"] == "local" and r.headers["x-tenshu-fallbacks"] == "1"
    (attempt, _) = json.loads(trace_of(front, r).trace)["attempts"]
    assert attempt["backend"] == "cloud-narrow"
    assert attempt["error"].startswith("context_length_exceeded")


def test_a_deployment_at_its_concurrency_limit_is_passed_over(front, proxies):
    proxies["anthropic"].latency = 3
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(post_messages, front, model="one-at-a-time")
        deadline = time.monotonic() + 10
        while not proxies["anthropic"].requests and time.monotonic() < deadline:
            time.sleep(0.05)
        quick = post_messages(front, model="one-at-a-time")
        assert quick.headers["x-tenshu-backend"] == "local"
        attempts = json.loads(trace_of(front, quick).trace)["attempts"]
        assert attempts[0] == {"backend": "solo", "outcome": "skipped",
                               "error": "at its limit", "ms": 0.0}
        assert slow.result().headers["x-tenshu-backend"] == "solo"


def test_a_client_mistake_is_not_retried_elsewhere(front, proxies):
    r = httpx.post(f"{front.base_url}/v1/messages", timeout=30, headers={
        "x-api-key": front.key, "anthropic-version": "2023-06-01"}, json={
        "model": "auto", "max_tokens": 8, "temperature": 5,
        "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("how", ["header", "content", "key"])
def test_private_requests_never_reach_the_cloud(front, proxies, how):
    key = front.server.store.keys.create(f"private-{time.monotonic_ns()}", private=True)[1] \
        if how == "key" else None
    r = post_messages(front, key=key,
                      headers={"x-tenshu-private": "1"} if how == "header" else None,
                      text="deploy with sk-ant-api03-" + "x" * 40 if how == "content"
                      else "hello")
    assert r.status_code == 200, r.text
    assert r.headers["x-tenshu-backend"] == "local"
    assert proxies["anthropic"].requests == []  # asserted where the cloud would have seen it
    record = trace_of(front, r)
    assert "sk-ant" not in record.trace
    assert json.loads(record.trace)["private"]


SECRET = "sk-ant-api03-" + "q" * 40


@pytest.mark.parametrize(("where", "extra"), [
    ("tool description", {"tools": [{"name": "deploy", "description": f"uses {SECRET}",
                                     "input_schema": {"type": "object"}}]}),
    ("tool schema", {"tools": [{"name": "deploy", "input_schema": {
        "type": "object", "properties": {"token": {"type": "string", "default": SECRET}}}}]}),
    ("metadata.user_id", {"metadata": {"user_id": f"ops password={SECRET}"}}),
    ("stop sequence", {"stop_sequences": [SECRET]}),
    ("system", {"system": f"the key is {SECRET}"}),
])
def test_a_secret_anywhere_in_the_request_keeps_it_local(front, proxies, where, extra):
    body = {"model": "auto", "max_tokens": 8,
            "messages": [{"role": "user", "content": "hello"}], **extra}
    r = httpx.post(f"{front.base_url}/v1/messages", json=body, timeout=60, headers={
        "x-api-key": front.key, "anthropic-version": "2023-06-01"})
    assert r.status_code == 200, r.text
    assert r.headers["x-tenshu-backend"] == "local", where
    assert proxies["anthropic"].requests == []  # the cloud never saw it


def test_openai_user_with_a_secret_stays_local(front, proxies):
    r = httpx.post(f"{front.base_url}/v1/chat/completions", timeout=60,
                   headers={"Authorization": f"Bearer {front.key}"},
                   json={"model": "auto", "max_tokens": 8, "user": f"token {SECRET}",
                         "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 200, r.text
    assert r.headers["x-tenshu-backend"] == "local"
    assert proxies["anthropic"].requests == []


def test_a_private_request_for_a_cloud_model_is_refused(front, proxies):
    r = post_messages(front, model="cloud", headers={"x-tenshu-private": "1"})
    assert r.status_code == 403
    assert "must stay on this machine" in r.json()["error"]["message"]
    assert proxies["anthropic"].requests == []


def test_a_spent_budget_routes_local(front, proxies):
    key = front.server.store.keys.create("thrifty")[1]
    first = post_messages(front, key=key)
    assert first.headers["x-tenshu-backend"] == "cloud"
    second = post_messages(front, key=key)
    assert second.headers["x-tenshu-backend"] == "local"
    assert len(proxies["anthropic"].requests) == 1
    attempts = json.loads(trace_of(front, second).trace)["attempts"]
    assert "daily budget of key thrifty on tier strong is spent" in attempts[0]["error"]
    other = post_messages(front)  # another key's allowance is its own
    assert other.headers["x-tenshu-backend"] == "cloud"


def test_openai_client_to_an_ollama_upstream_with_tools_streaming(front, proxies):
    client = openai.OpenAI(base_url=f"{front.base_url}/v1", api_key=front.key, max_retries=0)
    with client.chat.completions.stream(
            model="lan-ollama", messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=60, temperature=0) as stream:
        for _ in stream:
            pass
        done = stream.get_final_completion()
    (call,) = done.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    assert [q.path for q in proxies["ollama"].requests] == ["/api/chat"]
    # the call's result goes back through the Ollama protocol for the next turn
    reply = client.chat.completions.create(model="lan-ollama", max_tokens=8, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}], tools=TOOLS)
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    sent = proxies["ollama"].requests[-1].json["messages"]
    assert sent[-1]["role"] == "tool" and sent[-1]["content"] == "sunny, 21 C"


def test_ollama_client_to_an_openai_upstream_with_tools_streaming(front, proxies):
    client = ollama.Client(host=front.base_url, headers={
        "Authorization": f"Bearer {front.key}", "x-tenshu-tool-choice": "get_weather"})
    chunks = list(client.chat(model="cloud-openai", stream=True, tools=TOOLS,
                              messages=[{"role": "user", "content": "Weather in Paris?"}],
                              options={"temperature": 1.0, "seed": 0}))
    calls = [c for chunk in chunks for c in chunk.message.tool_calls or []]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert isinstance(calls[0].function.arguments["city"], str)
    assert chunks[-1].done
    (sent,) = [q.json for q in proxies["openai"].requests]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_anthropic_sdk_sees_where_it_went_and_the_trace_cli_shows_it(front, proxies, capsys):
    proxies["anthropic"].fail(529)
    client = anthropic.Anthropic(base_url=front.base_url, api_key=front.key, max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-tenshu-backend"] == "local"
    message = raw.parse()
    assert message.stop_reason in ("end_turn", "max_tokens")
    record = trace_of(front, raw.http_response)
    assert record.model == "claude-sonnet-4-5" and record.routed == "auto"
    assert "overloaded" in record.trace or "529" in record.trace or "503" in record.trace


def test_memory_not_shared_with_the_cloud_keeps_the_request_local(front, proxies):
    """A request given chunks of a collection not marked cloud stays on local models; one
    given chunks of a cloud collection may go to the route's cloud tier, chunks and all."""
    base = f"{front.base_url}/tenshu/v1/memory/collections"
    auth = {"x-api-key": front.key}
    for name, cloud in (("secret-notes", False), ("open-notes", True)):
        made = httpx.post(base, json={"name": name, "cloud": cloud}, headers=auth)
        assert made.status_code == 201, made.text
        up = httpx.post(f"{base}/{name}/documents", params={"wait": "true"}, headers=auth,
                        timeout=120, files={"file": ("plan.md", b"# Plan\n\nThe launch is on "
                                                                b"the ninth of March.")})
        assert up.json()["status"] == "ready", up.text
    kept = post_messages(front, headers={"x-tenshu-memory": "secret-notes"},
                         text="When is the launch?")
    assert kept.status_code == 200, kept.text
    assert kept.headers["x-tenshu-backend"] == "local"
    assert proxies["anthropic"].requests == []  # the cloud never saw the chunks
    trace = json.loads(trace_of(front, kept).trace)
    assert "secret-notes" in trace["private"]
    assert trace["memory"]["collections"] == ["secret-notes"]  # tenshu trace shows it
    assert kept.json()["sources"][0]["collection"] == "secret-notes"

    sent = post_messages(front, headers={"x-tenshu-memory": "open-notes"},
                         text="When is the launch?")
    assert sent.status_code == 200, sent.text
    assert sent.headers["x-tenshu-backend"] == "cloud"
    assert "ninth of March" in json.dumps(proxies["anthropic"].requests[-1].json)
