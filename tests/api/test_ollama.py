"""The Ollama API, through the official `ollama` Python client, against a live tenshu server."""

from __future__ import annotations

import asyncio
import json
import math
import time

import httpx
import ollama
import pytest

from tenshu.config import ModelSpec
from tests.api.live import live_server
from tests.checkpoints import make_checkpoint

HI = [{"role": "user", "content": "hi, who are you?"}]
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def client(server):
    with ollama.Client(host=server.base_url, headers=server.headers()) as c:
        yield c


def reply(client, **kw) -> tuple[str, ollama.ChatResponse]:
    """Stream a chat; the text and the final chunk."""
    chunks = list(client.chat("tenshu-tiny", stream=True, **kw))
    assert all(not c.done for c in chunks[:-1]) and chunks[-1].done
    return "".join(c.message.content for c in chunks), chunks[-1]


# Probes and listings.


def test_version_and_root_answer_without_a_key(server):
    version = httpx.get(f"{server.base_url}/api/version").json()["version"]
    assert tuple(int(p) for p in version.split(".")) >= (0, 6, 4)  # what clients ask for
    assert tuple(int(p) for p in version.split(".")) >= (0, 13, 4)  # Codex --oss's minimum
    assert httpx.get(server.base_url).text == "Ollama is running"
    assert httpx.head(server.base_url).status_code == 200


def test_list_shows_the_chat_model_and_the_embedder(client):
    models = {m.model: m for m in client.list().models}
    tiny, embedder = models["tenshu-tiny:latest"], models["all-minilm-l6-v2:latest"]
    assert tiny.size > 1_000_000 and embedder.size > 1_000_000
    assert tiny.details.format == "safetensors" and tiny.details.family == "llama"
    assert tiny.details.parameter_size.endswith("M")
    assert tiny.details.quantization_level in {"F32", "BF16", "F16"}
    assert len(tiny.digest) == 64 and tiny.modified_at.year >= 2024
    assert embedder.details.family == "bert"


def test_show_gives_the_template_context_and_capabilities(client):
    shown = client.show("tenshu-tiny")
    assert "<|im_start|>" in shown.template
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 512
    assert shown.capabilities == ["completion", "tools"]  # the generic tool format
    assert client.show("all-minilm-l6-v2:latest").capabilities == ["embedding"]


def test_show_reports_the_dtype_the_weights_are_held_in(client):
    """tenshu-tiny ships bfloat16 weights; a CPU without native bf16 computes in float32, which
    /api/show used to report."""
    assert client.show("tenshu-tiny").details.quantization_level == "BF16"
    assert client.list().models[0].details.quantization_level == "BF16"


def test_ps_lists_loaded_models(client):
    running = {m.model: m for m in client.ps().models}
    tiny = running["tenshu-tiny:latest"]
    assert tiny.context_length == 512 and tiny.size_vram == 0
    assert tiny.expires_at.year > 2100


# Chat.


def test_streamed_and_whole_replies_agree(client):
    text, final = reply(client, messages=HI, options=GREEDY)
    whole = client.chat("tenshu-tiny", messages=HI, options=GREEDY, stream=False)
    assert text and whole.message.content == text and whole.message.role == "assistant"
    for r in (final, whole):
        assert r.done and r.done_reason == "stop" and r.model == "tenshu-tiny"
        assert r.prompt_eval_count > 5 and r.eval_count >= 1
        assert r.total_duration > 0 and r.prompt_eval_duration > 0 and r.eval_duration > 0
        assert r.total_duration >= r.prompt_eval_duration + r.eval_duration
    assert final.eval_count == whole.eval_count


def test_system_message_and_earlier_turns_reach_the_model(client):
    _, plain = reply(client, messages=HI, options=GREEDY)
    text, final = reply(client, options=GREEDY, messages=[
        {"role": "system", "content": "You are Mochi, a cat."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "mrrp, hello!"},
        *HI])
    assert text and final.done_reason == "stop"
    assert final.prompt_eval_count > plain.prompt_eval_count + 10


