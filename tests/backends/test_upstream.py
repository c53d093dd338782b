"""The upstream backends, each protocol against a real tenshu server on loopback: streamed text
and tool calls come back as the core event sequence, and every way an upstream can fail (wrong
key, unknown model, nothing listening, silence, a cut stream, rate limits, quota, overload)
is one core error that says what happened."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from tenshu.backends.upstream import Timeouts
from tenshu.backends.upstreams import upstream_backend
from tenshu.core.errors import (
    ContextLengthError,
    InvalidRequestError,
    OverloadedError,
    QuotaExceededError,
    ShuttingDownError,
    UpstreamError,
    UpstreamTimeoutError,
)
from tenshu.core.events import BlockDelta, BlockStart, BlockStop, MessageStart
from tenshu.core.messages import (
    Message,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tenshu.core.request import ChatRequest, ToolChoice, estimate_tokens
from tests.backends.conftest import (
    FAST,
    FIRST_TOKEN,
    KEEPALIVE,
    KEY_ENV,
    MODEL,
    PROTOCOLS,
    REST,
    backend_for,
    check_sequence,
    collect,
    free_port,
    head,
    raw_server,
    sse,
)

WEATHER = ToolSpec("get_weather", "The current weather in a city.", {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 16},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
})
ASK = [Message.of("user", "What's the weather in Paris?")]
each = pytest.mark.parametrize("protocol", PROTOCOLS)


def hello(max_tokens: int = 8, **kwargs) -> ChatRequest:
    return ChatRequest(MODEL, [Message.of("user", "hello")], max_tokens=max_tokens,
                       temperature=0.0, **kwargs)


# -- replies ------------------------------------------------------------------------------------


@each
async def test_a_streamed_reply_is_the_core_event_sequence(upstream, protocol):
    async with backend_for(protocol, upstream.base_url, api_key=upstream.key) as backend:
        request = hello()
        events = await collect(backend, request)
        assert backend.in_flight == 0
    finish = check_sequence(events)
    assert events[0].model == MODEL and events[0].created > 0
    assert finish.stop_reason in ("end_turn", "max_tokens")
    assert finish.usage.input_tokens > 0 and 0 < finish.usage.output_tokens <= 8
    assert all(isinstance(e.block, TextBlock) for e in events if isinstance(e, BlockStart))
    # the caller's request is left as it was sent
    assert request.model == MODEL and request.stream is False


@each
async def test_a_forced_tool_call_validates_and_the_result_goes_back(upstream, protocol):
    async with backend_for(protocol, upstream.base_url, api_key=upstream.key) as backend:
        first = ChatRequest(MODEL, list(ASK), tools=[WEATHER], max_tokens=300, temperature=1.0,
                            seed=3, tool_choice=ToolChoice("tool", "get_weather"))
        events = await collect(backend, first)
        finish = check_sequence(events)
        assert finish.stop_reason == "tool_use"
        (start,) = [e for e in events if isinstance(e, BlockStart)]
        assert isinstance(start.block, ToolUseBlock) and start.block.name == "get_weather"
        assert start.block.id
        (stop,) = [e for e in events if isinstance(e, BlockStop)]
        jsonschema.validate(stop.input, WEATHER.parameters)
        streamed = "".join(e.partial_json for e in events if isinstance(e, BlockDelta))
        assert streamed  # the arguments came as deltas too

        call = ToolUseBlock(start.block.id, "get_weather", stop.input)
        result = ToolResultBlock(call.id, [TextBlock(f"{stop.input['city']}: sunny, 22 C")])
        second = ChatRequest(MODEL, [*ASK, Message("assistant", [call]),
                                     Message("user", [result])],
                             tools=[WEATHER], max_tokens=8, temperature=0.0)
        after = check_sequence(await collect(backend, second))
    # the call and its result reached the model: the prompt grew
    assert after.usage.input_tokens > finish.usage.input_tokens


@pytest.mark.parametrize("protocol", ["openai", "ollama"])
async def test_a_completion_prompt_goes_to_the_completion_endpoint(upstream, protocol):
    async with backend_for(protocol, upstream.base_url, api_key=upstream.key) as backend:
        events = await collect(backend, ChatRequest(MODEL, prompt="Once upon a time",
                                                    max_tokens=8, temperature=0.0))
    finish = check_sequence(events)
    assert finish.usage.input_tokens > 0 and 0 < finish.usage.output_tokens <= 8


async def test_anthropic_has_no_completions():
    async with backend_for("anthropic", "http://127.0.0.1:9") as backend:
        with pytest.raises(InvalidRequestError, match="no completions"):
            await collect(backend, ChatRequest(MODEL, prompt="Once upon a time"))
        assert backend.in_flight == 0


@each
async def test_a_prompt_too_long_is_the_clients_error(upstream, protocol):
    async with backend_for(protocol, upstream.base_url, api_key=upstream.key) as backend:
        words = " ".join(["hello"] * 5000)
        with pytest.raises(InvalidRequestError) as err:
            await collect(backend, ChatRequest(MODEL, [Message.of("user", words)], max_tokens=8))
    assert not isinstance(err.value, UpstreamError)
    if protocol != "ollama":  # Ollama's errors carry no kind, only a message
        assert isinstance(err.value, ContextLengthError)


# -- errors from a real server ------------------------------------------------------------------


@each
async def test_a_wrong_key_names_the_variable_it_came_from(upstream, protocol):
    async with backend_for(protocol, upstream.base_url, api_key="sk-wrong") as backend:
        with pytest.raises(UpstreamError) as err:
            await collect(backend, hello())
    assert err.value.status == 502 and KEY_ENV in str(err.value)


@each
async def test_an_unknown_upstream_model_names_it(upstream, protocol):
    async with backend_for(protocol, upstream.base_url, api_key=upstream.key,
                           upstream_model="no-such-model") as backend:
        with pytest.raises(UpstreamError) as err:
            await collect(backend, hello())
    assert err.value.status == 502 and "no-such-model" in str(err.value)


@each
async def test_nothing_listening_is_an_upstream_error(protocol):
    url = f"http://127.0.0.1:{free_port()}"
    async with backend_for(protocol, url) as backend:
        with pytest.raises(UpstreamError, match="cannot reach qwen") as err:
            await collect(backend, hello())
        assert backend.in_flight == 0
    assert not isinstance(err.value, UpstreamTimeoutError)


# -- failures on demand, from a raw server ------------------------------------------------------


async def never(writer):
    await asyncio.Event().wait()


@each
async def test_no_first_token_in_time(protocol):
    async with raw_server(never) as raw, backend_for(protocol, raw.url, timeouts=FAST) as backend:
        with pytest.raises(UpstreamTimeoutError, match="first_token") as err:
            await collect(backend, hello())
    assert "qwen" in str(err.value) and err.value.status == 504


@each
async def test_headers_and_keepalives_without_a_token_are_still_no_first_token(protocol):
    async def keepalive(writer):
        writer.write(head())
        while True:
            writer.write(KEEPALIVE[protocol])
            await writer.drain()
            await asyncio.sleep(0.05)

    async with raw_server(keepalive) as raw, \
            backend_for(protocol, raw.url, timeouts=FAST) as backend:
        with pytest.raises(UpstreamTimeoutError, match="first_token"):
            await collect(backend, hello())


@each
async def test_silence_after_the_first_token_is_the_idle_timeout(protocol):
    """Keep-alives are not events: a stream that only pings is silent."""

    async def one_token_then_pings(writer):
        writer.write(head() + FIRST_TOKEN[protocol])
        while True:
            writer.write(KEEPALIVE[protocol])
            await writer.drain()
            await asyncio.sleep(0.05)

    seen = []
    async with raw_server(one_token_then_pings) as raw, \
            backend_for(protocol, raw.url, timeouts=FAST) as backend:
        with pytest.raises(UpstreamTimeoutError, match="idle"):
            async for event in backend.chat(hello()):
                seen.append(event)
    assert [e.text for e in seen if isinstance(e, BlockDelta)] == ["hi"]


@each
async def test_a_slow_reader_does_not_time_out_the_upstream(protocol):
    """Only waiting on the upstream is timed: time the consumer spends on an event is not."""

    async def whole(writer):
        writer.write(head() + FIRST_TOKEN[protocol] + REST[protocol])

    timeouts = Timeouts(first_token=0.2, idle=0.2)
    async with raw_server(whole) as raw, backend_for(protocol, raw.url, timeouts=timeouts) as b:
        events = []
        async for event in b.chat(hello()):
            events.append(event)
            if len(events) <= 2:  # the start, then content: each held past its timeout
                await asyncio.sleep(0.3)
    check_sequence(events)


@each
async def test_a_stream_cut_before_its_end_is_an_upstream_error(protocol):
    async def partial(writer):
        writer.write(head() + FIRST_TOKEN[protocol])

    async with raw_server(partial) as raw, backend_for(protocol, raw.url, timeouts=FAST) as backend:
        with pytest.raises(UpstreamError, match="ended the stream before the reply was complete"):
            await collect(backend, hello())


@each
async def test_a_broken_chunked_body_is_an_upstream_error(protocol):
    async def broken(writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n"
                     + f"{len(FIRST_TOKEN[protocol]):x}\r\n".encode() + FIRST_TOKEN[protocol]
                     + b"\r\n40\r\nhalf a chunk")

    async with raw_server(broken) as raw, backend_for(protocol, raw.url, timeouts=FAST) as backend:
        with pytest.raises(UpstreamError, match="ended the stream"):
            await collect(backend, hello())


@each
async def test_a_whole_reply_from_the_raw_server_parses(protocol):
    async def whole(writer):
        writer.write(head() + FIRST_TOKEN[protocol] + REST[protocol])

    async with raw_server(whole) as raw, backend_for(protocol, raw.url, timeouts=FAST) as backend:
        events = await collect(backend, hello())
    finish = check_sequence(events)
    assert "".join(e.text for e in events if isinstance(e, BlockDelta)) == "hi"
    assert (finish.usage.input_tokens, finish.usage.output_tokens) == (3, 1)


@each
async def test_an_unreadable_reply_is_an_upstream_error(protocol):
    async def garbage(writer):
        writer.write(head() + (b"data: {not json\n\n" if protocol != "ollama" else b"{not json\n"))

    async with raw_server(garbage) as raw, backend_for(protocol, raw.url, timeouts=FAST) as backend:
        with pytest.raises(UpstreamError, match="cannot read"):
            await collect(backend, hello())


RATE_LIMITED = {
    "openai": '{"error": {"message": "Rate limit reached", "type": "requests", '
              '"code": "rate_limit_exceeded"}}',
    "anthropic": '{"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}',
    "ollama": '{"error": "too many requests"}',
}


@each
async def test_429_is_overloaded_with_the_servers_retry_after(protocol):
    async def limited(writer):
        writer.write(head(429, "application/json", "retry-after: 7\r\n")
                     + RATE_LIMITED[protocol].encode())

    async with raw_server(limited) as raw, backend_for(protocol, raw.url, timeouts=FAST) as backend:
        with pytest.raises(OverloadedError) as err:
            await collect(backend, hello())
    assert type(err.value) is OverloadedError and err.value.retry_after == 7


@each
async def test_retry_after_may_be_a_date(protocol):
    async def limited(writer):
        writer.write(head(429, "application/json",
                          "retry-after: Wed, 21 Oct 2015 07:28:00 GMT\r\n")
                     + RATE_LIMITED[protocol].encode())

    async with raw_server(limited) as raw, backend_for(protocol, raw.url, timeouts=FAST) as backend:
        with pytest.raises(OverloadedError) as err:
            await collect(backend, hello())
    assert err.value.retry_after == 1  # a date in the past: retry now


QUOTA = {  # how each says that waiting will not help
    "openai": (429, '{"error": {"message": "You exceeded your current quota", '
                    '"type": "insufficient_quota", "code": "insufficient_quota"}}'),
    "anthropic": (400, '{"type": "error", "error": {"type": "invalid_request_error", '
                       '"message": "Your credit balance is too low to access the API."}}'),
    "ollama": (402, '{"error": "payment required"}'),
}


@each
async def test_quota_and_billing_are_quota_exceeded(protocol):
    status, body = QUOTA[protocol]

    async def broke(writer):
        writer.write(head(status, "application/json") + body.encode())

    async with raw_server(broke) as raw, backend_for(protocol, raw.url, timeouts=FAST) as backend:
        with pytest.raises(QuotaExceededError, match="quota or billing"):
            await collect(backend, hello())


@pytest.mark.parametrize(("status", "expected"), [(529, 503), (500, 500), (503, 503)])
@each
async def test_server_errors_are_upstream_errors_with_their_status(protocol, status, expected):
    async def failing(writer):
        writer.write(head(status, "application/json")
                     + b'{"type": "error", "error": {"type": "overloaded_error", '
                       b'"message": "Overloaded"}}')

    async with raw_server(failing) as raw, backend_for(protocol, raw.url, timeouts=FAST) as backend:
        with pytest.raises(UpstreamError) as err:
            await collect(backend, hello())
    assert err.value.status == expected and str(status) in str(err.value)


@each
async def test_413_is_request_too_large(protocol):
    async def too_large(writer):
        writer.write(head(413, "text/plain") + b"too large")

    async with raw_server(too_large) as raw, backend_for(protocol, raw.url) as backend:
        with pytest.raises(InvalidRequestError) as err:
            await collect(backend, hello())
    assert err.value.status == 413


@each
async def test_abort_all_ends_streams_in_flight(protocol):
    async def one_token(writer):
        writer.write(head() + FIRST_TOKEN[protocol])
        await asyncio.Event().wait()

    async with raw_server(one_token) as raw, backend_for(protocol, raw.url) as backend:
        stream = backend.chat(hello())
        assert isinstance(await anext(stream), MessageStart)
        assert backend.stats().running == 1
        reading = asyncio.ensure_future(collect_rest(stream))
        await asyncio.sleep(0.05)
        await backend.abort_all()
        with pytest.raises(ShuttingDownError):
            await reading
        assert backend.stats().running == 0


async def collect_rest(stream):
    return [event async for event in stream]


@each
async def test_the_request_goes_out_streamed_under_the_upstream_name(protocol):
    async def whole(writer):
        writer.write(head() + FIRST_TOKEN[protocol] + REST[protocol])

    async with raw_server(whole) as raw, \
            backend_for(protocol, raw.url, upstream_model="big-model", api_key="sk-1") as backend:
        await collect(backend, hello())
    body = json.loads(raw.bodies[0])
    assert body["model"] == "big-model" and body["stream"] is True
    header = raw.heads[0].decode().lower()
    assert ("x-api-key: sk-1" if protocol == "anthropic" else "authorization: bearer sk-1") in header


@each
async def test_stats_and_count_tokens_without_an_upstream(protocol):
    backend = upstream_backend(protocol, "remote", "http://127.0.0.1:9", max_concurrency=3,
                               context_window=8192, timeouts=Timeouts(connect=0.5))
    try:
        assert backend.info.name == "remote" and backend.info.owned_by == protocol
        assert backend.info.context_window == 8192 and backend.upstream_model == "remote"
        assert backend.stats().max_running == 3 and backend.prefix_cache_counts() == (0, 0)
        request = ChatRequest("remote", [Message.of("user", "x" * 40)])
        assert await backend.count_tokens(request) == estimate_tokens(request) == 10
    finally:
        backend.close()
        await backend.aclose()


def test_estimate_tokens_counts_tools_and_results():
    plain = ChatRequest("m", [Message.of("user", "abcd" * 10)])
    with_tools = ChatRequest("m", plain.messages, tools=[WEATHER])
    assert estimate_tokens(plain) == 10
    assert estimate_tokens(with_tools) > estimate_tokens(plain) + 20
    assert estimate_tokens(ChatRequest("m", prompt=[1, 2, 3])) == 3
    assert estimate_tokens(ChatRequest("m", prompt="abcde")) == 2


@each
async def test_in_stream_errors_are_core_errors(protocol):
    in_stream = {
        "openai": sse('{"error": {"message": "the GPU fell over", "type": "server_error"}}'),
        "anthropic": sse('{"type": "error", "error": {"type": "overloaded_error", '
                         '"message": "Overloaded"}}'),
        "ollama": b'{"error": "the GPU fell over"}\n',
    }[protocol]

    async def failing(writer):
        writer.write(head() + FIRST_TOKEN[protocol] + in_stream)

    async with raw_server(failing) as raw, backend_for(protocol, raw.url, timeouts=FAST) as backend:
        with pytest.raises((UpstreamError, OverloadedError)) as err:
            await collect(backend, hello())
    if protocol == "anthropic":
        assert type(err.value) is OverloadedError
    else:
        assert type(err.value) is UpstreamError and "GPU fell over" in str(err.value)
