"""OpenAIResponsesBackend: an upstream that speaks OpenAI's Responses API (OpenAI itself, vLLM,
Ollama >= 0.13.3, LM Studio, another tenshu's /v1/responses).

The request is written by protocols/openai_responses_client.py and sent to {endpoint}/responses,
the endpoint given as OpenAI's SDK takes its base_url (with /v1); the typed SSE events are
decoded by its StreamDecoder. Authentication and error bodies are those of OpenAI's other API,
so they are OpenAIBackend's; timeouts, errors and the rest of the Backend interface are
upstream.py's. There are no completions over this API: a raw prompt is refused by the encoder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from tenshu.backends.http import HttpResponse
from tenshu.backends.openai import OpenAIBackend
from tenshu.backends.upstream import loads_object, sse_data
from tenshu.core.events import ChatEvent
from tenshu.core.request import ChatRequest
from tenshu.protocols.openai_responses_client import (
    StreamDecoder,
    decode_response,
    encode_request,
)


class OpenAIResponsesBackend(OpenAIBackend):
    protocol = "openai-responses"

    def prepare(self, request: ChatRequest) -> tuple[str, dict]:
        return "/responses", encode_request(request)

    async def decode(self, response: HttpResponse, request: ChatRequest
                     ) -> AsyncIterator[list[ChatEvent]]:
        if response.headers.get("content-type", "").startswith("application/json"):
            yield decode_response(loads_object(await response.read()))  # stream was ignored
            return
        decoder = StreamDecoder()
        async for data in sse_data(response):
            if data != "[DONE]":  # OpenAI sends none on this API; some servers do
                yield decoder.feed(loads_object(data))
