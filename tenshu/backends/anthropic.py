"""AnthropicBackend: an upstream that speaks Anthropic's Messages API (Anthropic itself,
llama-server, another tenshu).

The request is written by protocols/anthropic_client.py and sent to {endpoint}/v1/messages; the
SSE reply is decoded by its StreamDecoder. What is particular to Anthropic is here: its headers,
token counting through /v1/messages/count_tokens, and thinking blocks, which it accepts back
only with the signature it gave them. Timeouts, errors and the rest of the Backend interface are
upstream.py's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

from tenshu.backends.http import HttpError, HttpResponse
from tenshu.backends.upstream import UpstreamBackend, loads_object, sse_data
from tenshu.core.errors import TenshuError, UpstreamError
from tenshu.core.events import ChatEvent
from tenshu.core.messages import Block, Message, ThinkingBlock, ToolUseBlock
from tenshu.core.request import ChatRequest, estimate_tokens
from tenshu.protocols.anthropic_client import (
    StreamDecoder,
    decode_message,
    encode_request,
    error_from_wire,
)

VERSION = "2023-06-01"
# What count_tokens takes of a Messages body; sampling and max_tokens are not among them.
_COUNTED = ("model", "messages", "system", "tools", "tool_choice", "thinking")


class AnthropicBackend(UpstreamBackend):
    protocol = "anthropic"

    def prepare(self, request: ChatRequest) -> tuple[str, dict]:
        return "/v1/messages", encode_request(signed_thinking_only(request))

    def headers(self, request: ChatRequest) -> dict[str, str]:
        headers = {"anthropic-version": VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return headers

    async def decode(self, response: HttpResponse, request: ChatRequest
                     ) -> AsyncIterator[list[ChatEvent]]:
        if response.headers.get("content-type", "").startswith("application/json"):
            yield decode_message(loads_object(await response.read()))  # stream was ignored
            return
        decoder = StreamDecoder(created=int(time.time()))
        async for data in sse_data(response):
            yield decoder.feed(loads_object(data))

    def error_body(self, status: int, text: str) -> TenshuError:
        try:
            body = loads_object(text)
        except ValueError:
            return UpstreamError(text.strip()[:300] or f"HTTP {status}")
        return error_from_wire(body)

    async def count_tokens(self, request: ChatRequest) -> int:
        """Anthropic's own count; the estimate when it cannot be had."""
        request = dataclasses.replace(request, model=self.upstream_model, stream=False)
        try:
            wire = encode_request(signed_thinking_only(request))
            body = {key: wire[key] for key in _COUNTED if key in wire}
            async with asyncio.timeout(self.timeouts.first_token):
                async with self.client.stream(
                        "POST", f"{self.endpoint}/v1/messages/count_tokens", json=body,
                        headers=self.headers(request)) as response:
                    if response.status == 200:
                        return int(loads_object(await response.read())["input_tokens"])
        except (TenshuError, HttpError, TimeoutError, ValueError, KeyError, TypeError):
            pass
        return estimate_tokens(request)


def signed_thinking_only(request: ChatRequest) -> ChatRequest:
    """The request without thinking blocks that carry no signature (a local model's, another
    backend's), which Anthropic would reject; signed ones, redacted included, go back as they
    came. When the last assistant turn lost its thinking and calls a tool, thinking is switched
    off for this request: with it on, Anthropic requires that turn to open with a signed block.
    The caller's request and messages are left as they are."""
    messages: list[Message] = []
    lost: Message | None = None  # the last message that lost a block
    for message in request.messages:
        kept = [b for b in message.content if not _unsigned(b)]
        if len(kept) == len(message.content):
            messages.append(message)
            continue
        lost = message
        if kept:  # one left with nothing at all is left out
            messages.append(Message(message.role, kept))
    if lost is None:
        return request
    thinking = request.thinking
    last_assistant = next((m for m in reversed(request.messages) if m.role == "assistant"), None)
    if (lost is last_assistant and thinking and thinking.get("type") != "disabled"
            and any(isinstance(b, ToolUseBlock) for b in lost.content)):
        thinking = None
    return dataclasses.replace(request, messages=messages, thinking=thinking)


def _unsigned(block: Block) -> bool:
    return isinstance(block, ThinkingBlock) and not block.signature

