"""protocols/anthropic*.py: parsing Messages requests, encoding events, and both round trips.

Server side: wire request -> ChatRequest; events -> the response body and SSE events. Client
side: ChatRequest -> wire -> ChatRequest, and events -> SSE events -> events, come back unchanged.
"""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from tenshu.backends.base import ModelInfo
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
                    "content": [{"type": "text", "text": "timeout"}],
                },
            ],
        },
    ]
    user, assistant, results = parse_request(body(messages=messages)).messages
    assert user.content == [
        TextBlock("look"),
        ImageBlock(media_type="image/png", data="iVBORw0KGgo="),
        ImageBlock(url="https://example.com/a.png"),
    ]
    thinking, redacted, call = assistant.content
    assert thinking == ThinkingBlock("hmm", "sig")
    assert isinstance(redacted, ThinkingBlock) and redacted.signature == "opaque"
    assert call == ToolUseBlock("toolu_1", "get_weather", {"city": "Paris"})
    assert results.content == [
        ToolResultBlock("toolu_1", [TextBlock("sunny")]),
        ToolResultBlock("toolu_2", [TextBlock("timeout")], is_error=True),
    ]


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


def test_a_named_tool_choice_without_a_name_is_refused_naming_the_field():
    with pytest.raises(InvalidRequestError) as err:
        parse_request(body(tool_choice={"type": "tool"}))
    assert err.value.field == "tool_choice.name"


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
