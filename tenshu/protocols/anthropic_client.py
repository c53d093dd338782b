"""The Anthropic Messages wire format, client side: ChatRequest -> request body, responses ->
ChatEvents.

For an upstream that speaks Anthropic (Anthropic itself, llama-server, another tenshu):
`encode_request` writes the body, `StreamDecoder` turns its SSE events back into the ChatEvent
sequence, `decode_message` does the same for a whole response, and `error_from_wire` maps its
errors to core errors.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError

from tenshu.core.errors import (
    AuthenticationError,
    ContextLengthError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RequestTooLargeError,
    TenshuError,
    UpstreamError,
)
from tenshu.core.events import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatEvent,
    MessageFinish,
    MessageStart,
    Usage,
)
from tenshu.core.messages import Block, TextBlock, ThinkingBlock, ToolUseBlock
from tenshu.core.request import ChatRequest
from tenshu.protocols.anthropic import MessageParam, RedactedThinkingBlock, parse_block
from tenshu.protocols.anthropic_encode import encode_block


def encode_request(request: ChatRequest, default_max_tokens: int = 4096) -> dict:
    """The Messages body for `request` (Anthropic requires max_tokens: `default_max_tokens`
    stands in when the request leaves it to the backend)."""
    if request.is_completion:
        raise InvalidRequestError("Anthropic's API has no completions endpoint", field="prompt")
    if request.n != 1:
        raise InvalidRequestError("Anthropic's API returns one choice per request", field="n")
    system = [b for m in request.messages if m.role == "system" for b in m.content]
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens or default_max_tokens,
        "messages": [
            {"role": m.role, "content": [encode_block(b) for b in m.content]}
            for m in request.messages
            if m.role != "system"
        ],
    }
    if system:
        body["system"] = [encode_block(b) for b in system]
    for wire, value in (
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("top_k", request.top_k),
        ("thinking", request.thinking),
    ):
        if value is not None:
            body[wire] = value
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.stream:
        body["stream"] = True
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
    if request.tool_choice is not None:
        choice = request.tool_choice
        body["tool_choice"] = {"type": {"required": "any"}.get(choice.mode, choice.mode)}
        if choice.mode == "tool":
            body["tool_choice"]["name"] = choice.name
        if not choice.parallel and choice.mode != "none":
            body["tool_choice"]["disable_parallel_tool_use"] = True
    metadata = dict(request.metadata)
    if request.user:
        metadata["user_id"] = request.user
    if metadata:
        body["metadata"] = metadata
    return body


def decode_usage(wire: dict) -> Usage:
    cached = wire.get("cache_read_input_tokens") or 0
    total = (
        (wire.get("input_tokens") or 0) + cached + (wire.get("cache_creation_input_tokens") or 0)
    )
    return Usage(total, wire.get("output_tokens") or 0, cached)


def decode_block(wire: dict) -> Block:
    """A content block in Anthropic's shape -> core (the inverse of `encode_block`)."""
    try:
        return parse_block(MessageParam(role="user", content=[wire]).content[0])
    except ValidationError as exc:
        raise UpstreamError(
            f"the upstream sent a content block tenshu cannot read ({wire.get('type')!r})"
        ) from exc


def _stop_reason(wire: str | None) -> str:
    # pause_turn and refusal end the turn; model_context_window_exceeded is a max_tokens stop.
    return {
        "max_tokens": "max_tokens",
        "model_context_window_exceeded": "max_tokens",
        "stop_sequence": "stop_sequence",
        "tool_use": "tool_use",
    }.get(wire, "end_turn")


