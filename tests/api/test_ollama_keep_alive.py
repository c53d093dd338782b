"""Ollama's keep_alive and /api/ps on a live server, through the official `ollama` client:
keep_alive 0 unloads (the engine is freed) and the next request loads again; /api/ps lists what
is loaded with when it unloads; a duration string and a number of seconds are both accepted, a
bad one is a 400; a short keep_alive unloads an idle model. No fixed sleeps: the tests poll."""

from __future__ import annotations

import gc
import time
import weakref
from datetime import UTC, datetime, timedelta

import ollama
import pytest

from tests.api.live import live_server

TINY = "tenshu-tiny"
SHORT = {"num_predict": 2, "temperature": 0}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("keep") / "state.db", embedder=False) as live:
        yield live


@pytest.fixture
def client(live):
    with ollama.Client(host=live.base_url, headers=live.headers()) as c:
        yield c


def loaded(client) -> dict:
    return {m.model: m for m in client.ps().models}


def until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_keep_alive_0_unloads_and_the_next_request_loads_again(live, client):
    backend = live.gateway.backends[TINY]
    client.generate(TINY, "Once", options=SHORT)  # loaded, whatever ran before
    engine = weakref.ref(backend.llm)
    loads = backend.loader.loads
    assert client.generate(TINY, keep_alive=0).done_reason == "unload"
    assert loaded(client) == {}  # the unload call returns once the engine is released
    gc.collect()
    assert engine() is None  # nothing holds the engine: its weights and KV cache are freed
    assert backend.llm is None and backend.loader.state == "unloaded"

    reply = client.generate(TINY, "Once upon a time", options=SHORT)
    assert reply.done and reply.eval_count == 2
    assert backend.loader.loads == loads + 1 and f"{TINY}:latest" in loaded(client)

    # keep_alive 0 on a request: the model answers, then is released
    assert client.chat(TINY, messages=[{"role": "user", "content": "hi"}], keep_alive=0,
                       options=SHORT).done
    until(lambda: loaded(client) == {})
    assert client.chat(TINY, messages=[]).done_reason == "load"  # Ollama's load call
    assert f"{TINY}:latest" in loaded(client)


def test_expires_at_moves_forward_with_each_request_in_either_form(client):
    client.generate(TINY, "Once", keep_alive="10m", options=SHORT)
    first = loaded(client)[f"{TINY}:latest"].expires_at
    now = datetime.now(UTC)
    assert now + timedelta(minutes=9) < first <= now + timedelta(minutes=10, seconds=5)
    client.generate(TINY, "Once", keep_alive=600, options=SHORT)  # seconds, as a number
    second = loaded(client)[f"{TINY}:latest"].expires_at
    assert second > first
    client.chat(TINY, messages=[{"role": "user", "content": "hi"}], keep_alive="1h30m",
                options=SHORT)
    assert loaded(client)[f"{TINY}:latest"].expires_at > second + timedelta(minutes=75)
    client.generate(TINY, "Once", keep_alive=-1, options=SHORT)  # forever
    assert loaded(client)[f"{TINY}:latest"].expires_at.year > 2100


def test_a_short_keep_alive_unloads_the_idle_model(live, client):
    client.generate(TINY, "Once", keep_alive="1s", options=SHORT)
    until(lambda: loaded(client) == {})
    assert live.gateway.backends[TINY].loader.state == "unloaded"
    assert client.generate(TINY, "Once", options=SHORT).done  # loads it again
    assert loaded(client)[f"{TINY}:latest"].expires_at.year > 2100  # the model's own: forever


def test_a_bad_keep_alive_is_a_400_in_ollamas_format(client):
    calls = [lambda: client.generate(TINY, "Once", keep_alive="soon"),
             lambda: client.generate(TINY, keep_alive="soon"),
             lambda: client.chat(TINY, messages=[{"role": "user", "content": "hi"}],
                                 keep_alive="soon"),
             lambda: client.embed("all-minilm-l6-v2", input="hi", keep_alive="soon")]
    for call in calls:
        with pytest.raises(ollama.ResponseError) as caught:
            call()
        assert caught.value.status_code == 400
        assert "keep_alive" in caught.value.error and "soon" in caught.value.error


def test_the_servers_keep_alive_applies_when_a_request_sends_none(tmp_path):
    with live_server(tmp_path / "state.db", embedder=False, model_keep_alive="1s") as live, \
            ollama.Client(host=live.base_url, headers=live.headers()) as client:
        until(lambda: loaded(client) == {})  # loaded at start, released once idle for 1 s
        assert client.generate(TINY, "Once", options=SHORT).done
        until(lambda: loaded(client) == {})