def test_num_predict_cuts_the_reply(client):
    chunks = list(client.chat("tenshu-tiny", messages=HI, stream=True,
                              options={**GREEDY, "num_predict": 4}))
    assert chunks[-1].done_reason == "length" and chunks[-1].eval_count == 4
    assert len([c for c in chunks if c.message.content]) == 4  # one chunk per token
    unlimited = client.chat("tenshu-tiny", messages=HI, stream=False,
                            options={**GREEDY, "num_predict": -1})
    assert unlimited.done_reason == "stop"


def test_stop_ends_the_reply_before_the_stop_string(client):
    full, _ = reply(client, messages=HI, options=GREEDY)
    word = full.split()[2]
    cut, final = reply(client, messages=HI, options={**GREEDY, "stop": [word]})
    assert full.startswith(cut) and word not in cut and len(cut) < len(full)
    assert final.done_reason == "stop"


def test_seed_makes_sampling_reproducible(client):
    def sample(seed):
        return client.chat("tenshu-tiny", messages=HI, stream=False,
                           options={"temperature": 1.0, "seed": seed}).message.content

    assert sample(7) == sample(7)
    assert len({sample(s) for s in range(4)}) > 1


def test_unknown_options_keep_alive_and_think_are_accepted(client):
    r = client.chat("tenshu-tiny", messages=HI, stream=False, keep_alive="5m", think=False,
                    options={**GREEDY, "num_predict": 3, "mirostat": 2, "num_thread": 1})
    assert r.done_reason == "length"


def test_async_client_streams(server, client):
    async def main():
        async with ollama.AsyncClient(host=server.base_url, headers=server.headers()) as c:
            stream = await c.chat("tenshu-tiny", messages=HI, options=GREEDY, stream=True)
            return "".join([part.message.content async for part in stream])

    assert asyncio.run(main()) == reply(client, messages=HI, options=GREEDY)[0]


# Generate.


def test_generate_templated_raw_and_streamed_agree(client):
    chat_text, _ = reply(client, messages=HI, options=GREEDY)
    templated = client.generate("tenshu-tiny", prompt=HI[0]["content"], options=GREEDY)
    assert templated.response == chat_text
    assert len(templated.context) > templated.prompt_eval_count  # the prompt's ids, the answer's
    raw_prompt = f"<|im_start|>user\n{HI[0]['content']}<|im_end|>\n<|im_start|>assistant\n"
    raw = client.generate("tenshu-tiny", prompt=raw_prompt, raw=True, options=GREEDY)
    assert raw.response == chat_text and raw.prompt_eval_count == templated.prompt_eval_count
    chunks = list(client.generate("tenshu-tiny", prompt=HI[0]["content"], options=GREEDY,
                                  stream=True))
    assert "".join(c.response for c in chunks) == chat_text
    assert chunks[-1].done_reason == "stop" and chunks[-1].eval_count == templated.eval_count
    with_system = client.generate("tenshu-tiny", prompt="hi", system="Answer as a cat.",
                                  options={**GREEDY, "num_predict": 2})
    assert with_system.prompt_eval_count > client.generate(
        "tenshu-tiny", prompt="hi", options={**GREEDY, "num_predict": 2}).prompt_eval_count


def test_generate_returns_its_context_and_goes_on_from_it(client):
    """Ollama's conversational generate: `context` holds the token ids of the prompt and the
    answer (streamed: on the last chunk), and a request that sends it back goes on from them."""
    options = {**GREEDY, "num_predict": 8}
    first = client.generate("tenshu-tiny", "hi, who are you?", options=options)
    # the prompt's ids as the model read them, then the answer's (its text tokenized again)
    assert 0 < len(first.context) - first.prompt_eval_count <= first.eval_count + 1
    chunks = list(client.generate("tenshu-tiny", "hi, who are you?", options=options,
                                  stream=True))
    assert chunks[-1].done and chunks[-1].context == first.context
    assert all(not c.context for c in chunks[:-1])
    second = client.generate("tenshu-tiny", "and what do you like?", context=first.context,
                             options=options)
    assert second.context[:len(first.context)] == first.context  # the conversation went on
    alone = client.generate("tenshu-tiny", "and what do you like?", options=options)
    assert second.prompt_eval_count == len(first.context) + alone.prompt_eval_count
    assert not client.generate("tenshu-tiny", "hi", raw=True, options=options).context