def decode_message(body: dict, created: int | None = None) -> list[ChatEvent]:
    """A non-streaming Messages response -> the ChatEvent sequence."""
    usage = decode_usage(body.get("usage") or {})
    events: list[ChatEvent] = [
        MessageStart(
            body["id"],
            body.get("model", ""),
            Usage(usage.input_tokens, 0, usage.cached_tokens),
            created or int(time.time()),
        )
    ]
    for index, wire in enumerate(body.get("content") or []):
        block = decode_block(wire)
        if isinstance(block, TextBlock):
            events += [BlockStart(index, TextBlock("")), BlockDelta(index, text=block.text)]
        elif isinstance(block, ThinkingBlock) and not isinstance(block, RedactedThinkingBlock):
            events += [
                BlockStart(index, ThinkingBlock("", block.signature)),
                BlockDelta(index, text=block.thinking),
            ]
        elif isinstance(block, ToolUseBlock):
            events += [
                BlockStart(index, ToolUseBlock(block.id, block.name)),
                BlockDelta(index, partial_json=json.dumps(block.input)),
            ]
        else:
            events.append(BlockStart(index, block))
        events.append(BlockStop(index))
    events.append(
        MessageFinish(_stop_reason(body.get("stop_reason")), usage, body.get("stop_sequence"))
    )
    return events


class StreamDecoder:
    """Anthropic's SSE events (their parsed `data`) -> ChatEvents."""

    def __init__(self, created: int | None = None):
        self.created = created
        self.blocks: dict[int, Block] = {}
        self.usage = Usage()
        self.delta: dict = {}

    def feed(self, data: dict) -> list[ChatEvent]:
        kind = data.get("type")
        if kind == "message_start":
            message = data["message"]
            self.usage = decode_usage(message.get("usage") or {})
            return [
                MessageStart(
                    message["id"],
                    message.get("model", ""),
                    self.usage,
                    self.created or int(time.time()),
                )
            ]
        if kind == "content_block_start":
            block = self.blocks[data["index"]] = decode_block(data["content_block"])
            if isinstance(block, ToolUseBlock):
                block.input = {}
            return [BlockStart(data["index"], block)]
        if kind == "content_block_delta":
            delta, index = data["delta"], data["index"]
            if delta["type"] == "signature_delta":
                # Core deltas carry no signature: it completes the block its BlockStart named.
                block = self.blocks.get(index)
                if isinstance(block, ThinkingBlock):
                    block.signature = (block.signature or "") + delta["signature"]
                return []
            if delta["type"] == "input_json_delta":
                return [BlockDelta(index, partial_json=delta["partial_json"])]
            return [BlockDelta(index, text=delta.get("text") or delta.get("thinking") or "")]
        if kind == "content_block_stop":
            return [BlockStop(data["index"])]
        if kind == "message_delta":
            self.delta = data.get("delta") or {}
            wire = data.get("usage") or {}
            usage = decode_usage(wire)
            if "input_tokens" not in wire:  # older servers send the input count only at start
                usage.input_tokens += self.usage.input_tokens
                usage.cached_tokens = self.usage.cached_tokens
            self.usage = usage
            return []
        if kind == "message_stop":
            return [
                MessageFinish(
                    _stop_reason(self.delta.get("stop_reason")),
                    self.usage,
                    self.delta.get("stop_sequence"),
                )
            ]
        if kind == "error":
            raise error_from_wire(data)
        return []  # ping, and event types added after this was written


_FROM_WIRE: dict[str, type[TenshuError]] = {
    "invalid_request_error": InvalidRequestError,
    "authentication_error": AuthenticationError,
    "permission_error": PermissionDeniedError,
    "not_found_error": NotFoundError,
    "request_too_large": RequestTooLargeError,
    "rate_limit_error": OverloadedError,
    "overloaded_error": OverloadedError,
}


def error_from_wire(body: dict) -> TenshuError:
    """Anthropic's error body -> the core error a backend raises."""
    error = body.get("error") or {}
    message = error.get("message") or "the upstream Anthropic API failed"
    cls = _FROM_WIRE.get(error.get("type"), UpstreamError)  # api_error and the unknown
    if cls is InvalidRequestError and "prompt is too long" in message:
        cls = ContextLengthError
    return cls(message)
