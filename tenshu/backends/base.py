"""The Backend interface: what the gateway needs from anything that can answer a ChatRequest.

The embedded engine implements it (backends/embedded.py); upstream clients (OpenAI, Anthropic,
Ollama over HTTP, backends/upstream.py) do too. Every backend emits the ChatEvent sequence described in
core/events.py and raises only core errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from tenshu.core.events import ChatEvent
from tenshu.core.models import ModelInfo
from tenshu.core.request import ChatRequest


@dataclass
class BackendStats:
    """Live load of a backend, read by /metrics and admission control."""

    running: int = 0
    waiting: int = 0
    max_running: int = 1  # sequences it runs at once
    kv_cache_usage: float = 0.0  # fraction of KV blocks in use


class Backend(Protocol):
    info: ModelInfo

    def chat(self, request: ChatRequest) -> AsyncIterator[ChatEvent]: ...

    async def count_tokens(self, request: ChatRequest) -> int: ...

    def stats(self) -> BackendStats: ...

    def prefix_cache_counts(self) -> tuple[int, int]:
        """(prompt tokens seen, of which served from the prefix cache), for /metrics."""
        ...

    async def abort_all(self) -> None: ...

    def close(self) -> None: ...


class Embedder(Protocol):
    info: ModelInfo

    async def embed(self, inputs: list[str]) -> tuple[list[list[float]], int]:
        """One vector per input, and the number of tokens read. Cancelling the call stops the
        work soon after (between batches), not only the wait for it."""
        ...

    def abort_all(self) -> None:
        """Stop every embedding in progress (shutdown, after the grace period)."""
        ...

    def close(self) -> None: ...
