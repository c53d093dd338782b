"""The OpenAI-compatible API, driven by the official `openai` SDK against a live server.

The server serves tenshu-tiny (a small cat persona, 512-token window) and all-minilm-l6-v2.
Replies are kept short: the model is tiny but the test machines are slow.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time

import anthropic
import openai
import pytest
from openai import OpenAI

from tests.api.live import live_server

MODEL = "tenshu-tiny"
EMBEDDER = "all-minilm-l6-v2"
HELLO = [{"role": "user", "content": "hello, who are you?"}]


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=server.base_url + "/v1", api_key=server.key, max_retries=0)


def greedy(client, messages=HELLO, **kw):
    kw.setdefault("max_tokens", 24)
    return client.chat.completions.create(model=MODEL, messages=messages, temperature=0, **kw)


# -- models -------------------------------------------------------------------------------------


def test_models_are_listed_and_retrieved(client):
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids and EMBEDDER in ids
    model = client.models.retrieve(MODEL)
    assert (model.id, model.object) == (MODEL, "model")
    with pytest.raises(openai.NotFoundError, match="tenshu-tiny"):
        client.models.retrieve("no-such-model")  # the message lists the models there are


def test_a_model_is_retrieved_by_its_latest_tag_as_chat_takes_it(client):
    tagged, plain = client.models.retrieve(f"{MODEL}:latest"), client.models.retrieve(MODEL)
    assert tagged.model_dump() == plain.model_dump() and tagged.id == MODEL
    assert client.chat.completions.create(model=f"{MODEL}:latest", messages=HELLO,
                                          max_tokens=2).model == MODEL


def test_the_model_list_says_which_entries_embed(client):
    """OpenAI's model object has no such field; LM Studio's `type` and the gateways'
    `supported_endpoints` (what Open WebUI's filter reads) say it, beside OpenAI's fields."""
    models = {m.id: m for m in client.models.list()}
    chat, embedder = models[MODEL].model_dump(), models[EMBEDDER].model_dump()
    assert chat["type"] == "llm" and "/v1/chat/completions" in chat["supported_endpoints"]
    assert embedder["type"] == "embeddings"
    assert embedder["supported_endpoints"] == ["/v1/embeddings"]
    assert {"id", "object", "created", "owned_by"} <= set(embedder)  # still OpenAI's object
    assert client.models.retrieve(EMBEDDER).model_dump()["type"] == "embeddings"


def test_anthropic_clients_list_models_in_their_own_shape(server):
    claude = anthropic.Anthropic(base_url=server.base_url, api_key=server.key, max_retries=0)
    assert MODEL in [m.id for m in claude.models.list()]
    assert claude.models.retrieve(MODEL).id == MODEL


# -- chat ---------------------------------------------------------------------------------------


def test_streaming_gives_the_same_reply_and_usage(client):
    reply = greedy(client)
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
    assert reply.model == MODEL and reply.choices[0].message.role == "assistant"
    chunks = list(greedy(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and
              c.choices[0].finish_reason]
    assert finish == [reply.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert getattr(chunks[-1].usage, field) == getattr(reply.usage, field)


def test_system_prompt_and_multi_turn(client):
    single = greedy(client)
    turns = [{"role": "system", "content": "You are Mochi, a cat."}, *HELLO,
             {"role": "assistant", "content": single.choices[0].message.content},
             {"role": "user", "content": "what do you like to eat?"}]
    reply = greedy(client, turns)
    assert reply.choices[0].message.content.strip()
    assert reply.usage.prompt_tokens > single.usage.prompt_tokens + 10  # every turn was read


def test_n_choices_are_reproducible_with_a_seed(client):
    def sample(**kw):
        return client.chat.completions.create(model=MODEL, messages=HELLO, n=3, seed=42,
                                              temperature=1, max_tokens=10, **kw)

    first = sample()
    assert [c.index for c in first.choices] == [0, 1, 2]
    texts = [c.message.content for c in first.choices]
    assert [c.message.content for c in sample().choices] == texts
    streamed = {0: "", 1: "", 2: ""}
    for chunk in sample(stream=True):
        for choice in chunk.choices:
            streamed[choice.index] += choice.delta.content or ""
    assert list(streamed.values()) == texts
    counted = sample(logprobs=True)  # the same samples, with one logprob entry per token
    assert [c.message.content for c in counted.choices] == texts
    assert counted.usage.completion_tokens == sum(len(c.logprobs.content)
                                                  for c in counted.choices)


def test_stop_string_ends_the_reply_early(client):
    full = greedy(client).choices[0].message.content
    words = full.split()
    stop = " " + words[len(words) // 2]
    reply = greedy(client, stop=[stop]).choices[0]
    assert reply.finish_reason == "stop"
    assert reply.message.content == full[:full.index(stop)]
    assert stop not in reply.message.content


def test_max_tokens_and_max_completion_tokens_cut_the_reply(client):
    short = greedy(client, max_tokens=5)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 5
    same = greedy(client, max_tokens=None, max_completion_tokens=5)
    assert same.choices[0].message.content == short.choices[0].message.content
    assert same.choices[0].finish_reason == "length"


def test_logprobs(client):
    reply = greedy(client, max_tokens=6, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens == 6
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    for token in content:
        assert len(token.top_logprobs) == 3 and token.logprob <= 0
        assert token.bytes == list(token.token.encode())
        same = [t for t in token.top_logprobs if t.token == token.token]
        assert same and same[0].logprob == pytest.approx(token.logprob)
        assert token.top_logprobs[0].token == token.token  # greedy picks the most likely


def test_the_sdk_stream_helper(client):
    reply = greedy(client, max_tokens=60)
    assert reply.choices[0].finish_reason == "stop"  # the helper refuses a cut-off reply
    with client.chat.completions.stream(model=MODEL, messages=HELLO, temperature=0,
                                        max_tokens=60) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == final.choices[0].message.content
    assert final.choices[0].message.content == reply.choices[0].message.content
    assert final.choices[0].finish_reason == "stop"


# -- completions --------------------------------------------------------------------------------


def test_completions_stream_equals_non_stream_and_echo(client):
    args = {"model": MODEL, "prompt": "Mochi the cat", "max_tokens": 12, "temperature": 0}
    whole = client.completions.create(**args)
    assert whole.object == "text_completion" and whole.id.startswith("cmpl-")
    streamed = "".join(c.choices[0].text for c in client.completions.create(**args, stream=True))
    assert streamed == whole.choices[0].text
    echoed = client.completions.create(**args, echo=True)
    assert echoed.choices[0].text == "Mochi the cat" + whole.choices[0].text


def test_completions_legacy_logprobs(client):
    reply = client.completions.create(model=MODEL, prompt="Mochi the cat", max_tokens=4,
                                      temperature=0, logprobs=2).choices[0]
    lp = reply.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == 4
    assert "".join(lp.tokens) == reply.text
    assert lp.text_offset[1] == len(lp.tokens[0])
    assert all(token in top for token, top in zip(lp.tokens, lp.top_logprobs, strict=True))


# -- embeddings ---------------------------------------------------------------------------------


def test_embeddings(client):
    sentences = ["The cat sleeps on the warm windowsill.", "A kitten naps in the sunny window.",
                 "Quarterly revenue grew by eight percent."]
    result = client.embeddings.create(model=EMBEDDER, input=sentences, encoding_format="float")
    vectors = [d.embedding for d in result.data]
    assert [len(v) for v in vectors] == [384] * 3 and result.usage.prompt_tokens > 0

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.hypot(*a) / math.hypot(*b)

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    # without encoding_format the SDK asks for base64 (little-endian float32) and decodes it;
    # the same request as floats gives the same numbers (a different batch need not, to the bit)
    packed = client.embeddings.create(model=EMBEDDER, input=sentences[0]).data[0].embedding
    alone = client.embeddings.create(model=EMBEDDER, input=sentences[0],
                                     encoding_format="float").data[0].embedding
    assert packed == pytest.approx(alone, rel=1e-6, abs=1e-7)
    assert packed == pytest.approx(vectors[0], abs=1e-4)
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model=EMBEDDER, input="x", dimensions=128)


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"temperature": 3}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"n": 9}, "n"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "cat", "content": "meow"}]}, "messages.0.role"),
])
def test_bad_requests_name_the_field(client, kwargs, field):
    kwargs = {"messages": HELLO, "max_tokens": 4, **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, **kwargs)
    assert field in err.value.message


def test_wrong_model_wrong_key_and_wrong_kind_of_model(client, server):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-5", messages=HELLO, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        client.chat.completions.create(model=EMBEDDER, messages=HELLO, max_tokens=4)
    stranger = OpenAI(base_url=server.base_url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()


def test_the_context_window(client):
    window = client.models.retrieve(MODEL).model_extra["max_model_len"]
    with pytest.raises(openai.BadRequestError) as err:
        greedy(client, [{"role": "user", "content": "meow " * window}])
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as err:  # streaming: a plain HTTP error too
        greedy(client, [{"role": "user", "content": "meow " * window}], stream=True)
    assert err.value.code == "context_length_exceeded"

    # A prompt two tokens short of the window: max_tokens is clamped, the reply fills the rest.
    probe = greedy(client, [{"role": "user", "content": "meow " * 400}], max_tokens=1)
    words = 400 + window - 2 - probe.usage.prompt_tokens
    reply = greedy(client, [{"role": "user", "content": "meow " * words}], max_tokens=100)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.prompt_tokens + reply.usage.completion_tokens == window


def test_a_client_that_hangs_up_before_the_answer_stops_the_work(server):
    """Non-streaming requests too (an SDK that timed out): the engine drops the request."""
    llm = server.gateway.backends[MODEL].llm
    audit = server.gateway.audit

    def aborted() -> int:
        return sum(r.error_kind == "aborted" for r in audit.query_recent(1000))

    before = aborted()
    body = json.dumps({"model": MODEL, "prompt": "meow", "max_tokens": 480,
                       "ignore_eos": True}).encode()
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: Bearer " + server.key.encode() + b"\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert wait_for(lambda: llm.requests)  # it is generating: now hang up
    assert wait_for(lambda: aborted() == before + 1)
    assert wait_for(lambda: not llm.requests)


def test_a_failure_mid_stream_arrives_as_an_error_event(tmp_path):
    """The server stops while a reply streams: the SDK gets OpenAI's in-stream error."""
    chunks, errors, started = [], [], threading.Event()

    def read(stream):
        try:
            for chunk in stream:
                chunks.append(chunk)
                started.set()
        except openai.APIError as exc:
            errors.append(exc)
        finally:
            started.set()

    with live_server(tmp_path / "s.db", embedder=False, grace_seconds=0) as live:
        client = OpenAI(base_url=live.base_url + "/v1", api_key=live.key, max_retries=0)
        stream = client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=480, stream=True,
            extra_body={"ignore_eos": True})
        reader = threading.Thread(target=read, args=(stream,))
        reader.start()
        assert started.wait(30)
    reader.join(30)
    assert chunks and chunks[0].choices[0].delta.role == "assistant"
    assert len(errors) == 1 and "shutting down" in errors[0].message


