"""The access log (api/metrics.py): one INFO line per request, written when it ends."""

from __future__ import annotations

import logging
import re
import time

import httpx
import openai
import pytest

from tests.api import process

LINE = re.compile(r'^127\.0\.0\.1:\d+ - "(\w+) (\S+) HTTP/1\.1" (\d{3}) ([\d.]+) ms (req_\w+)(.*)$')


@pytest.fixture
def access(caplog):
    caplog.set_level(logging.INFO, logger="tenshu.access")

    def lines(path: str) -> list[re.Match]:
        found = [LINE.match(r.getMessage()) for r in caplog.records
                 if r.name == "tenshu.access" and r.levelno == logging.INFO]
        assert all(found), [r.getMessage() for r in caplog.records]
        return [m for m in found if m[2] == path]

    return lines


def wait_for(lines, path: str, count: int = 1) -> list[re.Match]:
    deadline = time.monotonic() + 10  # the line is written as the server's task ends
    while len(found := lines(path)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def test_a_model_request_is_logged_with_what_served_it_and_no_key(server, access):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="tenshu-tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    (line,) = wait_for(access, "/v1/chat/completions")
    assert line[1] == "POST" and line[3] == "200" and float(line[4]) > 0
    assert line[5] == raw.headers["request-id"]
    assert line[6] == " route=tenshu-tiny backend=tenshu-tiny"
    assert server.key not in line[0]


def test_failures_are_logged_too(server, access):
    assert httpx.get(f"{server.base_url}/v1/models").status_code == 401  # no key
    assert httpx.post(f"{server.base_url}/v1/chat/completions", headers=server.headers(),
                      json={"model": "nope", "messages": []}).status_code in (400, 404)
    (missing_key,) = wait_for(access, "/v1/models")
    assert missing_key[3] == "401" and missing_key[6] == ""
    assert wait_for(access, "/v1/chat/completions")[0][3] in ("400", "404")


def test_a_stream_is_logged_when_it_ends_with_its_whole_duration(server, access):
    body = {"model": "tenshu-tiny", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 40, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body,
                      headers=server.headers()) as response:
        headers_at = time.perf_counter()  # where uvicorn's own access log would have written
        lines = list(response.iter_lines())
    streamed_ms = (time.perf_counter() - headers_at) * 1000
    assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]"
    (line,) = wait_for(access, "/v1/chat/completions")
    # the whole stream's time, the part after the headers included
    assert line[3] == "200" and float(line[4]) >= 0.9 * streamed_ms


def test_tenshu_serve_logs_each_request_at_its_default_level_and_draws_no_bars(tmp_path):
    """What a person running `tenshu serve` sees: a line per request (failures too) without
    --log-level debug, none carrying a key, and no progress bar, however many embeddings."""
    with process.running(tmp_path / "home") as server:
        chat = {"model": "tenshu-tiny", "max_tokens": 4,
                "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(server.url + "/v1/chat/completions", json=chat).status_code == 200
        for text in ("first", "second"):  # the first loads the embedder
            assert httpx.post(server.url + "/v1/embeddings", timeout=120, json={
                "model": "all-minilm-l6-v2", "input": text}).status_code == 200
        httpx.get(server.url + "/v1/models",
                  headers={"Authorization": "Bearer sk-not-a-key-of-this-server"})
        assert httpx.get(server.url + "/v1/models/nope").status_code == 404
    log = server.log()  # once it has stopped: a line is written as its request's task ends
    assert re.search(r'"POST /v1/chat/completions HTTP/1.1" 200 [\d.]+ ms req_\w+ '
                     r'route=tenshu-tiny backend=tenshu-tiny', log), log
    assert len(re.findall(r'"POST /v1/embeddings HTTP/1.1" 200', log)) == 2, log
    assert '"GET /v1/models/nope HTTP/1.1" 404' in log
    assert "sk-not-a-key" not in log
    assert "%|" not in log and "it/s]" not in log, log
