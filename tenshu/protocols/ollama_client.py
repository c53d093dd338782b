"""The Ollama wire format, client side: ChatRequest -> Ollama's requests, its replies -> events.

For a backend that forwards to an upstream Ollama server: `encode_chat_request` (/api/chat) and
`encode_generate_request` (/api/generate, raw) write the body; `StreamDecoder` turns each reply
chunk (or the one `stream: false` object) back into the ChatEvent sequence; `parse_error` maps an
error response to the core error for its status.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from tenshu.core.errors import InvalidRequestError, TenshuError, UpstreamError, error_for_status
from tenshu.core.events import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatEvent,
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
    ToolUseBlock,
)
from tenshu.core.request import ChatRequest


def encode_chat_request(request: ChatRequest) -> dict:
    """The /api/chat body for a chat request."""
    if request.is_completion:
        raise InvalidRequestError("a completion prompt goes to /api/generate", field="prompt")
    body = _wire_base(request)
    body["messages"] = wire_messages(request.messages)
    if request.tools:
        body["tools"] = [{"type": "function", "function": {
            "name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in request.tools]
    return body


def encode_generate_request(request: ChatRequest) -> dict:
    """The /api/generate body for a completion prompt, sent raw (no template upstream)."""
    if not isinstance(request.prompt, str):
        raise InvalidRequestError("Ollama takes a text prompt, not token ids", field="prompt")
    return {**_wire_base(request), "prompt": request.prompt, "raw": True}


def _wire_base(request: ChatRequest) -> dict:
    body: dict[str, Any] = {"model": request.model, "stream": request.stream}
    fmt = request.response_format or {}
    if fmt.get("type") == "json_object":
        body["format"] = "json"
    elif fmt.get("type") == "json_schema":
        body["format"] = fmt.get("json_schema", {}).get("schema", {})
    if request.thinking is not None:
        kind, effort = request.thinking.get("type"), request.thinking.get("effort")
        body["think"] = False if kind == "disabled" else effort or True
    if request.logprobs:
        body["logprobs"], body["top_logprobs"] = True, request.top_logprobs
    options = {
        "temperature": request.temperature, "top_p": request.top_p, "top_k": request.top_k,
        "min_p": request.min_p, "seed": request.seed, "num_predict": request.max_tokens,
        "num_ctx": request.num_ctx, "repeat_penalty": request.repetition_penalty,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty, "stop": request.stop or None,
    }
    if options := {k: v for k, v in options.items() if v is not None}:
        body["options"] = options
    return body


def wire_messages(messages: list[Message]) -> list[dict]:
    """Core messages -> Ollama's: tool results become `tool` messages, images bare base64."""
    out: list[dict] = []
    names: dict[str, str] = {}  # tool call id -> tool name, for the results' `tool_name`
    for m in messages:
        wire: dict[str, Any] = {"role": m.role, "content": ""}
        for block in m.content:
            if isinstance(block, TextBlock):
                wire["content"] += block.text
            elif isinstance(block, ImageBlock):
                if block.data is None:
                    raise InvalidRequestError("Ollama takes inline images only, not URLs",
                                              field="messages")
                wire.setdefault("images", []).append(block.data)
            elif isinstance(block, ThinkingBlock):
                wire["thinking"] = wire.get("thinking", "") + block.thinking
            elif isinstance(block, ToolUseBlock):
                names[block.id] = block.name
                wire.setdefault("tool_calls", []).append(
                    {"id": block.id, "function": {"name": block.name, "arguments": block.input}})
            elif isinstance(block, ToolResultBlock):
                text = block.text if not block.is_error else f"Error: {block.text}"
                out.append({"role": "tool", "content": text, "tool_call_id": block.tool_use_id,
                            "tool_name": names.get(block.tool_use_id, "")})
        if len(wire) > 2 or wire["content"] or not any(
                isinstance(b, ToolResultBlock) for b in m.content):
            out.append(wire)
    return out


class StreamDecoder:
    """Ollama's chunks (chat or generate, streamed or the one `stream: false` object) ->
    the ChatEvent sequence. Feed each parsed line to `decode`."""

    def __init__(self, request_id: str = "ollama"):
        self.request_id = request_id
        self.started = False
        self.index = -1
        self.open: str | None = None  # "text" or "thinking": the kind of the open block
        self.called = False  # the reply made tool calls

    def decode(self, chunk: dict) -> list[ChatEvent]:
        if "error" in chunk:
            raise UpstreamError(f"upstream Ollama error: {chunk['error']}")
        events: list[ChatEvent] = []
        if not self.started:
            self.started = True
            events.append(MessageStart(self.request_id, chunk.get("model", ""), Usage(),
                                       _unix(chunk.get("created_at"))))
        message = chunk.get("message") or {}
        thinking = message.get("thinking") or chunk.get("thinking")
        text = message.get("content") if "message" in chunk else chunk.get("response")
        logprobs = _core_logprobs(chunk.get("logprobs"))
        if thinking:
            events += self._append("thinking", thinking)
        if text or (logprobs and not thinking):
            events += self._append("text", text or "", logprobs)
        for call in message.get("tool_calls") or []:
            events += self._close()
            self.index += 1
            self.called = True
            fn = call.get("function", {})
            args = fn.get("arguments", {})
            block = ToolUseBlock(call.get("id") or f"call_{self.index}", fn.get("name", ""))
            events += [BlockStart(self.index, block),
                       BlockDelta(self.index, partial_json=json.dumps(args)
                                  if not isinstance(args, str) else args),
                       BlockStop(self.index)]
        if chunk.get("done"):
            events += self._close()
            reason = chunk.get("done_reason")
            events.append(MessageFinish(
                stop_reason="tool_use" if self.called else
                "max_tokens" if reason == "length" else "end_turn",
                usage=Usage(chunk.get("prompt_eval_count", 0), chunk.get("eval_count", 0)),
                prompt_ns=chunk.get("prompt_eval_duration", 0),
                decode_ns=chunk.get("eval_duration", 0)))
        return events

    def _append(self, kind: str, text: str, logprobs=None) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        if self.open != kind:
            events += self._close()
            self.index += 1
            self.open = kind
            events.append(BlockStart(self.index, TextBlock("") if kind == "text"
                                     else ThinkingBlock("")))
        events.append(BlockDelta(self.index, text=text, logprobs=logprobs))
        return events

    def _close(self) -> list[ChatEvent]:
        if self.open is None:
            return []
        self.open = None
        return [BlockStop(self.index)]


def _unix(created_at: str | None) -> int:
    if not created_at:
        return 0
    try:  # Go writes nanoseconds, which Python's parser does not take; seconds suffice here
        return int(datetime.fromisoformat(re.sub(r"\.\d+", "", created_at)).timestamp())
    except ValueError:
        return 0


def _core_logprobs(wire: list[dict] | None) -> list[TokenLogprob] | None:
    if not wire:
        return None
    return [TokenLogprob(lp["token"], lp["logprob"], lp.get("bytes"),
                         [TokenLogprob(t["token"], t["logprob"], t.get("bytes"))
                          for t in lp.get("top_logprobs") or []]) for lp in wire]


def parse_error(status: int, body: str) -> TenshuError:
    """An upstream Ollama error response -> the core error for its status."""
    try:
        message = json.loads(body).get("error", body)
    except (ValueError, AttributeError):
        message = body
    return error_for_status(status, f"upstream Ollama: {message}")
