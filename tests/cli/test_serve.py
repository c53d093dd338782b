"""`tenshu serve` as a person runs it: a real process, real signals, real sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.api.live import free_port


@pytest.fixture
def serve(tmp_path):
    """serve(*flags) -> (process, base_url): `tenshu serve` on a free port, once it is ready."""
    procs = []

    def start(*flags: str):
        port = free_port()
        env = {**os.environ, "TENSHU_HOME": str(tmp_path)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "tenshu", "serve", "--port", str(port), *flags],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"tenshu serve exited: {proc.stderr.read()}")
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    return proc, url
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("tenshu serve did not become ready")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stream_lines(url: str, body: dict):
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        yield from response.iter_lines()


LONG = {"model": "tenshu-tiny", "prompt": "mochi " * 20, "max_tokens": 450,
        "temperature": 1.0, "stream": True, "ignore_eos": True}


def test_sigterm_lets_a_short_request_finish_and_exits_cleanly(serve):
    proc, url = serve("--grace", "30")
    body = {**LONG, "max_tokens": 250}  # a few seconds of tokens: SIGTERM comes mid-stream
    lines = _stream_lines(url, body)
    first = next(line for line in lines if line.startswith("data: "))
    proc.send_signal(signal.SIGTERM)
    rest = [line for line in lines if line.startswith("data: ")]
    assert json.loads(first[6:])["choices"]
    assert rest[-1] == "data: [DONE]"
    assert not any('"error"' in line for line in rest)
    assert json.loads(rest[-2][6:])["choices"][0]["finish_reason"] == "length"  # all 250
    assert proc.wait(timeout=30) == 0
    with pytest.raises(httpx.TransportError):  # no longer listening
        httpx.get(url + "/health", timeout=2)


def test_a_stream_outliving_the_grace_period_ends_with_an_error_event(serve):
    # a grace far shorter than the stream: 450 tokens take seconds, not a tenth of one (with
    # a 1 s grace, a fast enough engine finished the stream first)
    proc, url = serve("--grace", "0.1", "--kv-cache-gib", "0.25")
    lines = _stream_lines(url, LONG)
    next(line for line in lines if line.startswith("data: "))
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]"
    error = json.loads(rest[-2][6:])["error"]
    assert "shutting down" in error["message"]
    assert proc.wait(timeout=30) == 0
    assert time.monotonic() - sent < 25  # the grace, not the whole 450 tokens


def test_listening_beyond_loopback_without_keys_is_refused_at_start(tmp_path):
    env = {**os.environ, "TENSHU_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "tenshu", "serve", "--host", "0.0.0.0"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "without API keys" in result.stderr and "Traceback" not in result.stderr


def test_a_default_server_starts_without_the_sdks_it_does_not_use(tmp_path):
    # Each is imported where it is first used (the MCP SDK at the first /mcp request): together
    # they were about a second of every start.
    unused = {"mcp", "docx", "pypdf", "aiohttp", "tenshu.integrations"}
    code = ("import os, sys; from tenshu.api.server import build_server; "
            "from tenshu.config import ServerSettings; "
            f"build_server(ServerSettings(port=1), jobs=[]); "
            f"print(sorted({unused!r} & set(sys.modules)), flush=True); os._exit(0)")
    env = {**os.environ, "TENSHU_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
