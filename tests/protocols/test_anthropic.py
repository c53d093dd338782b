"""protocols/anthropic*.py: parsing Messages requests, encoding events, and both round trips.

Server side: wire request -> ChatRequest; events -> the response body and SSE events. Client
side: ChatRequest -> wire -> ChatRequest, and events -> SSE events -> events, come back unchanged.
"""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from tenshu.core.errors import (
    ContextLengthError,
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
    TenshuError,
)
from tenshu.core.events import (
    BlockDelta,
    BlockStart,
    BlockStop,
    MessageFinish,
    MessageStart,
    TokenLogprob,
    Usage,
)
from tenshu.core.messages import (
    ImageBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tenshu.core.models import ModelInfo
from tenshu.core.request import ChatRequest, ToolChoice
from tenshu.protocols import anthropic as wire
from tenshu.protocols import anthropic_client as client
from tenshu.protocols.anthropic import CountTokensRequest, MessagesRequest, parse_request
from tenshu.protocols.anthropic_client import StreamDecoder
from tenshu.protocols.anthropic_encode import MessageBuilder, StreamEncoder, sse

# What Claude Code matches to tell a context overflow from other errors (its own regex).
CLAUDE_CODE_OVERFLOW = re.compile(r"^prompt is too long: \d+ tokens > \d+ maximum$")


def body(**fields) -> MessagesRequest:
    base = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    return MessagesRequest.model_validate(base | fields)


# -- parsing ------------------------------------------------------------------------------------


def test_a_plain_request_becomes_a_chat_request():
    request = parse_request(
        body(
            stop_sequences=["\n\n"],
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            metadata={"user_id": "ada"},
            stream=True,
        )
    )
    assert request.messages == [Message.of("user", "hi")]
    assert (request.model, request.max_tokens, request.stop) == ("m", 16, ["\n\n"])
    assert (request.temperature, request.top_p, request.top_k) == (0.5, 0.9, 40)
    assert request.stream and request.user == "ada" and request.metadata == {"user_id": "ada"}


@pytest.mark.parametrize(
    "system",
    [
        "Be brief.",
        [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    ],
)
def test_system_as_a_string_or_blocks_becomes_a_leading_system_message(system):
    request = parse_request(body(system=system))
    assert request.messages[0] == Message.of("system", "Be brief.")
    assert request.messages[1].role == "user"


def test_several_system_blocks_stay_separate_blocks():
    request = parse_request(
        body(system=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    )
    assert request.messages[0] == Message("system", [TextBlock("a"), TextBlock("b")])


def test_every_content_block_kind_is_read():
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "snapshot", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "is_error": True,
                    "content": [
                        {"type": "text", "text": "timeout"},
                        {"type": "image", "source": {"type": "url", "url": "https://x/s.png"}},
                    ],
                },
                {"type": "text", "text": "go on"},
            ],
        },
    ]
    user, assistant, results = parse_request(body(messages=messages)).messages
    assert user.content == [
        TextBlock("look"),
        ImageBlock(media_type="image/png", data="iVBORw0KGgo="),
        ImageBlock(url="https://example.com/a.png"),
    ]
    thinking, redacted, call, snapshot = assistant.content
    assert thinking == ThinkingBlock("hmm", "sig")
    assert isinstance(redacted, ThinkingBlock) and redacted.signature == "opaque"
    assert call == ToolUseBlock("toolu_1", "get_weather", {"city": "Paris"})
    assert snapshot == ToolUseBlock("toolu_2", "snapshot", {})
    assert results.content == [
        ToolResultBlock("toolu_1", [TextBlock("sunny")]),
        ToolResultBlock(
            "toolu_2", [TextBlock("timeout"), ImageBlock(url="https://x/s.png")], is_error=True
        ),
        TextBlock("go on"),
    ]


def call(*ids: str) -> dict:
    return {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": i, "name": "f", "input": {}} for i in ids],
    }


def results(*ids: str) -> dict:
    return {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": i, "content": "ok"} for i in ids],
    }


HI = {"role": "user", "content": "hi"}
TEXT = {"role": "user", "content": "and?"}


