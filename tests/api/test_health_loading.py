"""/health and /ready while the embedded models load in the background, on a live server.

The load is held deterministically: the engine class is replaced by one whose construction
waits for an event the test sets, so "still loading" is a state the test controls, not a race.
"""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import ollama
import openai
import pytest

from tenshu.backends import embedded
from tenshu.config import DEFAULT_MODEL_DIR, ModelSpec
from tenshu.engine import AsyncEngine
from tests.api.live import live_server, wait_until_ready

TINY = "tenshu-tiny"


def held_engine(gate: threading.Event, path: str) -> type:
    """AsyncEngine, except that building one for `path` waits until `gate` is set."""

    class HeldEngine(AsyncEngine):
        def __init__(self, config, **kw):
            if config.model == path and not gate.wait(300):
                raise RuntimeError("the test never let the load go on")
            super().__init__(config, **kw)

    return HeldEngine


def until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def gate(monkeypatch):
    event = threading.Event()
    monkeypatch.setattr(embedded, "AsyncEngine", held_engine(event, str(DEFAULT_MODEL_DIR)))
    yield event
    event.set()  # a load still held goes on, and the closed server releases what it built


def test_health_answers_while_the_model_loads_and_a_request_waits_for_it(tmp_path, gate):
    with live_server(tmp_path / "state.db", wait_ready=False, embedder=False) as live:
        assert httpx.get(f"{live.base_url}/health").json() == {"status": "ok"}
        ready = httpx.get(f"{live.base_url}/ready", headers=live.headers())
        assert ready.status_code == 503
        assert ready.json() == {"status": "loading", "models": {TINY: "loading"}}
        assert httpx.get(f"{live.base_url}/ready").json() == {"status": "loading"}  # no key

        # what needs only the model's files answers now
        client = ollama.Client(host=live.base_url, headers=live.headers())
        assert [m.model for m in client.list().models] == [f"{TINY}:latest"]
        shown = client.show(TINY)
        assert shown.modelinfo["llama.context_length"] == 512 and "<|im_start|>" in shown.template
        assert client.ps().models == []  # not loaded yet
        models = openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=live.key).models.list()
        assert [m.id for m in models.data] == [TINY]

        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(client.generate, TINY, "Once upon a time",
                                 options={"num_predict": 4, "temperature": 0})
            until(lambda: live.gateway.in_flight == 1)  # admitted, waiting for the engine
            assert not answer.done()
            gate.set()
            reply = answer.result(timeout=300)
        assert reply.done and reply.eval_count == 4
        wait_until_ready(live)
        ready = httpx.get(f"{live.base_url}/ready", headers=live.headers()).json()
        assert ready == {"status": "ready", "models": [TINY]}
        assert [m.model for m in client.ps().models] == [f"{TINY}:latest"]


def test_a_failed_load_and_a_load_past_the_timeout_answer_in_each_protocol(tmp_path, gate):
    broken = tmp_path / "broken"
    shutil.copytree(DEFAULT_MODEL_DIR, broken, ignore=shutil.ignore_patterns("*.safetensors"))
    models = (ModelSpec("broken", str(broken)), ModelSpec(TINY, str(DEFAULT_MODEL_DIR)))
    with live_server(tmp_path / "state.db", wait_ready=False, embedder=False, models=models,
                     load_timeout=0.5) as live:
        assert httpx.get(f"{live.base_url}/health").status_code == 200

        def states() -> dict:
            return httpx.get(f"{live.base_url}/ready", headers=live.headers()).json()

        until(lambda: states()["models"]["broken"] != "loading")
        answer = httpx.get(f"{live.base_url}/ready", headers=live.headers())
        assert answer.status_code == 503 and answer.json()["status"] == "failed"
        why = answer.json()["models"]["broken"]
        assert why.startswith("failed: ") and "safetensors" in why
        assert answer.json()["models"][TINY] == "loading"

        client = ollama.Client(host=live.base_url, headers=live.headers())
        with pytest.raises(ollama.ResponseError) as failed:
            client.generate("broken", "hello")
        assert failed.value.status_code == 500
        assert "broken could not be loaded" in failed.value.error
        assert "safetensors" in failed.value.error
        with pytest.raises(ollama.ResponseError) as loading:
            client.chat(TINY, messages=[{"role": "user", "content": "hello"}])
        assert loading.value.status_code == 503 and "still loading" in loading.value.error

        oai = openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=live.key, max_retries=0)
        with pytest.raises(openai.InternalServerError) as caught:
            oai.chat.completions.create(model="broken",
                                        messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 500 and "safetensors" in caught.value.message
        with pytest.raises(openai.APIStatusError) as caught:
            oai.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 503 and "still loading" in caught.value.message
