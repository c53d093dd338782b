"""The Anthropic Messages wire format, server side out: ChatEvents -> the response and SSE.

`MessageBuilder` folds a finished request's events into the response body; `StreamEncoder` turns
events into Anthropic's SSE events as they arrive (`sse` writes one as text). Usage follows
Anthropic's accounting: `input_tokens` are the prompt tokens NOT served from the prefix cache,
`cache_read_input_tokens` those that were; the three input counts add up to the whole prompt.
The response models document these shapes in /openapi.json.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel

from tenshu.core.errors import TenshuError
from tenshu.core.events import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatEvent,
    MessageFinish,
    MessageStart,
    Usage,
)
from tenshu.core.messages import (
    Block,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    loads_arguments,
)
from tenshu.protocols.anthropic import RedactedThinkingBlock, error_body


def encode_usage(usage: Usage) -> dict:
    return {
        "input_tokens": usage.input_tokens - usage.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
    }


def encode_block(block: Block) -> dict:
    """A content block as Anthropic writes it (in responses and in requests)."""
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ToolUseBlock):
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    if isinstance(block, ThinkingBlock):
        if isinstance(block, RedactedThinkingBlock):
            return {"type": "redacted_thinking", "data": block.signature}
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature or ""}
    if isinstance(block, ImageBlock):
        source = (
            {"type": "url", "url": block.url}
            if block.url
            else {"type": "base64", "media_type": block.media_type, "data": block.data}
        )
        return {"type": "image", "source": source}
    return {
        "type": "tool_result",
        "tool_use_id": block.tool_use_id,
        "content": [encode_block(b) for b in block.content],
        "is_error": block.is_error,
    }


class MessageBuilder:
    """Folds one request's ChatEvents into the non-streaming response body."""

    def __init__(self, message_id: str):
        self.id = message_id
        self.model = ""
        self.blocks: dict[int, Block] = {}
        self.json: dict[int, str] = {}  # tool_use index -> its arguments so far
        self.finish: MessageFinish | None = None

    def add(self, event: ChatEvent) -> None:
        if isinstance(event, MessageStart):
            self.model = event.model
        elif isinstance(event, BlockStart):
            self.blocks[event.index] = _copy(event.block)
        elif isinstance(event, BlockDelta):
            block = self.blocks[event.index]
            if isinstance(block, TextBlock):
                block.text += event.text
            elif isinstance(block, ThinkingBlock):
                block.thinking += event.text
            elif event.partial_json:
                self.json[event.index] = self.json.get(event.index, "") + event.partial_json
        elif isinstance(event, BlockStop):
            block = self.blocks[event.index]
            if isinstance(block, ToolUseBlock) and event.input is not None:
                block.input = event.input
            elif isinstance(block, ToolUseBlock) and self.json.get(event.index):
                block.input = _input(block, self.json[event.index])
        elif isinstance(event, MessageFinish):
            self.finish = event

    def message(self) -> dict:
        finish = self.finish or MessageFinish("end_turn", Usage())
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [encode_block(self.blocks[i]) for i in sorted(self.blocks)],
            "stop_reason": finish.stop_reason,
            "stop_sequence": finish.stop_sequence,
            "usage": encode_usage(finish.usage),
        }


def _input(block: ToolUseBlock, arguments: str) -> dict:
    """A tool call's arguments as the `input` object Anthropic clients expect."""
    try:
        value = loads_arguments(arguments)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        # the backend's fault, not the client's: a 500 that says what went wrong
        raise TenshuError(
            f"the model's call of tool {block.name!r} has arguments that are not a JSON object: "
            f"{arguments[:200]!r}"
        )
    return value


def _copy(block: Block) -> Block:
    """A fresh block to accumulate into (the event's block only names it)."""
    if isinstance(block, TextBlock):
        return TextBlock(block.text)
    if isinstance(block, RedactedThinkingBlock):
        return block
    if isinstance(block, ThinkingBlock):
        return ThinkingBlock(block.thinking, block.signature)
    if isinstance(block, ToolUseBlock):
        return ToolUseBlock(block.id, block.name, dict(block.input))
    return block


