"""The openai-responses upstream: a real tenshu's /v1/responses on loopback answers through it
(text, streamed deltas, a forced tool call and its result, JSON output, max_output_tokens),
its failures and a cut or garbled stream are core errors, what the Responses API cannot carry
is refused before anything is sent, and a tenshu whose model is served by this backend answers
the openai SDK over chat.completions and responses."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tenshu.backends.openai_responses import OpenAIResponsesBackend
from tenshu.backends.upstream import Timeouts
from tenshu.backends.upstreams import upstream_backend
from tenshu.config import ModelSpec
from tenshu.core.errors import (
    ContextLengthError,
    InvalidRequestError,
    OverloadedError,
    UpstreamError,
    UpstreamTimeoutError,
)
from tenshu.core.events import BlockDelta, BlockStart, BlockStop
from tenshu.core.messages import (
    ImageBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from tenshu.core.request import ChatRequest, ToolChoice
from tests.api.live import live_server
from tests.backends.conftest import (
    FAST,
    KEY_ENV,
    MODEL,
    backend_for,
    check_sequence,
    collect,
    head,
    raw_server,
    sse,
)
from tests.backends.test_upstream import ASK, WEATHER, hello
from tests.faultproxy import FaultProxy

PROTOCOL = "openai-responses"
CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"], "additionalProperties": False}


def text_of(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, BlockDelta))


@pytest.fixture(scope="module")
def fault_proxy(upstream):
    with FaultProxy(upstream.base_url) as proxy:
        yield proxy


@pytest.fixture
def proxy(fault_proxy):
    """The proxy in front of the upstream, forwarding, with no requests recorded yet."""
    fault_proxy.reset(clear=True)
    return fault_proxy


def bodies(proxy: FaultProxy) -> list[dict]:
    return [r.json for r in proxy.requests if r.path == "/v1/responses"]


# -- replies from a real upstream ---------------------------------------------------------------


async def test_a_reply_is_the_core_event_sequence(upstream):
    async with backend_for(PROTOCOL, upstream.base_url, api_key=upstream.key) as backend:
        request = hello()
        events = await collect(backend, request)
        assert backend.in_flight == 0
    finish = check_sequence(events)
    assert events[0].model == MODEL and events[0].id.startswith("resp_")
    assert finish.stop_reason in ("end_turn", "max_tokens")
    assert finish.usage.input_tokens > 0 and 0 < finish.usage.output_tokens <= 8
    assert all(isinstance(e.block, TextBlock) for e in events if isinstance(e, BlockStart))
    assert request.model == MODEL and request.stream is False  # the caller's, as it was


async def test_streamed_deltas_arrive_in_order_and_make_the_whole_answer(upstream):
    system = "Answer briefly."
    request = ChatRequest(MODEL, [Message.of("system", system), Message.of("user", "hi there")],
                          max_tokens=24, temperature=0.0)
    async with backend_for(PROTOCOL, upstream.base_url, api_key=upstream.key) as backend:
        events = await collect(backend, request)
    check_sequence(events)
    deltas = [e.text for e in events if isinstance(e, BlockDelta)]
    assert len(deltas) > 1  # token by token, not one piece at the end
    whole = httpx.post(f"{upstream.base_url}/v1/responses", headers=upstream.headers(),
                       timeout=60, json={"model": MODEL, "input": "hi there", "store": False,
                                         "instructions": system, "temperature": 0,
                                         "max_output_tokens": 24}).json()
    (message,) = whole["output"]
    assert "".join(deltas) == message["content"][0]["text"]


async def test_a_forced_tool_call_and_its_result_go_round(upstream, proxy):
    async with backend_for(PROTOCOL, proxy.url, api_key=upstream.key) as backend:
        events = await collect(backend, ChatRequest(
            MODEL, list(ASK), tools=[WEATHER], max_tokens=300, temperature=0.0,
            tool_choice=ToolChoice("tool", "get_weather")))
        called = check_sequence(events)
        (call,) = [e.block for e in events if isinstance(e, BlockStart)]
        (call.input,) = [e.input for e in events if isinstance(e, BlockStop)]
        assert called.stop_reason == "tool_use" and call.name == "get_weather" and call.id
        jsonschema.validate(call.input, WEATHER.parameters)
        assert any(e.partial_json for e in events if isinstance(e, BlockDelta))  # streamed

        result = ToolResultBlock(call.id, [TextBlock("sunny, 22 C")])
        answered = check_sequence(await collect(backend, ChatRequest(
            MODEL, [*ASK, Message("assistant", [call]), Message("user", [result])],
            tools=[WEATHER], max_tokens=8, temperature=0.0)))
    assert answered.usage.input_tokens > called.usage.input_tokens  # the model saw both
    first, second = bodies(proxy)
    assert first["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert first["tools"] == [{"type": "function", "name": "get_weather",
                               "description": WEATHER.description,
                               "parameters": WEATHER.parameters, "strict": False}]
    assert second["input"][1:] == [
        {"type": "function_call", "call_id": call.id, "name": "get_weather",
         "arguments": json.dumps(call.input)},
        {"type": "function_call_output", "call_id": call.id, "output": "sunny, 22 C"}]
    assert all(b["store"] is False and b["stream"] is True for b in (first, second))


@pytest.mark.parametrize("fmt", [
    {"type": "json_schema", "json_schema": {"name": "place", "schema": CITY, "strict": True}},
    {"type": "json_object"},
])
async def test_json_output_follows_the_format(upstream, proxy, fmt):
    async with backend_for(PROTOCOL, proxy.url, api_key=upstream.key) as backend:
        events = await collect(backend, hello(max_tokens=200, response_format=fmt))
    assert check_sequence(events).stop_reason == "end_turn"
    value = json.loads(text_of(events))
    assert isinstance(value, dict)
    if fmt["type"] == "json_schema":
        jsonschema.validate(value, CITY)
        assert bodies(proxy)[0]["text"] == {"format": {
            "type": "json_schema", "name": "place", "schema": CITY, "strict": True}}
    else:
        assert bodies(proxy)[0]["text"] == {"format": {"type": "json_object"}}


async def test_max_output_tokens_ends_the_reply_as_max_tokens(upstream):
    async with backend_for(PROTOCOL, upstream.base_url, api_key=upstream.key) as backend:
        events = await collect(backend, ChatRequest(
            MODEL, [Message.of("user", "tell me a long story")], max_tokens=2, temperature=0.0))
    finish = check_sequence(events)
    assert finish.stop_reason == "max_tokens" and finish.usage.output_tokens == 2


async def test_a_whole_response_is_read_when_the_stream_is_ignored(upstream):
    """A server that answers with the response object: a real one, from the upstream."""
    whole = httpx.post(f"{upstream.base_url}/v1/responses", headers=upstream.headers(),
                       timeout=60, json={"model": MODEL, "input": "hello", "store": False,
                                         "temperature": 0, "max_output_tokens": 8}).json()

    async def respond(writer):
        writer.write(head(200, "application/json") + json.dumps(whole).encode())

    async with raw_server(respond) as raw, backend_for(PROTOCOL, raw.url) as backend:
        events = await collect(backend, hello())
    finish = check_sequence(events)
    assert text_of(events) == whole["output"][0]["content"][0]["text"]
    assert finish.usage.input_tokens == whole["usage"]["input_tokens"]
    assert finish.usage.output_tokens == whole["usage"]["output_tokens"]


# -- what the upstream says when it fails -------------------------------------------------------


async def test_an_unknown_upstream_model_is_an_upstream_error_naming_it(upstream):
    async with backend_for(PROTOCOL, upstream.base_url, api_key=upstream.key,
                           upstream_model="no-such-model") as backend:
        with pytest.raises(UpstreamError) as err:
            await collect(backend, hello())
    message = str(err.value)
    assert err.value.status == 502 and "no-such-model" in message
    assert message.startswith(f"{MODEL} at {upstream.base_url}/v1 does not know the model")


async def test_a_wrong_key_names_the_variable_it_came_from(upstream):
    async with backend_for(PROTOCOL, upstream.base_url, api_key="sk-wrong") as backend:
        with pytest.raises(UpstreamError) as err:
            await collect(backend, hello())
    assert err.value.status == 502 and KEY_ENV in str(err.value)


async def test_a_prompt_too_long_is_the_clients_error(upstream):
    words = " ".join(["hello"] * 5000)
    async with backend_for(PROTOCOL, upstream.base_url, api_key=upstream.key) as backend:
        with pytest.raises(ContextLengthError):
            await collect(backend, ChatRequest(MODEL, [Message.of("user", words)], max_tokens=8))


async def test_a_stream_cut_half_way_is_an_upstream_error(upstream, proxy):
    proxy.cut_after(5)  # created, in_progress, the message's item and part, a first delta
    seen = []
    async with backend_for(PROTOCOL, proxy.url, api_key=upstream.key,
                           timeouts=Timeouts(first_token=30, idle=30)) as backend:
        with pytest.raises(UpstreamError, match="ended the stream before the reply"):
            async for event in backend.chat(hello(max_tokens=24)):
                seen.append(event)
        assert backend.in_flight == 0
    assert seen and not any(isinstance(e, BlockStop) for e in seen)


async def test_an_upstream_gone_silent_is_the_idle_timeout(upstream, proxy):
    proxy.silence_after(5)
    async with backend_for(PROTOCOL, proxy.url, api_key=upstream.key,
                           timeouts=Timeouts(first_token=30, idle=0.5)) as backend:
        with pytest.raises(UpstreamTimeoutError, match="idle"):
            await collect(backend, hello(max_tokens=24))


# Responses API events, as OpenAI writes them: the start and one text token, then the rest.
_CREATED = ('{"type":"response.created","sequence_number":0,"response":{"id":"resp_1",'
            '"object":"response","created_at":7,"status":"in_progress","model":"m","output":[],'
            '"usage":null}}')
_TEXT = ('{"type":"response.output_item.added","output_index":0,"item":{"id":"msg_1",'
         '"type":"message","status":"in_progress","role":"assistant","content":[]}}',
         '{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,'
         '"content_index":0,"delta":"hi","logprobs":[]}')
_DONE = ('{"type":"response.output_item.done","output_index":0,"item":{"id":"msg_1",'
         '"type":"message","status":"completed","role":"assistant","content":[{'
         '"type":"output_text","text":"hi","annotations":[]}]}}',
         '{"type":"response.completed","response":{"id":"resp_1","status":"completed",'
         '"model":"m","output":[],"usage":{"input_tokens":3,"output_tokens":1,'
         '"total_tokens":4}}}')


async def test_a_garbled_stream_is_an_upstream_error():
    async def garbage(writer):
        writer.write(head() + sse(_CREATED) + b"data: {not json\n\n")

    async with raw_server(garbage) as raw, backend_for(PROTOCOL, raw.url, timeouts=FAST) as b:
        with pytest.raises(UpstreamError, match="cannot read"):
            await collect(b, hello())


@pytest.mark.parametrize(("event", "error", "words"), [
    ('{"type":"response.failed","response":{"id":"resp_1","status":"failed","error":{'
     '"code":"server_error","message":"the GPU fell over"}}}', UpstreamError, "GPU fell over"),
    ('{"type":"error","code":"rate_limit_exceeded","message":"slow down","param":null}',
     OverloadedError, "slow down"),
    ('{"type":"error","code":"context_length_exceeded","message":"too long","param":"input"}',
     ContextLengthError, "too long"),
])
async def test_failures_in_the_stream_are_core_errors(event, error, words):
    async def failing(writer):
        writer.write(head() + sse(_CREATED, *_TEXT, event))

    async with raw_server(failing) as raw, backend_for(PROTOCOL, raw.url, timeouts=FAST) as b:
        with pytest.raises(error, match=words) as err:
            await collect(b, hello())
    assert type(err.value) is error


async def test_reasoning_calls_logprobs_and_cached_tokens_are_read():
    """What a tenshu upstream does not send: reasoning summaries in two parts, logprobs, a
    call whose arguments come in pieces, cached input tokens."""
    stream = sse(
        _CREATED,
        '{"type":"response.output_item.added","output_index":0,"item":{"id":"rs_1",'
        '"type":"reasoning","summary":[]}}',
        '{"type":"response.reasoning_summary_part.added","output_index":0,"summary_index":0}',
        '{"type":"response.reasoning_summary_text.delta","output_index":0,"delta":"plan "}',
        '{"type":"response.reasoning_summary_text.delta","output_index":0,"delta":"it"}',
        '{"type":"response.reasoning_summary_part.added","output_index":0,"summary_index":1}',
        '{"type":"response.reasoning_summary_text.delta","output_index":0,"delta":"then go"}',
        '{"type":"response.output_item.done","output_index":0,"item":{"type":"reasoning"}}',
        '{"type":"response.output_item.added","output_index":1,"item":{"type":"message"}}',
        '{"type":"response.output_text.delta","output_index":1,"delta":"ok","logprobs":[{'
        '"token":"ok","logprob":-0.5,"top_logprobs":[{"token":"no","logprob":-1.5}]}]}',
        '{"type":"response.output_item.done","output_index":1,"item":{"type":"message"}}',
        '{"type":"response.output_item.added","output_index":2,"item":{"type":"function_call",'
        '"call_id":"call_9","name":"get_weather","arguments":""}}',
        '{"type":"response.function_call_arguments.delta","output_index":2,"delta":"{\\"ci"}',
        '{"type":"response.function_call_arguments.delta","output_index":2,'
        '"delta":"ty\\": \\"Oslo\\"}"}',
        '{"type":"response.function_call_arguments.done","output_index":2,'
        '"arguments":"{\\"city\\": \\"Oslo\\"}"}',
        '{"type":"response.output_item.done","output_index":2,"item":{"type":"function_call",'
        '"call_id":"call_9","name":"get_weather","arguments":"{\\"city\\": \\"Oslo\\"}"}}',
        '{"type":"response.completed","response":{"status":"completed","output":[],'
        '"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":6},'
        '"output_tokens":7}}}')

    async def respond(writer):
        writer.write(head() + stream)

    async with raw_server(respond) as raw, backend_for(PROTOCOL, raw.url, timeouts=FAST) as b:
        events = await collect(b, hello(tools=[WEATHER]))
    finish = check_sequence(events)
    blocks = [e.block for e in events if isinstance(e, BlockStart)]
    assert [type(b) for b in blocks] == [ThinkingBlock, TextBlock, ToolUseBlock]
    deltas = [e for e in events if isinstance(e, BlockDelta)]
    assert "".join(e.text for e in deltas if e.index == 0) == "plan it\n\nthen go"
    (text,) = [e for e in deltas if e.index == 1]
    assert text.text == "ok" and text.logprobs[0].logprob == -0.5
    assert text.logprobs[0].top[0].token == "no"
    assert (blocks[2].id, blocks[2].name) == ("call_9", "get_weather")
    assert [e.input for e in events if isinstance(e, BlockStop)][2] == {"city": "Oslo"}
    assert finish.stop_reason == "tool_use"
    assert (finish.usage.input_tokens, finish.usage.output_tokens,
            finish.usage.cached_tokens) == (10, 7, 6)


# -- the request on the wire, and what cannot go --------------------------------------------------


async def test_the_request_on_the_wire():
    async def respond(writer):
        writer.write(head() + sse(_CREATED, *_TEXT, *_DONE))

    image = ImageBlock("image/png", "iVBORw0KGgo=")
    call = ToolUseBlock("call_1", "get_weather", {"city": "Paris", "unit": "celsius"})
    request = ChatRequest(MODEL, [
        Message.of("system", "Be brief."),
        Message("user", [TextBlock("What is this?"), image]),
        Message("assistant", [ThinkingBlock("a local musing"), TextBlock("Let me look."), call]),
        Message("user", [ToolResultBlock("call_1", [TextBlock("sunny")]), TextBlock("and?")]),
        Message.of("system", "Answer in French."),
    ], tools=[WEATHER], tool_choice=ToolChoice("required", parallel=False), max_tokens=50,
        temperature=0.5, top_p=0.9, top_k=5, seed=1, logprobs=True, top_logprobs=2,
        response_format={"type": "json_object"}, thinking={"type": "enabled", "effort": "low"},
        user="ana")
    async with raw_server(respond) as raw, \
            backend_for(PROTOCOL, raw.url, upstream_model="gpt-x", api_key="sk-1") as backend:
        check_sequence(await collect(backend, request))
    assert b"POST /v1/responses " in raw.heads[0]  # under the endpoint, with its /v1
    assert b"authorization: bearer sk-1" in raw.heads[0].lower()
    assert json.loads(raw.bodies[0]) == {
        "model": "gpt-x", "instructions": "Be brief.",
        "input": [
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=",
                 "detail": "auto"}]},
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "Let me look."}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather",
             "arguments": '{"city": "Paris", "unit": "celsius"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "message", "role": "user", "content": [{"type": "input_text",
                                                              "text": "and?"}]},
            {"type": "message", "role": "system", "content": [
                {"type": "input_text", "text": "Answer in French."}]}],
        "max_output_tokens": 50, "temperature": 0.5, "top_p": 0.9, "user": "ana",
        "include": ["message.output_text.logprobs"], "top_logprobs": 2,
        "tools": [{"type": "function", "name": "get_weather",
                   "description": WEATHER.description, "parameters": WEATHER.parameters,
                   "strict": False}],
        "tool_choice": "required", "parallel_tool_calls": False,
        "text": {"format": {"type": "json_object"}},
        "reasoning": {"effort": "low", "summary": "auto"},
        "stream": True, "store": False}


@pytest.mark.parametrize(("fields", "field"), [
    ({"prompt": "Once upon a time"}, "prompt"),
    ({"n": 2}, "n"),
    ({"stop": ["\n\n"]}, "stop"),
])
async def test_what_the_responses_api_cannot_carry_is_refused(fields, field):
    async def answer(writer):
        writer.write(head() + sse(_CREATED, *_TEXT, *_DONE))

    messages = [] if "prompt" in fields else [Message.of("user", "hello")]
    async with raw_server(answer) as raw, backend_for(PROTOCOL, raw.url) as b:
        with pytest.raises(InvalidRequestError, match="Responses API") as err:
            await collect(b, ChatRequest(MODEL, messages, **fields))
        assert b.in_flight == 0
    assert err.value.field == field and not isinstance(err.value, UpstreamError)
    assert not raw.bodies  # nothing was sent


def test_the_backend_is_configured_by_its_name():
    spec = ModelSpec("gpt", backend=PROTOCOL, endpoints=("https://api.openai.com/v1",))
    assert spec.locality == "cloud"
    with pytest.raises(ValueError, match="the URL you would give the openai SDK"):
        ModelSpec("gpt", backend=PROTOCOL)
    backend = upstream_backend(PROTOCOL, "gpt", "https://api.openai.com/v1/")
    assert isinstance(backend, OpenAIResponsesBackend)
    assert backend.info.owned_by == PROTOCOL and backend.endpoint == "https://api.openai.com/v1"


# -- a tenshu whose model is another tenshu's, over the Responses API -----------------------------


@pytest.fixture(scope="module")
def front(upstream, tmp_path_factory):
    """tenshu serving `remote`, which is the upstream's `qwen` over openai-responses."""
    spec = ModelSpec("remote", backend=PROTOCOL, endpoints=(f"{upstream.base_url}/v1",),
                     upstream_model=MODEL, api_key_env=KEY_ENV)
    state = tmp_path_factory.mktemp("front-state") / "state.db"
    with pytest.MonkeyPatch.context() as env:
        env.setenv(KEY_ENV, upstream.key)  # read once, as the server starts
        with live_server(state, models=(spec,), embedder=False) as live:
            yield live


