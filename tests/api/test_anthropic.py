"""The Anthropic Messages API, through the official anthropic SDK against a live server.

tenshu-tiny answers (as Mochi, a cat) in a 512-token window. The SDK of this version no longer
takes sampling parameters as arguments, so temperature travels in `extra_body`, as it does for
clients written against the API itself.
"""

from __future__ import annotations

import asyncio
import re

import anthropic
import httpx
import pytest

from tenshu.api.anthropic import _stream
from tenshu.config import ModelSpec
from tenshu.core.errors import EngineDeadError
from tenshu.core.events import BlockDelta, BlockStart, MessageStart, Usage
from tenshu.core.messages import TextBlock
from tenshu.protocols.anthropic_encode import StreamEncoder
from tests.api.live import live_server

MODEL = "tenshu-tiny"
GREEDY = {"temperature": 0}
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key=server.key, max_retries=0)


@pytest.fixture(scope="module")
def endless(tmp_path_factory, checkpoint):
    """A random checkpoint: greedy, it goes on for hundreds of tokens without an end-of-turn
    token, so its streams are still running when a test cuts them."""
    state = tmp_path_factory.mktemp("anthropic-endless") / "state.db"
    models = (ModelSpec("endless", str(checkpoint("qwen3"))),)
    with live_server(state, models=models, embedder=False, kv_cache_memory_gib=0.25) as live:
        yield live


def total_input(usage) -> int:
    """The whole prompt: Anthropic counts cached tokens apart from input_tokens."""
    return usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens


def test_create_returns_a_message(client):
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=40, messages=HELLO)
    message = raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == MODEL
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert total_input(message.usage) > 0 and 0 < message.usage.output_tokens <= 40


def test_streaming_and_not_give_the_same_greedy_reply(client):
    request = dict(model=MODEL, max_tokens=60, messages=HELLO, extra_body=GREEDY)
    whole = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        streamed_text = "".join(stream.text_stream)
        streamed = stream.get_final_message()
    assert streamed_text == streamed.content[0].text == whole.content[0].text
    assert streamed.stop_reason == whole.stop_reason
    assert streamed.usage.output_tokens == whole.usage.output_tokens
    assert total_input(streamed.usage) == total_input(whole.usage)


def test_stream_events_come_in_anthropics_order(client):
    stream = client.messages.create(model=MODEL, max_tokens=20, messages=HELLO, stream=True)
    kinds = [event.type for event in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds[1] == "content_block_start" and kinds[-2] == "message_delta"
    assert kinds[-3] == "content_block_stop"
    assert set(kinds[2:-3]) == {"content_block_delta"}


def test_the_raw_stream_names_each_event_and_pings(server):
    body = {"model": MODEL, "max_tokens": 10, "stream": True, "messages": HELLO}
    with httpx.stream(
        "POST",
        server.base_url + "/v1/messages?beta=true",
        json=body,
        headers={"x-api-key": server.key, "anthropic-version": "2023-06-01"},
        timeout=60,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["request-id"]
        text = response.read().decode()
    events = [block.split("\n") for block in text.strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in events]
    for name, lines in zip(names, events, strict=True):
        assert lines[1].startswith("data: ") and f'"type":"{name}"' in lines[1]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]
    assert '"content":[]' in start and '"output_tokens":0' in start


@pytest.mark.parametrize(
    "system",
    [
        "You are a cat.",
        [{"type": "text", "text": "You are a cat.", "cache_control": {"type": "ephemeral"}}],
    ],
)
def test_system_as_a_string_or_as_blocks(client, system):
    message = client.messages.create(model=MODEL, max_tokens=20, system=system, messages=HELLO)
    assert message.content[0].text
    with_system = client.messages.count_tokens(model=MODEL, system=system, messages=HELLO)
    bare = client.messages.count_tokens(model=MODEL, messages=HELLO)
    assert with_system.input_tokens > bare.input_tokens
    assert (
        with_system.input_tokens
        == client.messages.count_tokens(
            model=MODEL, system="You are a cat.", messages=HELLO
        ).input_tokens
    )


def test_a_multi_turn_conversation(client):
    turns = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "mrrp! hello."},
        {"role": "user", "content": [{"type": "text", "text": "what do you like?"}]},
    ]
    message = client.messages.create(model=MODEL, max_tokens=30, messages=turns)
    assert message.content[0].text
    assert total_input(message.usage) > total_input(
        client.messages.create(model=MODEL, max_tokens=1, messages=HELLO).usage
    )