@pytest.mark.parametrize(
    "messages",
    [
        [HI, call("a", "b"), results("b", "a"), TEXT],
        [HI, call("a", "b"), results("a"), results("b")],  # consecutive user turns are one
        [HI, call("a")],  # a last assistant turn waits for nothing
        [HI, {"role": "assistant", "content": "calling"}, call("a"), results("a")],
    ],
)
def test_tool_results_that_answer_the_turn_before_are_accepted(messages):
    parse_request(body(messages=messages))


@pytest.mark.parametrize(
    ("messages", "field", "message"),
    [
        (
            [results("a")],
            "messages.0.content.0",
            "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: a. "
            "Each `tool_result` block must have a corresponding `tool_use` block in the previous "
            "message.",
        ),
        (
            [HI, call("a"), results("a", "z")],
            "messages.2.content.1",
            "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: z. "
            "Each `tool_result` block must have a corresponding `tool_use` block in the previous "
            "message.",
        ),
        (  # the result of an older call is not an answer to this turn
            [HI, call("a"), results("a"), call("b"), results("b"), TEXT, results("a")],
            "messages.6.content.0",
            None,
        ),
        (
            [HI, call("a", "b", "c"), results("b"), TEXT],
            "messages.1",
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately "
            "after: a, c. Each `tool_use` block must have a corresponding `tool_result` block in "
            "the next message.",
        ),
        ([HI, call("a"), TEXT, results("a")], "messages.1", None),
        (  # the results must come first in the turn
            [
                HI,
                call("a"),
                {"role": "user", "content": [{"type": "text", "text": "here"}]},
                results("a"),
            ],
            "messages.1",
            None,
        ),
    ],
)
def test_tool_results_that_answer_no_call_before_them_are_refused(messages, field, message):
    with pytest.raises(InvalidRequestError) as err:
        parse_request(body(messages=messages))
    assert err.value.field == field
    if message:
        assert str(err.value) == message
    assert wire.error_body(err.value)["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, ToolChoice("auto")),
        ({"type": "any"}, ToolChoice("required")),
        ({"type": "none"}, ToolChoice("none")),
        ({"type": "tool", "name": "f"}, ToolChoice("tool", "f")),
        ({"type": "auto", "disable_parallel_tool_use": True}, ToolChoice("auto", parallel=False)),
    ],
)
def test_tools_and_tool_choice(choice, expected):
    tools = [
        {
            "name": "f",
            "description": "does f",
            "input_schema": {"type": "object", "properties": {"x": {"type": "integer"}}},
        }
    ]
    request = parse_request(body(tools=tools, tool_choice=choice))
    assert request.tools == [ToolSpec("f", "does f", tools[0]["input_schema"])]
    assert request.tool_choice == expected


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
        (
            {"tool_choice": {"type": "tool", "name": "g"}, "tools": [{"name": "f"}]},
            "tool_choice.name",
        ),
        ({"tool_choice": {"type": "any"}}, "tool_choice"),
    ],
)
def test_a_tool_choice_that_cannot_be_met_is_refused_naming_the_field(fields, field):
    with pytest.raises(InvalidRequestError) as err:
        parse_request(body(**fields))
    assert err.value.field == field


def test_a_tool_without_a_schema_takes_no_input():
    request = parse_request(body(tools=[{"name": "now"}]))
    assert request.tools == [ToolSpec("now", "", {"type": "object", "properties": {}})]


def test_unknown_fields_and_thinking_are_accepted():
    request = parse_request(
        body(
            thinking={"type": "adaptive", "display": "omitted"},
            context_management={"edits": []},
            output_config={"effort": "high"},
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "hi",
                            "cache_control": {"type": "ephemeral"},
                            "citations": None,
                        }
                    ],
                }
            ],
        )
    )
    assert request.thinking == {"type": "adaptive", "display": "omitted"}
    assert request.messages == [Message.of("user", "hi")]


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.mark.parametrize(
    "fields",
    [
        {"output_config": {"effort": "low", "format": {"type": "json_schema", "schema": SCHEMA}}},
        {"output_format": {"type": "json_schema", "schema": SCHEMA}},  # the beta's name
    ],
)
def test_a_structured_output_format_becomes_the_response_format(fields):
    assert parse_request(body(**fields)).response_format == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": SCHEMA},
    }


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"output_config": {"format": {"type": "json_schema"}}}, "output_config.format.schema"),
        ({"output_config": {"format": {"type": "xml"}}}, "output_config.format.type"),
        ({"output_format": {"type": "json_schema", "schema": "{}"}}, "output_format.schema"),
    ],
)
def test_a_bad_output_format_is_refused_naming_the_field(fields, field):
    with pytest.raises(InvalidRequestError) as err:
        parse_request(body(**fields))
    assert err.value.field == field