@pytest.fixture(scope="module")
def clients(front, upstream):
    """The openai SDK at the front tenshu, and at the upstream directly."""
    def client(live):
        return openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=live.key, max_retries=0)
    return client(front), client(upstream)


def test_chat_completions_are_answered_by_the_upstream_over_responses(clients):
    front, upstream = clients
    asked = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8,
             "temperature": 0}
    raw = front.chat.completions.with_raw_response.create(model="remote", **asked)
    reply = raw.parse()
    assert raw.headers["x-tenshu-backend"] == "remote"
    direct = upstream.chat.completions.create(model=MODEL, **asked)
    assert reply.choices[0].message.content == direct.choices[0].message.content
    assert reply.usage.prompt_tokens == direct.usage.prompt_tokens
    stream = front.chat.completions.create(model="remote", stream=True, **asked)
    assert "".join(c.choices[0].delta.content or "" for c in stream
                   if c.choices) == reply.choices[0].message.content


def test_responses_are_answered_by_the_upstream_over_responses(clients):
    front, upstream = clients
    asked = {"input": "hi, who are you?", "instructions": "Answer briefly.",
             "max_output_tokens": 16, "temperature": 0}
    reply = front.responses.create(model="remote", **asked)
    direct = upstream.responses.create(model=MODEL, store=False, **asked)
    assert reply.model == "remote" and reply.output_text == direct.output_text
    assert reply.status == direct.status and reply.usage.input_tokens == direct.usage.input_tokens

    tool = {"type": "function", "name": "get_weather", "description": WEATHER.description,
            "parameters": WEATHER.parameters}
    with front.responses.stream(model="remote", input="weather in Paris?", tools=[tool],
                                tool_choice="required", parallel_tool_calls=False,
                                temperature=0, max_output_tokens=300) as s:
        kinds = [event.type for event in s]
        called = s.get_final_response()
    (call,) = [item for item in called.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id
    jsonschema.validate(json.loads(call.arguments), WEATHER.parameters)
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-1] == "response.completed"