SSEvent = tuple[str, dict]  # (event name, data)
PING: SSEvent = ("ping", {"type": "ping"})


def sse(event: SSEvent) -> str:
    name, data = event
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class StreamEncoder:
    """ChatEvents -> Anthropic's SSE events, in the order Anthropic sends them."""

    def __init__(self, message_id: str):
        self.id = message_id
        self.open: dict[int, Block] = {}
        self.argued: set[int] = set()  # the tool_use blocks that sent some input

    def encode(self, event: ChatEvent) -> list[SSEvent]:
        if isinstance(event, MessageStart):
            usage = encode_usage(event.usage) | {"output_tokens": 0}
            return [
                (
                    "message_start",
                    {
                        "type": "message_start",
                        "message": {
                            "id": self.id,
                            "type": "message",
                            "role": "assistant",
                            "model": event.model,
                            "content": [],
                            "stop_reason": None,
                            "stop_sequence": None,
                            "usage": usage,
                        },
                    },
                )
            ]
        if isinstance(event, BlockStart):
            self.open[event.index] = event.block
            start = encode_block(event.block)
            if isinstance(event.block, ToolUseBlock):
                start["input"] = {}  # the arguments arrive as input_json_delta
            elif start["type"] == "thinking":
                start["signature"] = ""  # arrives as signature_delta before the stop
            return [_event("content_block_start", index=event.index, content_block=start)]
        if isinstance(event, BlockDelta):
            return [
                _event("content_block_delta", index=event.index, delta=delta)
                for delta in self._deltas(event)
            ]
        if isinstance(event, BlockStop):
            block = self.open.pop(event.index, None)
            out = []
            if isinstance(block, ToolUseBlock) and block.input and event.index not in self.argued:
                # input known from the start (an upstream's whole reply) still reaches the client
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block.input)}
                out.append(_event("content_block_delta", index=event.index, delta=delta))
            if (
                isinstance(block, ThinkingBlock)
                and block.signature
                and not isinstance(block, RedactedThinkingBlock)
            ):
                delta = {"type": "signature_delta", "signature": block.signature}
                out.append(_event("content_block_delta", index=event.index, delta=delta))
            return [*out, _event("content_block_stop", index=event.index)]
        return [
            _event(
                "message_delta",
                delta={"stop_reason": event.stop_reason, "stop_sequence": event.stop_sequence},
                usage=encode_usage(event.usage),
            ),
            _event("message_stop"),
        ]

    def _deltas(self, event: BlockDelta) -> list[dict]:
        block = self.open.get(event.index)
        if isinstance(block, ToolUseBlock):
            if not event.partial_json:
                return []
            self.argued.add(event.index)
            return [{"type": "input_json_delta", "partial_json": event.partial_json}]
        if not event.text:  # logprobs alone: Anthropic has no place for them
            return []
        if isinstance(block, ThinkingBlock):
            return [{"type": "thinking_delta", "thinking": event.text}]
        return [{"type": "text_delta", "text": event.text}]


def _event(name: str, **fields) -> SSEvent:
    return name, {"type": name, **fields}


def error_event(exc: TenshuError) -> SSEvent:
    return "error", error_body(exc)


# -- response shapes, for the OpenAPI document ---------------------------------------------------


class UsageOut(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


class MessageOut(BaseModel):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None
    usage: UsageOut


class TokenCountOut(BaseModel):
    input_tokens: int


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorOut(BaseModel):
    type: Literal["error"]
    error: ErrorDetail


# One server-sent event (OpenAPI 3.1 describes each event of a stream by its schema).
SSE_EVENT_SCHEMA = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {
            "enum": [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
                "ping",
                "error",
            ]
        },
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}