def test_max_tokens_is_required_for_messages_but_not_for_counting():
    with pytest.raises(ValidationError, match="max_tokens"):
        MessagesRequest.model_validate({"model": "m", "messages": []})
    counted = parse_request(
        CountTokensRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "system": "s"}
        )
    )
    assert counted.max_tokens is None and counted.messages[0].role == "system"


# -- the response -------------------------------------------------------------------------------


def events(stop_reason="end_turn", stop_sequence=None) -> list:
    """A reply with reasoning, text and a tool call, as a backend streams it."""
    usage = Usage(input_tokens=40, output_tokens=12, cached_tokens=32)
    return [
        MessageStart("backend-1", "tiny", Usage(40, 0, 32), created=1700000000),
        BlockStart(0, ThinkingBlock("", signature="sig")),
        BlockDelta(0, text="Let me "),
        BlockDelta(0, text="think."),
        BlockStop(0),
        BlockStart(1, TextBlock("")),
        BlockDelta(1, text="Hello"),
        BlockDelta(1, text="", logprobs=[TokenLogprob("x", -0.1)]),  # nothing to send
        BlockDelta(1, text=", world"),
        BlockStop(1),
        BlockStart(2, ToolUseBlock("toolu_9", "get_weather")),
        BlockDelta(2, partial_json='{"city": '),
        BlockDelta(2, partial_json='"Paris"}'),
        BlockStop(2),
        MessageFinish(stop_reason, usage, stop_sequence=stop_sequence),
    ]


def test_the_response_body_has_anthropics_shape():
    builder = MessageBuilder("msg_1")
    for event in events("tool_use"):
        builder.add(event)
    assert builder.message() == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "tiny",
        "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
            {"type": "text", "text": "Hello, world"},
            {
                "type": "tool_use",
                "id": "toolu_9",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        # input_tokens are the uncached part; the three input counts add up to the prompt
        "usage": {
            "input_tokens": 8,
            "cache_read_input_tokens": 32,
            "cache_creation_input_tokens": 0,
            "output_tokens": 12,
        },
    }


def test_the_stream_is_anthropics_event_sequence():
    encoder = StreamEncoder("msg_1")
    sent = [item for event in events("stop_sequence", "\n\n") for item in encoder.encode(event)]
    names = [name for name, _ in sent]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",  # the signature goes last
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in sent)
    start = sent[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == 8 and start["usage"]["output_tokens"] == 0
    deltas = [data["delta"] for name, data in sent if name == "content_block_delta"]
    assert [d["type"] for d in deltas] == [
        "thinking_delta",
        "thinking_delta",
        "signature_delta",
        "text_delta",
        "text_delta",
        "input_json_delta",
        "input_json_delta",
    ]
    assert sent[10][1]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_9",
        "name": "get_weather",
        "input": {},
    }
    finish = sent[-2][1]
    assert finish["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "\n\n"}
    assert finish["usage"]["output_tokens"] == 12


def test_the_anthropic_sdk_reads_tool_calls_from_the_stream_and_the_body():
    pytest.importorskip("anthropic")
    from anthropic.lib.streaming._messages import accumulate_event
    from anthropic.types import Message as SDKMessage
    from anthropic.types import RawMessageStreamEvent
    from pydantic import TypeAdapter

    reply = events("tool_use")
    reply[10:14] = [  # two calls in parallel: the weather, then a second one
        *reply[10:14],
        BlockStart(3, ToolUseBlock("toolu_10", "get_time")),
        BlockDelta(3, partial_json='{"tz": "CET"}'),
        BlockStop(3),
    ]
    read, encoder = TypeAdapter(RawMessageStreamEvent), StreamEncoder("msg_1")
    snapshot, buffers = None, {}
    for event in reply:
        for _, data in encoder.encode(event):
            snapshot = accumulate_event(
                event=read.validate_python(data), current_snapshot=snapshot, json_bufs=buffers
            )
    builder = MessageBuilder("msg_1")
    for event in reply:
        builder.add(event)
    whole = SDKMessage.model_validate(builder.message())
    for message in (snapshot, whole):
        assert message.stop_reason == "tool_use"
        assert [b.type for b in message.content] == ["thinking", "text", "tool_use", "tool_use"]
        assert [(b.id, b.name, b.input) for b in message.content[2:]] == [
            ("toolu_9", "get_weather", {"city": "Paris"}),
            ("toolu_10", "get_time", {"tz": "CET"}),
        ]


def test_a_call_whose_input_came_whole_streams_it_before_its_stop():
    encoder = StreamEncoder("msg_1")
    encoder.encode(MessageStart("r", "tiny", Usage(), created=0))
    start = encoder.encode(BlockStart(0, ToolUseBlock("toolu_1", "f", {"a": 1})))
    assert start[0][1]["content_block"]["input"] == {}
    assert [data for _, data in encoder.encode(BlockStop(0))] == [
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '{"a": 1}'},
        },
        {"type": "content_block_stop", "index": 0},
    ]


