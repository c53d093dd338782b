"""OpenAIBackend: an upstream that speaks OpenAI's API (OpenAI, vLLM, LM Studio, another tenshu).

The request is written by protocols/openai_client.py and sent to {endpoint}/chat/completions
(or /completions for a prompt); the SSE reply is decoded by its StreamDecoder. The timeouts,
errors and the rest of the Backend interface are upstream.py's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from tenshu.backends.http import HttpResponse
from tenshu.backends.upstream import UpstreamBackend, loads_object, sse_data
from tenshu.core.errors import TenshuError, UpstreamError
from tenshu.core.events import ChatEvent
from tenshu.core.request import ChatRequest
from tenshu.protocols.openai_client import (
    StreamDecoder,
    decode_response,
    encode_chat_request,
    encode_completion_request,
    error_from_body,
)


class OpenAIBackend(UpstreamBackend):
    protocol = "openai"

    def prepare(self, request: ChatRequest) -> tuple[str, dict]:
        if request.is_completion:
            return "/completions", encode_completion_request(request)
        return "/chat/completions", encode_chat_request(request)

    def headers(self, request: ChatRequest) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def decode(self, response: HttpResponse, request: ChatRequest
                     ) -> AsyncIterator[list[ChatEvent]]:
        if response.headers.get("content-type", "").startswith("application/json"):
            yield decode_response(loads_object(await response.read()))  # stream was ignored
            return
        decoder = StreamDecoder()
        done = False
        async for data in sse_data(response):
            if done:
                continue  # nothing should follow [DONE]; reading to the end reuses the connection
            if data == "[DONE]":
                done = True
                yield decoder.end()
            else:
                yield decoder.feed(loads_object(data))

    def error_body(self, status: int, text: str) -> TenshuError:
        try:
            return error_from_body(json.loads(text), status)
        except ValueError:
            return UpstreamError(text.strip()[:300] or f"HTTP {status}")