def test_a_stop_sequence_ends_the_reply_before_it(client):
    request = dict(model=MODEL, max_tokens=60, messages=HELLO, extra_body=GREEDY)
    text = client.messages.create(**request).content[0].text
    words = text.split()
    assert len(words) > 3, text
    stop = " " + words[2]
    message = client.messages.create(**request, stop_sequences=[stop, "never-said"])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == stop
    assert message.content[0].text == text[: text.index(stop)]


def test_a_small_max_tokens_stops_with_max_tokens(client):
    message = client.messages.create(model=MODEL, max_tokens=3, messages=HELLO)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3


def test_max_tokens_beyond_the_window_is_clamped_and_reported_as_max_tokens(client):
    window, room = 512, 4

    def messages(n):
        return [{"role": "user", "content": "the cat " * n}]

    def count(n):
        return client.messages.count_tokens(model=MODEL, messages=messages(n)).input_tokens

    per_word = (count(20) - count(10)) / 10
    words = 10 + round((window - room - count(10)) / per_word)
    for _ in range(20):  # a prompt that leaves `room` tokens in the window
        if count(words) == window - room:
            break
        words += 1 if count(words) < window - room else -1
    message = client.messages.create(
        model=MODEL, max_tokens=20_000, messages=messages(words), extra_body=GREEDY
    )
    assert message.stop_reason == "max_tokens"
    assert total_input(message.usage) + message.usage.output_tokens == window


def test_a_prompt_too_long_for_the_window_is_refused_as_anthropic_does(client):
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hello " * 600}]
        )
    error = err.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert re.fullmatch(r"prompt is too long: \d+ tokens > 511 maximum", error["message"])


def test_count_tokens_is_the_prompt_the_reply_was_given(client):
    system = "You are Mochi."
    counted = client.messages.count_tokens(model=MODEL, system=system, messages=HELLO)
    message = client.messages.create(model=MODEL, max_tokens=5, system=system, messages=HELLO)
    assert counted.input_tokens == total_input(message.usage)


def test_thinking_betas_and_unknown_fields_are_accepted(client):
    message = client.messages.create(
        model=MODEL,
        max_tokens=2048,
        messages=HELLO,
        thinking={"type": "enabled", "budget_tokens": 1024},
        metadata={"user_id": "ada"},
        extra_body={"context_management": {"edits": []}, "a_field_from_the_future": 1},
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
        extra_query={"beta": "true"},
    )
    assert message.content[0].text


def test_a_bearer_token_works_as_well_as_x_api_key(server):
    bearer = anthropic.Anthropic(base_url=server.base_url, auth_token=server.key, max_retries=0)
    assert bearer.messages.create(model=MODEL, max_tokens=5, messages=HELLO).content