def test_a_call_whose_arguments_are_not_an_object_is_the_servers_error():
    builder = MessageBuilder("msg_1")
    for event in [
        MessageStart("r", "tiny", Usage(), created=0),
        BlockStart(0, ToolUseBlock("toolu_1", "f")),
        BlockDelta(0, partial_json='{"a": '),
    ]:
        builder.add(event)
    with pytest.raises(TenshuError, match="not a JSON object") as err:
        builder.add(BlockStop(0))
    assert err.value.status == 500


def test_sse_text_names_each_event():
    text = sse(("ping", {"type": "ping"}))
    assert text == 'event: ping\ndata: {"type":"ping"}\n\n'


# -- round trips (the client direction) ---------------------------------------------------------


def test_a_chat_request_survives_the_wire():
    request = ChatRequest(
        model="claude-x",
        messages=[
            Message("system", [TextBlock("Be brief."), TextBlock("Be kind.")]),
            Message(
                "user",
                [
                    TextBlock("weather?"),
                    ImageBlock(url="https://x/y.png"),
                    ImageBlock(media_type="image/jpeg", data="/9j/"),
                ],
            ),
            Message("assistant", [ThinkingBlock("plan", "sig"), ToolUseBlock("t1", "w", {"a": 1})]),
            Message("user", [ToolResultBlock("t1", [TextBlock("22C")], is_error=True)]),
        ],
        max_tokens=100,
        temperature=0.2,
        top_p=0.8,
        top_k=5,
        stop=["END"],
        stream=True,
        tools=[ToolSpec("w", "weather", {"type": "object", "properties": {}})],
        tool_choice=ToolChoice("tool", "w", parallel=False),
        thinking={"type": "enabled", "budget_tokens": 1024},
        user="ada",
        metadata={"user_id": "ada"},
    )
    sent = client.encode_request(request)
    assert sent["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Be kind."},
    ]
    assert sent["tool_choice"] == {"type": "tool", "name": "w", "disable_parallel_tool_use": True}
    assert parse_request(MessagesRequest.model_validate(json.loads(json.dumps(sent)))) == request


def test_redacted_thinking_goes_back_as_it_came():
    request = parse_request(
        body(
            messages=[
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "redacted_thinking", "data": "opaque"},
                        {"type": "thinking", "thinking": "", "signature": "s"},
                    ],
                },
            ]
        )
    )
    assert client.encode_request(request)["messages"][1]["content"] == [
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "thinking", "thinking": "", "signature": "s"},
    ]


def test_the_client_direction_refuses_what_anthropic_cannot_do():
    with pytest.raises(InvalidRequestError):
        client.encode_request(ChatRequest(model="m", prompt="raw text"))
    with pytest.raises(InvalidRequestError):
        client.encode_request(ChatRequest(model="m", messages=[Message.of("user", "x")], n=2))
    assert (
        client.encode_request(
            ChatRequest(model="m", messages=[Message.of("user", "x")]), default_max_tokens=77
        )["max_tokens"]
        == 77
    )