def wait_for(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- prompt logprobs: what lm-eval's loglikelihood tasks send -------------------------------------


@pytest.fixture(scope="module")
def reference(server):
    """transformers on the served checkpoint: its tokenizer and every position's log-softmax
    (in float32; the server computes in bfloat16, hence the tests' 1% tolerance)."""
    from transformers import AutoTokenizer

    from tests.engine.reference import hf_logprobs

    path = server.gateway.backend_for(MODEL).info.path
    return AutoTokenizer.from_pretrained(path), lambda ids: hf_logprobs(path, ids)


def test_lm_eval_loglikelihood_request_scores_each_prompt(client, reference):
    """lm-eval's local-completions model: a batch of token-id prompts, echo, logprobs=1,
    max_tokens=1; it reads token_logprobs[context:-1] and checks them against top_logprobs."""
    tokenizer, logprobs_of = reference
    prompts = [tokenizer.encode("Mochi the cat likes fish"), tokenizer.encode("The sky is")]
    reply = client.completions.create(model=MODEL, prompt=prompts, echo=True, logprobs=1,
                                      max_tokens=1, temperature=0, seed=1234)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.usage.prompt_tokens == sum(map(len, prompts))
    assert reply.usage.completion_tokens == 2
    for ids, choice in zip(prompts, reply.choices, strict=True):
        lp = choice.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(ids) + 1
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert choice.text.startswith(tokenizer.decode(ids))
        expected = logprobs_of(ids)
        for i in range(1, len(ids)):
            assert lp.token_logprobs[i] == pytest.approx(float(expected[i - 1, ids[i]]), rel=0.01, abs=0.05)
            assert lp.tokens[i] in lp.top_logprobs[i]
        # greedy: the generated token is the likeliest after the whole prompt
        assert lp.token_logprobs[-1] == pytest.approx(max(lp.top_logprobs[-1].values()))


def test_several_prompts_with_n_are_numbered_prompt_by_prompt_streamed_or_not(client):
    args = {"model": MODEL, "prompt": ["Mochi the cat", "Fish is"], "n": 2, "max_tokens": 6,
            "temperature": 0}
    whole = client.completions.create(**args)
    assert [c.index for c in whole.choices] == [0, 1, 2, 3]
    alone = [client.completions.create(**{**args, "prompt": p, "n": 1}).choices[0].text
             for p in args["prompt"]]
    assert [c.text for c in whole.choices] == [alone[0], alone[0], alone[1], alone[1]]
    texts: dict[int, str] = {}
    usage = None
    for chunk in client.completions.create(**args, stream=True,
                                           stream_options={"include_usage": True}):
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
        usage = chunk.usage or usage
    assert [texts[i] for i in range(4)] == [c.text for c in whole.choices]
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_vllm_prompt_logprobs_and_a_bad_prompt_fails_the_whole_batch(client, server, reference):
    tokenizer, logprobs_of = reference
    ids = tokenizer.encode("Mochi the cat")
    reply = client.completions.create(model=MODEL, prompt=ids, max_tokens=1, temperature=0,
                                      extra_body={"prompt_logprobs": 2})
    scored = reply.choices[0].model_extra["prompt_logprobs"]
    assert len(scored) == len(ids) and scored[0] is None
    expected = logprobs_of(ids)
    for i in range(1, len(ids)):
        entry = scored[i][str(ids[i])]
        assert entry["logprob"] == pytest.approx(float(expected[i - 1, ids[i]]), rel=0.01, abs=0.05)
        assert entry["decoded_token"] == tokenizer.decode([ids[i]])
        assert sum(e["rank"] <= 2 for e in scored[i].values()) == 2
    with pytest.raises(openai.BadRequestError, match="context window"):
        client.completions.create(model=MODEL, prompt=["Mochi", "cat " * 600], max_tokens=4)
    engine = server.gateway.backend_for(MODEL).llm
    deadline = time.monotonic() + 30
    while engine.has_unfinished_requests() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine.has_unfinished_requests()
