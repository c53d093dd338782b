"""What is particular to the Anthropic upstream: thinking blocks go back only when Anthropic
signed them (and then exactly as they came), signatures streamed by the upstream reach the
core blocks, and token counts come from /v1/messages/count_tokens when it answers."""

from __future__ import annotations

import json

import pytest

from tenshu.core.events import BlockStart
from tenshu.core.messages import (
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tenshu.core.request import ChatRequest, estimate_tokens
from tenshu.protocols.anthropic import RedactedThinkingBlock
from tests.backends.conftest import (
    FIRST_TOKEN,
    MODEL,
    REST,
    backend_for,
    check_sequence,
    collect,
    head,
    raw_server,
    sse,
)

THINKING = {"type": "enabled", "budget_tokens": 2048}
TOOL = ToolSpec("get_weather", "The weather.", {"type": "object",
                                                "properties": {"city": {"type": "string"}}})


async def reply(writer):
    writer.write(head() + FIRST_TOKEN["anthropic"] + REST["anthropic"])


async def sent(request: ChatRequest) -> dict:
    """The body the upstream received for `request`."""
    async with raw_server(reply) as raw, backend_for("anthropic", raw.url) as backend:
        check_sequence(await collect(backend, request))
    return json.loads(raw.bodies[0])


async def test_unsigned_thinking_is_dropped_and_signed_thinking_goes_back_unchanged():
    signed = ThinkingBlock("ünïcode  thought\n\t\"quoted\" ", signature="EqQBCkgIARAB+/=")
    redacted = RedactedThinkingBlock("", "opaque-redacted-data==")
    messages = [
        Message.of("user", "q1"),
        Message("assistant", [ThinkingBlock("a local model's musing"), TextBlock("a1")]),
        Message.of("user", "q2"),
        Message("assistant", [signed, redacted, TextBlock("a2")]),
        Message.of("user", "q3"),
        Message("assistant", [ThinkingBlock("", None)]),  # nothing left: the turn goes
        Message.of("user", "q4"),
    ]
    request = ChatRequest(MODEL, messages, max_tokens=16)
    body = await sent(request)
    assert [m["content"] for m in body["messages"]] == [
        [{"type": "text", "text": "q1"}],
        [{"type": "text", "text": "a1"}],
        [{"type": "text", "text": "q2"}],
        [{"type": "thinking", "thinking": signed.thinking, "signature": signed.signature},
         {"type": "redacted_thinking", "data": redacted.signature},
         {"type": "text", "text": "a2"}],
        [{"type": "text", "text": "q3"}],
        [{"type": "text", "text": "q4"}],
    ]
    # the caller's request is untouched
    assert len(request.messages) == 7 and len(request.messages[1].content) == 2


def tool_turns(thinking: ThinkingBlock) -> list[Message]:
    call = ToolUseBlock("toolu_1", "get_weather", {"city": "Paris"})
    return [Message.of("user", "weather?"), Message("assistant", [thinking, call]),
            Message("user", [ToolResultBlock("toolu_1", [TextBlock("sunny")])])]


async def test_a_tool_turn_that_lost_its_thinking_is_sent_without_thinking():
    request = ChatRequest(MODEL, tool_turns(ThinkingBlock("plan")), tools=[TOOL],
                          thinking=THINKING, max_tokens=4096)
    body = await sent(request)
    assert "thinking" not in body
    assert [b["type"] for b in body["messages"][1]["content"]] == ["tool_use"]
    assert request.thinking == THINKING


async def test_a_signed_tool_turn_keeps_thinking_on():
    signed = ThinkingBlock("plan", signature="sig")
    body = await sent(ChatRequest(MODEL, tool_turns(signed), tools=[TOOL], thinking=THINKING,
                                  max_tokens=4096))
    assert body["thinking"] == THINKING
    assert body["messages"][1]["content"][0] == {"type": "thinking", "thinking": "plan",
                                                 "signature": "sig"}


async def test_an_earlier_turn_losing_thinking_leaves_thinking_on():
    messages = [*tool_turns(ThinkingBlock("plan")), Message.of("assistant", "done"),
                Message.of("user", "thanks")]
    body = await sent(ChatRequest(MODEL, messages, tools=[TOOL], thinking=THINKING,
                                  max_tokens=4096))
    assert body["thinking"] == THINKING


async def test_streamed_signatures_complete_the_thinking_block():
    start = FIRST_TOKEN["anthropic"].split(b"\n\n")[0] + b"\n\n"
    thinking = sse(
        '{"type":"content_block_start","index":0,'
        '"content_block":{"type":"thinking","thinking":"","signature":""}}',
        '{"type":"content_block_delta","index":0,'
        '"delta":{"type":"thinking_delta","thinking":"hmm"}}',
        '{"type":"content_block_delta","index":0,'
        '"delta":{"type":"signature_delta","signature":"EqQB=="}}',
        '{"type":"content_block_stop","index":0}',
        '{"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        '"usage":{"output_tokens":2}}',
        '{"type":"message_stop"}',
    )

    async def thinking_reply(writer):
        writer.write(head() + start + thinking)

    async with raw_server(thinking_reply) as raw, backend_for("anthropic", raw.url) as backend:
        events = await collect(backend, ChatRequest(MODEL, [Message.of("user", "hi")]))
    check_sequence(events)
    (block_start,) = [e for e in events if isinstance(e, BlockStart)]
    assert block_start.block == ThinkingBlock("", "EqQB==")


# -- count_tokens --------------------------------------------------------------------------------


async def test_count_tokens_asks_the_upstream(upstream):
    request = ChatRequest(MODEL, [Message.of("user", "hello there, how are you today?")])
    async with backend_for("anthropic", upstream.base_url, api_key=upstream.key) as backend:
        counted = await backend.count_tokens(request)
    assert counted > 0

    async def count(writer):
        writer.write(head(200, "application/json") + b'{"input_tokens": 4242}')

    async with raw_server(count) as raw, backend_for("anthropic", raw.url) as backend:
        assert await backend.count_tokens(request) == 4242
    assert raw.heads[0].startswith(b"POST /v1/messages/count_tokens ")
    body = json.loads(raw.bodies[0])
    assert set(body) == {"model", "messages"}


@pytest.mark.parametrize("answer", [
    head(500, "application/json") + b'{"type": "error", "error": {"type": "api_error"}}',
    head(200, "application/json") + b"not json",
])
async def test_count_tokens_falls_back_to_the_estimate(answer):
    async def respond(writer):
        writer.write(answer)

    request = ChatRequest(MODEL, [Message.of("user", "x" * 400)])
    async with raw_server(respond) as raw, backend_for("anthropic", raw.url) as backend:
        assert await backend.count_tokens(request) == estimate_tokens(request) == 100