def test_stream_events_survive_the_wire():
    encoder, decoder = StreamEncoder("msg_1"), StreamDecoder(created=1700000000)
    back = []
    for event in events("stop_sequence", "\n\n"):
        for item in encoder.encode(event):
            name_line, data_line, _, _ = sse(item).split("\n")
            data = json.loads(data_line.removeprefix("data: "))
            assert name_line == f"event: {data['type']}"
            back += decoder.feed(data)
    expected = [
        e
        for e in events("stop_sequence", "\n\n")
        if not (isinstance(e, BlockDelta) and not e.text and not e.partial_json)
    ]
    expected[0] = MessageStart("msg_1", "tiny", Usage(40, 0, 32), created=1700000000)
    assert back == expected


def test_a_response_body_survives_the_wire():
    builder = MessageBuilder("msg_1")
    for event in events("tool_use"):
        builder.add(event)
    again = MessageBuilder("msg_1")
    for event in client.decode_message(json.loads(json.dumps(builder.message()))):
        again.add(event)
    assert again.message() == builder.message()


def test_a_decoded_stream_error_is_the_matching_core_error():
    decoder = StreamDecoder()
    with pytest.raises(OverloadedError):
        decoder.feed({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    overflow = client.error_from_wire(
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "prompt is too long: 9 tokens > 5 maximum",
            },
        }
    )
    assert isinstance(overflow, ContextLengthError)
    assert decoder.feed({"type": "ping"}) == []


# -- errors and models --------------------------------------------------------------------------


def test_a_prompt_that_does_not_fit_reads_as_anthropic_words_it():
    exc = ContextLengthError(
        "the prompt has 609 tokens, but tenshu-tiny's context window is 512 "
        "tokens and must also hold the reply; shorten the conversation",
        field="messages",
    )
    message = wire.error_body(exc)["error"]["message"]
    assert message == "prompt is too long: 609 tokens > 511 maximum"
    assert CLAUDE_CODE_OVERFLOW.match(message)
    budget = ContextLengthError(
        "max_tokens 900 plus the prompt's 20 tokens exceeds the KV cache", field="max_tokens"
    )
    assert wire.error_body(budget)["error"]["message"] == str(budget)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (InvalidRequestError("bad"), "invalid_request_error"),
        (ModelNotFoundError("x", ["tiny"]), "not_found_error"),
        (OverloadedError("busy"), "rate_limit_error"),
        (TenshuError("boom"), "api_error"),
    ],
)
def test_error_bodies(exc, kind):
    assert wire.error_body(exc) == {"type": "error", "error": {"type": kind, "message": str(exc)}}


def infos() -> list[ModelInfo]:
    return [
        ModelInfo("a", 4096, created=1700000000),
        ModelInfo("b", 512, created=0),
        ModelInfo("embedder", 256, created=0, kind="embedding"),
        ModelInfo("c", 8, created=0),
    ]


def test_the_model_list_has_anthropics_shape():
    listing = wire.encode_model_list(infos())
    assert [m["id"] for m in listing["data"]] == ["a", "b", "c"]  # embedders cannot chat
    assert listing["data"][0] == {
        "type": "model",
        "id": "a",
        "display_name": "a",
        "created_at": "2023-11-14T22:13:20Z",
        "lifecycle": "active",
        "max_input_tokens": 4095,
        "max_tokens": 4095,
    }
    assert (listing["has_more"], listing["first_id"], listing["last_id"]) == (False, "a", "c")


def test_the_model_list_pages():
    first = wire.encode_model_list(infos(), limit=2)
    assert ([m["id"] for m in first["data"]], first["has_more"]) == (["a", "b"], True)
    rest = wire.encode_model_list(infos(), limit=2, after_id=first["last_id"])
    assert ([m["id"] for m in rest["data"]], rest["has_more"]) == (["c"], False)
    back = wire.encode_model_list(infos(), limit=1, before_id="c")
    assert ([m["id"] for m in back["data"]], back["has_more"]) == (["b"], True)