def test_a_wrong_key_raises_authentication_error(server):
    wrong = anthropic.Anthropic(base_url=server.base_url, api_key="tsk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        wrong.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert err.value.body["type"] == "error"
    assert err.value.body["error"]["type"] == "authentication_error"
    assert err.value.response.headers["request-id"].startswith("req_")


def test_a_missing_max_tokens_is_a_bad_request_naming_it(client):
    with pytest.raises(anthropic.BadRequestError) as err:
        client.post(
            "/v1/messages", cast_to=httpx.Response, body={"model": MODEL, "messages": HELLO}
        )
    assert err.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    assert err.value.response.headers["request-id"]


CALL = {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "noon"}
PIXEL = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")}}
TOOLS = [{"name": "get_time", "description": "the time", "input_schema": {"type": "object"}}]


@pytest.mark.parametrize("messages, where, message", [
    # Anthropic's roles: results are the user's, calls and thinking the assistant's, images
    # come from the user
    ([*HELLO, {"role": "assistant", "content": [CALL]},
      {"role": "assistant", "content": [RESULT]}], "messages.2.content.0",
     "`tool_result` blocks can only be in `user` messages, not `assistant` messages"),
    ([{"role": "user", "content": [CALL]}], "messages.0.content.0",
     "`tool_use` blocks can only be in `assistant` messages, not `user` messages"),
    ([{"role": "user", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"}]}],
     "messages.0.content.0", "`thinking` blocks can only be in `assistant` messages"),
    ([*HELLO, {"role": "assistant", "content": [PIXEL]}], "messages.1.content.0",
     "`image` blocks can only be in `user` messages"),
    ([{"role": "user", "content": []}, *HELLO], "messages.0",
     "all messages must have non-empty content except for the optional final assistant"),
])
def test_blocks_in_the_wrong_role_are_refused_as_anthropic_refuses_them(client, messages,
                                                                       where, message):
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=MODEL, max_tokens=5, messages=messages, tools=TOOLS)
    error = err.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{where}: ") and message in error["message"]
    with pytest.raises(anthropic.BadRequestError):  # counting tokens reads the same rules
        client.messages.count_tokens(model=MODEL, messages=messages, tools=TOOLS)


def test_what_anthropic_accepts_of_roles_is_accepted(client):
    """An assistant turn first, consecutive turns of one role (merged), an empty final assistant
    turn, a tool's result beside text in the user's turn. (An image in a user turn passes these
    rules too; tenshu-tiny reads no images, which is a 400 of its own.)"""
    messages = [{"role": "assistant", "content": "hello, I am here"},
                {"role": "user", "content": "what time is it?"},
                {"role": "user", "content": [{"type": "text", "text": "and look"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "let me see"}, CALL]},
                {"role": "user", "content": [RESULT, {"type": "text", "text": "thanks"}]},
                {"role": "assistant", "content": []}]
    reply = client.messages.create(model=MODEL, max_tokens=5, messages=messages, tools=TOOLS,
                                   extra_body=GREEDY)
    assert reply.stop_reason in ("end_turn", "max_tokens", "tool_use")


@pytest.mark.parametrize("stream", [False, True])
def test_an_unknown_model_is_not_found(client, stream):
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(model="claude-opus-9", max_tokens=5, messages=HELLO, stream=stream)
    error = err.value.body["error"]
    assert error["type"] == "not_found_error" and MODEL in error["message"]


BILLING = "x-anthropic-billing-header: cc_version=2.1.330.572; cc_entrypoint=sdk-cli; cch=5d1e2;"


def test_claude_codes_billing_line_does_not_reach_the_model(client):
    """Claude Code opens its system prompt with a line that changes on every request."""
    prompt = "You are Claude Code.\nBe brief."
    bare = client.messages.count_tokens(model=MODEL, system=prompt, messages=HELLO)
    lined = client.messages.count_tokens(model=MODEL, system=f"{BILLING}\n{prompt}", messages=HELLO)
    assert lined.input_tokens == bare.input_tokens


def test_claude_codes_billing_block_does_not_take_the_next_block_with_it(client):
    """Claude Code 2.1.330 sends the billing line as a system block of its own."""
    blocks = [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "\nBe brief.", "cache_control": {"type": "ephemeral"}},
    ]
    bare = client.messages.count_tokens(model=MODEL, system=blocks, messages=HELLO)
    lined = client.messages.count_tokens(
        model=MODEL, system=[{"type": "text", "text": BILLING}, *blocks], messages=HELLO
    )
    assert lined.input_tokens == bare.input_tokens


# -- streams that end early ---------------------------------------------------------------------

LONG = dict(model="endless", max_tokens=1000, messages=HELLO, extra_body=GREEDY)


def test_a_failure_mid_stream_ends_it_with_an_error_event(endless):
    client = anthropic.Anthropic(base_url=endless.base_url, api_key=endless.key, max_retries=0)
    backend = endless.gateway.backend_for("endless")
    deltas = 0
    with pytest.raises(anthropic.APIStatusError) as err:
        for event in client.messages.create(**LONG, stream=True):
            deltas += event.type == "content_block_delta"
            if deltas == 3:  # the engine ends every request, as on shutdown
                asyncio.run(backend.abort_all())
    assert err.value.body["type"] == "error"
    assert err.value.body["error"]["type"] == "overloaded_error"


def _engine_idle(backend) -> bool:
    blocks = backend.llm.block_manager
    return not backend.llm.requests and blocks.num_free_blocks == blocks.num_blocks


def test_a_client_that_leaves_mid_stream_stops_its_generation(endless):
    backend = endless.gateway.backend_for("endless")

    async def main():
        async with (
            httpx.AsyncClient(
                base_url=endless.base_url, timeout=60, headers={"x-api-key": endless.key}
            ) as client,
            client.stream(
                "POST",
                "/v1/messages",
                json={
                    "model": "endless",
                    "max_tokens": 1000,
                    "messages": HELLO,
                    "temperature": 0,
                    "stream": True,
                },
            ) as response,
        ):
            deltas = 0
            async for line in response.aiter_lines():
                deltas += line == "event: content_block_delta"
                if deltas == 3:
                    assert backend.llm.requests  # still generating
                    break  # close the connection mid-stream
        for _ in range(200):
            if _engine_idle(backend):
                return True
            await asyncio.sleep(0.05)
        return False

    assert asyncio.run(main())


def test_an_unexpected_failure_still_ends_the_stream_as_anthropic_does():
    async def events():
        yield MessageStart("r", "m", Usage(3), created=0)
        yield BlockStart(0, TextBlock(""))
        yield BlockDelta(0, text="Hel")
        raise EngineDeadError("the engine stopped")

    async def collect(source):
        return [chunk async for chunk in _stream(source, StreamEncoder("msg_1"))]

    chunks = asyncio.run(collect(events()))
    assert chunks[-1].startswith("event: error\n")
    assert '"type":"error","error":{"type":"overloaded_error"' in chunks[-1]
    assert not any("message_stop" in c for c in chunks)

    async def broken():
        yield MessageStart("r", "m", Usage(3), created=0)
        raise RuntimeError("a bug")

    last = asyncio.run(collect(broken()))[-1]
    assert '"error":{"type":"api_error","message":"internal error: RuntimeError"}' in last


def test_a_silent_stream_is_kept_alive_with_pings(monkeypatch):
    monkeypatch.setattr("tenshu.api.anthropic.HEARTBEAT_SECONDS", 0.02)

    async def slow():
        yield MessageStart("r", "m", Usage(3), created=0)
        yield BlockStart(0, TextBlock(""))
        await asyncio.sleep(0.5)  # a long prefill or a slow token: 25 heartbeat intervals
        yield BlockDelta(0, text="Hi")

    async def collect():
        return [chunk async for chunk in _stream(slow(), StreamEncoder("msg_1"))]

    names = [chunk.split("\n")[0] for chunk in asyncio.run(collect())]
    start, delta = (
        names.index("event: content_block_start"),
        names.index("event: content_block_delta"),
    )
    assert names[1] == "event: ping"  # right after message_start
    assert "event: ping" in names[start:delta]


def test_a_repeated_prompt_is_read_from_the_prefix_cache(client):
    system = "You are Mochi, a small cat who lives in the keep of an old castle. " * 8
    counted = client.messages.count_tokens(model=MODEL, system=system, messages=HELLO)
    client.messages.create(model=MODEL, max_tokens=2, system=system, messages=HELLO)
    again = client.messages.create(model=MODEL, max_tokens=2, system=system, messages=HELLO)
    assert again.usage.cache_read_input_tokens > 0
    assert again.usage.input_tokens + again.usage.cache_read_input_tokens == counted.input_tokens


def test_the_sdk_lists_the_chat_models(client):
    models = list(client.models.list())
    assert [m.id for m in models] == [MODEL]  # the embedder cannot take Messages
    assert models[0].type == "model" and models[0].created_at.tzinfo is not None
    assert client.models.retrieve(MODEL).display_name == MODEL