def test_a_context_from_another_vocabulary_is_a_400(client):
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate("tenshu-tiny", "hi", context=[10**9])
    assert caught.value.status_code == 400 and "context" in caught.value.error


def test_pull_of_a_served_model_succeeds_and_of_another_says_why_not(client):
    assert [p.status for p in client.pull("tenshu-tiny:latest", stream=True)][-1] == "success"
    assert client.pull("tenshu-tiny").status == "success"
    with pytest.raises(ollama.ResponseError) as caught:
        list(client.pull("gpt-oss:20b", stream=True))  # streamed: the error is its last line
    assert "gpt-oss:20b" in caught.value.error and "tenshu.toml" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        client.pull("gpt-oss:20b", stream=False)
    assert caught.value.status_code == 404


def test_empty_prompt_loads_the_model(client):
    loaded = client.generate("tenshu-tiny", prompt="")
    assert loaded.done and loaded.done_reason == "load" and loaded.response == ""
    assert client.generate("tenshu-tiny:latest", keep_alive=0).done_reason == "unload"
    assert client.chat("tenshu-tiny", messages=[]).done_reason == "load"
    with pytest.raises(ollama.ResponseError) as err:
        client.generate("no-such-model", prompt="")
    assert err.value.status_code == 404


# Embeddings.


def test_embed_gives_deterministic_unit_vectors(client):
    first = client.embed("all-minilm-l6-v2", input=["a cat on a wall", "tax law"])
    again = client.embed("all-minilm-l6-v2:latest", input="a cat on a wall")
    assert len(first.embeddings) == 2 and len(first.embeddings[0]) == 384
    assert again.embeddings[0] == pytest.approx(first.embeddings[0], abs=1e-6)
    assert math.isclose(sum(x * x for x in first.embeddings[0]), 1.0, rel_tol=1e-4)
    assert first.prompt_eval_count > 4 and first.total_duration > 0
    old = client.embeddings("all-minilm-l6-v2", prompt="a cat on a wall").embedding
    assert old == pytest.approx(first.embeddings[0], abs=1e-6)


def test_embed_dimensions_and_load_call(server, client):
    short = httpx.post(f"{server.base_url}/api/embed", headers=server.headers(), json={
        "model": "all-minilm-l6-v2", "input": "a cat", "dimensions": 64}).json()
    assert len(short["embeddings"][0]) == 64
    assert client.embed("all-minilm-l6-v2", input=[]).embeddings == []


# Errors.


