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
from tenshu.core.fold import Fold
from tenshu.core.messages import (
    Block,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
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
        self.fold = Fold()

    def add(self, event: ChatEvent) -> None:
        self.fold.add(event)
        if isinstance(event, BlockStop) and (
                arguments := self.fold.bad_arguments.get((event.choice, event.index))):
            block = self.fold.blocks[event.choice][event.index]
            # the backend's fault, not the client's: a 500 that says what went wrong, raised
            # while the answer is read, so the request is logged as the failure it is
            raise TenshuError(
                f"the model's call of tool {block.name!r} has arguments that are not a JSON "
                f"object: {arguments[:200]!r}")

    def message(self) -> dict:
        finish = self.fold.finish.get(0) or MessageFinish("end_turn", Usage())
        message = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.fold.start.model if self.fold.start else "",
            "content": [encode_block(b) for b in self.fold.content(0)],
            "stop_reason": finish.stop_reason,
            "stop_sequence": finish.stop_sequence,
            "usage": encode_usage(finish.usage),
        }
        if self.fold.start and self.fold.start.sources:
            message["sources"] = self.fold.start.sources  # tenshu's extension (memory)
        return message


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
                            **({"sources": event.sources} if event.sources else {}),
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
