"""The server as a whole: health and readiness, auth in both header forms, Host/Origin/size
refusals, /metrics, many concurrent streams, client disconnects freeing the engine and
stopping embeddings, the queue bound, a free event loop while prompts are tokenized, and the
API description behind the key."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from tenshu.config import DEFAULT_MODEL_DIR, ModelSpec
from tests.api import raw
from tests.api.live import live_server
from tests.backends.test_embedding import SENTENCES, Paused

CHAT = "/v1/chat/completions"


def chat_body(text: str, **extra) -> dict:
    return {"model": "tenshu-tiny", "messages": [{"role": "user", "content": text}],
            "temperature": 0, "max_tokens": 24, **extra}


def test_health_and_ready_need_no_key_but_only_a_key_sees_the_models(server):
    assert httpx.get(server.base_url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.base_url + "/ready").json() == {"status": "ready"}
    wrong = httpx.get(server.base_url + "/ready", headers={"x-api-key": "tsk-" + "w" * 40})
    assert wrong.json() == {"status": "ready"}
    ready = httpx.get(server.base_url + "/ready", headers=server.headers()).json()
    assert ready["status"] == "ready" and "tenshu-tiny" in ready["models"]


@pytest.mark.parametrize("form", ["bearer", "x-api-key"])
def test_keys_are_checked_the_same_way_in_both_headers(server, tmp_path, form):
    def headers(key):
        return {"Authorization": f"Bearer {key}"} if form == "bearer" else {"x-api-key": key}

    url = server.base_url + CHAT
    assert httpx.post(url, json=chat_body("hi", max_tokens=2), headers=headers(server.key)
                      ).status_code == 200
    missing = httpx.post(url, json=chat_body("hi"))
    wrong = httpx.post(url, json=chat_body("hi"), headers=headers("tsk-" + "x" * 40))
    assert missing.status_code == wrong.status_code == 401
    assert "missing API key" in missing.json()["error"]["message"]
    assert wrong.json()["error"]["type"] == "authentication_error"
    # a revoked key stops working (the key store caches verdicts for at most a second)
    record, key = server.server.store.keys.create(f"revoked-{form}")
    assert httpx.get(server.base_url + "/v1/models", headers=headers(key)).status_code == 200
    server.server.store.keys.revoke(record.name)
    for _ in range(40):
        status = httpx.get(server.base_url + "/v1/models", headers=headers(key)).status_code
        if status == 401:
            break
        asyncio.run(asyncio.sleep(0.1))
    assert status == 401


def test_keys_never_appear_in_error_messages(server):
    bad = "tsk-" + "s3cr3t" * 6
    response = httpx.post(server.base_url + CHAT, json=chat_body("hi"),
                          headers={"x-api-key": bad})
    assert response.status_code == 401 and "s3cr3t" not in response.text


def test_two_different_keys_in_the_two_headers_are_refused(server):
    response = httpx.get(server.base_url + "/v1/models", headers={
        "Authorization": f"Bearer {server.key}", "x-api-key": "tsk-other"})
    assert response.status_code == 401


def test_a_foreign_host_header_is_refused_while_bound_to_loopback(server):
    for host in ("evil.example", "evil.example:7311", "192.168.1.5"):
        response = httpx.get(server.base_url + "/v1/models",
                             headers={**server.headers(), "Host": host})
        assert response.status_code == 403, host
        assert "not allowed" in response.json()["error"]["message"]
    ollama = httpx.get(server.base_url + "/api/tags", headers={"Host": "evil.example"})
    assert ollama.status_code == 403 and "error" in ollama.json()  # Ollama's own shape
    for host in ("localhost:1", "127.0.0.1", "[::1]:7311"):
        response = httpx.get(server.base_url + "/health", headers={"Host": host})
        assert response.status_code == 200, host


def test_cross_origin_requests_only_from_configured_origins(tmp_path):
    with live_server(tmp_path / "s.db", key_name=None, embedder=False,
                     cors_origins=("http://localhost:3000",)) as live:
        url = live.base_url + "/v1/models"
        allowed = httpx.get(url, headers={"Origin": "http://localhost:3000"})
        assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
        preflight = httpx.options(url, headers={
            "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert preflight.status_code == 200
        refused = httpx.get(url, headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers


def test_an_oversized_body_is_refused_without_reaching_the_model(tmp_path):
    with live_server(tmp_path / "s.db", key_name=None, embedder=False, max_body_mib=0.01) as live:
        big = chat_body("x" * 20_000)
        response = httpx.post(live.base_url + CHAT, json=big)
        assert response.status_code == 413
        assert "limit" in response.json()["error"]["message"]

        def chunks():  # no Content-Length: the limit is counted as the body arrives
            data = json.dumps(big).encode()
            for i in range(0, len(data), 4096):
                yield data[i:i + 4096]

        response = httpx.post(live.base_url + CHAT, content=chunks(),
                              headers={"Content-Type": "application/json"})
        assert response.status_code == 413


def test_without_keys_on_loopback_requests_need_none(tmp_path):
    with live_server(tmp_path / "s.db", key_name=None, embedder=False) as live:
        response = httpx.post(live.base_url + CHAT, json=chat_body("hello", max_tokens=3))
        assert response.status_code == 200


def test_metrics_count_requests_tokens_and_latency(server):
    httpx.post(server.base_url + CHAT, json=chat_body("who are you?"), headers=server.headers())
    text = httpx.get(server.base_url + "/metrics", headers=server.headers()).text
    assert 'tenshu_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'tenshu_tokens_total{direction="out",model="tenshu-tiny"}' in text
    for name in ("tenshu_time_to_first_token_seconds_bucket", "tenshu_queue_depth",
                 "tenshu_time_per_output_token_seconds_bucket", "tenshu_kv_cache_usage_ratio",
                 "tenshu_prefix_cache_hit_rate"):
        assert name in text, name
    assert httpx.get(server.base_url + "/metrics").status_code == 401


async def _stream_text(client: httpx.AsyncClient, body: dict) -> str:
    pieces = []
    async with client.stream("POST", CHAT, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:]).get("choices", []):
                    pieces.append(choice["delta"].get("content") or "")
    return "".join(pieces)


QUESTIONS = ["who are you?", "what do you eat?", "where do you live?", "do you like rain?",
             "tell me about the castle", "what is your name?", "can you code?", "hello!"]


def test_32_concurrent_streams_each_get_what_they_get_alone(server):
    bodies = [chat_body(QUESTIONS[i % 8] + " " * (i // 8)) for i in range(32)]

    async def main():
        async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers(),
                                     timeout=300) as client:
            alone = [await _stream_text(client, b) for b in bodies[:8]]
            together = await asyncio.gather(*(_stream_text(client, b) for b in bodies))
            return alone, together

    alone, together = asyncio.run(main())
    assert all(text for text in together)
    assert together[:8] == alone


def _engine_idle(server) -> bool:
    llm = server.gateway.backends["tenshu-tiny"].llm
    blocks = llm.block_manager
    return not llm.requests and blocks.num_free_blocks == blocks.num_blocks


def test_a_client_that_disconnects_mid_stream_frees_the_engine(server):
    body = {"model": "tenshu-tiny", "prompt": "mochi " * 40, "max_tokens": 400,
            "temperature": 1.0, "stream": True, "ignore_eos": True}

    async def main():
        async with (
            httpx.AsyncClient(base_url=server.base_url, headers=server.headers(),
                              timeout=60) as client,
            client.stream("POST", "/v1/completions", json=body) as response,
        ):
            seen = 0
            async for line in response.aiter_lines():
                seen += line.startswith("data: ")
                if seen >= 3:
                    assert server.gateway.backends["tenshu-tiny"].llm.requests  # still running
                    break  # leave mid-stream: the connection is closed
        for _ in range(200):
            if _engine_idle(server):
                return True
            await asyncio.sleep(0.05)
        return False

    assert asyncio.run(main())


@pytest.mark.parametrize("upstream", [False, True], ids=["alone", "with-an-upstream"])
def test_a_full_queue_answers_429_with_retry_after(tmp_path, upstream):
    """The local model's queue holds whatever else is configured (each upstream once added
    1,024 to the limit, so nothing was refused)."""
    long = {"model": "tenshu-tiny", "prompt": "mochi " * 10, "max_tokens": 300,
            "ignore_eos": True, "stream": True}
    models = (ModelSpec("tenshu-tiny", str(DEFAULT_MODEL_DIR)),
              ModelSpec("remote", backend="openai", endpoints=("http://127.0.0.1:9/v1",)))
    with live_server(tmp_path / "s.db", key_name=None, embedder=False, max_num_seqs=1,
                     max_queue=0, models=models if upstream else ()) as live:

        async def main():
            async with (
                httpx.AsyncClient(base_url=live.base_url, timeout=60) as client,
                client.stream("POST", "/v1/completions", json=long) as running,
            ):
                assert running.status_code == 200
                refused = await client.post("/v1/chat/completions", json=chat_body("hi"))
                ollama = await client.post("/api/generate", json={
                    "model": "tenshu-tiny", "prompt": "hi", "stream": False})
                anthropic = await client.post("/v1/messages", json={
                    "model": "tenshu-tiny", "max_tokens": 5,
                    "messages": [{"role": "user", "content": "hi"}]})
                return refused, ollama, anthropic

        refused, ollama, anthropic = asyncio.run(main())
    assert refused.status_code == ollama.status_code == anthropic.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "server.max_queue" in refused.json()["error"]["message"]
    assert "retry" in ollama.json()["error"]
    assert anthropic.json()["error"]["type"] == "rate_limit_error"


@pytest.fixture
def paused_tokenizer(server, monkeypatch):
    """Stops the built-in model's tokenizer on any text holding MARKER until `go` is set;
    `entered` is set when it stops, `seen` counts the texts with MARKER it was given."""
    # the backend's own: the one prompts go through (kept across an unload; the session's
    # server may have been unloaded and loaded again by an Ollama client's keep_alive)
    tokenizer = server.gateway.backends["tenshu-tiny"].tokenizer
    encode = tokenizer.encode
    state = {"entered": threading.Event(), "go": threading.Event(), "seen": []}

    def paused(text, *args, **kwargs):
        if isinstance(text, str) and MARKER in text:
            state["seen"].append(len(text))
            state["entered"].set()
            state["go"].wait(60)
        return encode(text, *args, **kwargs)

    monkeypatch.setattr(tokenizer, "encode", paused)
    yield state
    state["go"].set()


MARKER = "zqxj-marker"


def test_tokenizing_a_prompt_leaves_the_event_loop_free(server, paused_tokenizer):
    """While a prompt is being tokenized (paused here, as a 2 MB prompt takes seconds), the
    server answers everything else."""
    body = chat_body(f"{MARKER} hello", max_tokens=2)
    result = {}
    thread = threading.Thread(target=lambda: result.update(response=httpx.post(
        server.base_url + CHAT, json=body, headers=server.headers(), timeout=120)))
    thread.start()
    try:
        assert paused_tokenizer["entered"].wait(60)
        assert httpx.get(server.base_url + "/health", timeout=10).status_code == 200
        models = httpx.get(server.base_url + "/v1/models", headers=server.headers(), timeout=10)
        assert models.status_code == 200
        assert "response" not in result  # still paused in the tokenizer
    finally:
        paused_tokenizer["go"].set()
        thread.join(120)
    assert result["response"].status_code == 200


def test_a_prompt_that_cannot_fit_is_refused_before_it_is_tokenized(server, paused_tokenizer):
    huge = MARKER + " mochi" * 500_000  # 3 MB for a 512-token window
    chat = httpx.post(server.base_url + CHAT, json=chat_body(huge), headers=server.headers(),
                      timeout=60)
    assert chat.status_code == 400
    assert "at least" in chat.json()["error"]["message"]
    assert chat.json()["error"]["code"] == "context_length_exceeded"
    count = httpx.post(server.base_url + "/v1/messages/count_tokens", headers=server.headers(),
                       json={"model": "tenshu-tiny",
                             "messages": [{"role": "user", "content": huge}]}, timeout=60)
    assert count.status_code == 400
    assert count.json()["error"]["message"].startswith("prompt is too long: ")
    assert paused_tokenizer["seen"] == []  # the tokenizer never saw it
    assert not paused_tokenizer["entered"].is_set()


def test_the_api_description_needs_a_key_and_loads_nothing_from_elsewhere(server):
    for path in ("/openapi.json", "/docs"):
        assert httpx.get(server.base_url + path).status_code == 401, path
    document = httpx.get(server.base_url + "/openapi.json", headers=server.headers())
    assert document.status_code == 200 and "/v1/chat/completions" in document.json()["paths"]
    page = httpx.get(server.base_url + "/docs", headers=server.headers())
    assert page.status_code == 200
    sources = [part.split('"')[1] for part in page.text.split("src=")[1:]] + \
        [part.split('"')[1] for part in page.text.split("href=")[1:]]
    assert sources and all(s.startswith("/docs/assets/") for s in sources), sources
    assert "validatorUrl" in page.text and "cdn" not in page.text.lower()
    for source in sources:
        asset = httpx.get(server.base_url + source)  # the library's files are public
        assert asset.status_code == 200 and len(asset.content) > 500, source
    assert httpx.get(server.base_url + "/docs/assets/../../etc/passwd").status_code == 404


def test_show_does_not_reveal_where_the_model_lives(server):
    shown = httpx.post(server.base_url + "/api/show", json={"model": "tenshu-tiny"},
                       headers=server.headers())
    assert shown.status_code == 200 and "FROM tenshu-tiny" in shown.json()["modelfile"]
    assert str(DEFAULT_MODEL_DIR) not in shown.text
    assert str(DEFAULT_MODEL_DIR.parent) not in shown.text


@pytest.mark.parametrize("path", ["/v1/embeddings", "/api/embed"])
def test_an_embedding_stops_when_its_client_leaves(server, monkeypatch, path):
    paused = Paused(server.gateway.embedders["all-minilm-l6-v2"], monkeypatch)
    body = json.dumps({"model": "all-minilm-l6-v2", "input": SENTENCES * 8}).encode()
    with raw.connect(server.base_url) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
                     f"\r\nAuthorization: Bearer {server.key}\r\nContent-Length: {len(body)}"
                     "\r\n\r\n".encode() + body)
        assert paused.entered.wait(60)
    # the client is gone; the server notices, and the embedding stops after this batch
    deadline = time.monotonic() + 30
    while server.gateway.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    paused.go.set()
    assert paused.finished.wait(60)
    assert paused.calls == 1