def test_unknown_model_is_404_listing_the_models(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.chat("llama3", messages=HI)
    assert err.value.status_code == 404
    assert "model 'llama3' not found" in err.value.error and "tenshu-tiny" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.show("llama3")
    assert err.value.status_code == 404


def test_bad_input_is_400_naming_the_field(server, client):
    with pytest.raises(ollama.ResponseError) as err:
        client.chat("tenshu-tiny", messages=HI, options={"temperature": "hot"})
    assert err.value.status_code == 400 and "options.temperature" in err.value.error
    nan = httpx.post(f"{server.base_url}/api/chat",  # the SDK will not send NaN; json.dumps does
                     headers={**server.headers(), "content-type": "application/json"},
                     content=json.dumps({"model": "tenshu-tiny", "messages": HI,
                                         "options": {"temperature": float("nan")}}))
    assert nan.status_code == 400 and "options.temperature" in nan.json()["error"]
    with pytest.raises(ollama.ResponseError) as err:
        client.chat("tenshu-tiny", messages=HI, options={"temperature": -1})
    assert err.value.status_code == 400 and "temperature" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:  # tenshu-tiny reads text only
        client.chat("tenshu-tiny", messages=[{**HI[0], "images": [b"\x89PNG\r\n\x1a\n"]}])
    assert err.value.status_code == 400 and "image" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.embed("tenshu-tiny", input="x")
    assert err.value.status_code == 400
    bad_format = httpx.post(f"{server.base_url}/api/chat", headers=server.headers(),
                            json={"model": "tenshu-tiny", "messages": HI, "format": "xml"})
    assert bad_format.status_code == 400 and "format" in bad_format.json()["error"]


def test_bodies_posted_the_way_ollamas_docs_do_are_read_as_json(server):
    """Ollama's own examples use `curl URL -d '{...}'`, which labels the body form-encoded."""
    body = json.dumps({"model": "tenshu-tiny", "messages": HI, "stream": False,
                       "options": {"num_predict": 4}})
    for label in (None, "application/x-www-form-urlencoded", "text/plain"):
        headers = {**server.headers(), **({"content-type": label} if label else {})}
        reply = httpx.post(f"{server.base_url}/api/chat", headers=headers, content=body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["done"] is True
    bad = httpx.post(f"{server.base_url}/api/chat", headers=server.headers(), content="{oops")
    assert bad.status_code == 400 and "error" in bad.json()


def test_a_missing_key_is_401(server):
    with ollama.Client(host=server.base_url) as anonymous, \
            pytest.raises(ollama.ResponseError) as err:
        anonymous.list()
    assert err.value.status_code == 401 and "API key" in err.value.error


def test_openapi_documents_the_ndjson_stream(server):
    document = httpx.get(f"{server.base_url}/openapi.json", headers=server.headers())
    paths = document.json()["paths"]
    ok = paths["/api/chat"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "application/x-ndjson"} <= set(ok)
    assert "400" in paths["/api/embed"]["post"]["responses"]


# Streams that end early: a model that never stops on its own (greedy on random weights runs
# to the end of its 1024-token window), so there is a reply in progress to interrupt.


@pytest.fixture(scope="module")
def endless(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ollama-endless")
    path = make_checkpoint(tmp / "ckpt", "qwen3")
    with live_server(tmp / "state.db", models=(ModelSpec("endless", str(path)),),
                     embedder=False) as live:
        yield live


def chat_rows(live) -> list:
    return [r for r in live.gateway.audit.query_recent() if r.route == "/api/chat"]


def error_kind(live, is_it) -> str | None:
    """Wait for the audit row of the /api/chat request `is_it(row)` picks; its error kind."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if rows := [r for r in chat_rows(live) if is_it(r)]:
            return rows[0].error_kind
        time.sleep(0.1)
    raise AssertionError("no audit row for the request")


def test_an_error_mid_stream_is_an_error_line_and_the_stream_ends(endless):
    with ollama.Client(host=endless.base_url, headers=endless.headers()) as client:
        stream = client.chat("endless", messages=HI, options=GREEDY, stream=True)
        assert not next(stream).done
        asyncio.run(endless.gateway.abort_in_flight())  # what a shutdown does to running replies
        with pytest.raises(ollama.ResponseError, match="shutting down"):
            for _ in stream:
                pass


def test_a_client_leaving_a_stream_aborts_the_request(endless):
    body = {"model": "endless", "messages": HI, "options": GREEDY}
    with httpx.stream("POST", f"{endless.base_url}/api/chat", json=body,
                      headers=endless.headers()) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        first = json.loads(next(response.iter_lines()))
        assert first["done"] is False
        request_id = response.headers["request-id"]
    assert error_kind(endless, lambda row: row.request_id == request_id) == "aborted"
    assert endless.gateway.in_flight == 0


def test_a_client_leaving_a_whole_reply_aborts_the_request(endless):
    body = {"model": "endless", "messages": HI, "options": GREEDY, "stream": False}
    earlier = {row.request_id for row in chat_rows(endless)}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{endless.base_url}/api/chat", json=body, headers=endless.headers(),
                   timeout=httpx.Timeout(10, read=0.3))
    assert error_kind(endless, lambda row: row.request_id not in earlier) == "aborted"
