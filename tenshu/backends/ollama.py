"""OllamaBackend: an upstream Ollama server (or another tenshu's Ollama API).

Chats go to {endpoint}/api/chat and completion prompts to {endpoint}/api/generate (raw, no
template upstream), written by protocols/ollama_client.py; the NDJSON reply is decoded by its
StreamDecoder. Ollama has no tool_choice: a forced choice travels in the x-tenshu-tool-choice
header, which a tenshu upstream honours and Ollama ignores. Timeouts, errors and the rest of the
Backend interface are upstream.py's.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

from tenshu.backends.http import HttpResponse
from tenshu.backends.upstream import UpstreamBackend, loads_object
from tenshu.core.errors import TenshuError
from tenshu.core.events import ChatEvent
from tenshu.core.request import ChatRequest
from tenshu.protocols.ollama_client import (
    StreamDecoder,
    encode_chat_request,
    encode_generate_request,
    parse_error,
)

_ids = itertools.count()  # Ollama's replies carry no id; the MessageStart gets one of these


class OllamaBackend(UpstreamBackend):
    protocol = "ollama"

    def prepare(self, request: ChatRequest) -> tuple[str, dict]:
        if request.is_completion:
            return "/api/generate", encode_generate_request(request)
        return "/api/chat", encode_chat_request(request)

    def headers(self, request: ChatRequest) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        choice = request.tool_choice
        if request.tools and choice is not None and choice.mode in ("required", "tool"):
            headers["x-tenshu-tool-choice"] = choice.name if choice.mode == "tool" else "required"
        return headers

    async def decode(self, response: HttpResponse, request: ChatRequest
                     ) -> AsyncIterator[list[ChatEvent]]:
        decoder = StreamDecoder(f"{self.name}-{next(_ids)}")
        async for line in response.lines():
            if line:
                yield decoder.decode(loads_object(line))

    def error_body(self, status: int, text: str) -> TenshuError:
        return parse_error(status, text)
