"""LoRABackend: a LoRA adapter served as a model of its own, on its base model's engine.

Requests for the adapter's name run in the base engine's batches with the adapter's low-rank
product added (engine/lora.py). The adapter can be replaced while it serves (`swap`: a new
version hot-loaded): a request runs on the version in service when it started, to its end, and
the old version is given up only once its last request has finished (`drained`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

from tenshu.backends.base import BackendStats
from tenshu.backends.embedded import EmbeddedBackend
from tenshu.core.events import ChatEvent, MessageStart
from tenshu.core.request import ChatRequest
from tenshu.engine import LoRARequest


class LoRABackend:
    def __init__(self, name: str, base: EmbeddedBackend, lora: LoRARequest, label: str) -> None:
        self.base = base
        self.info = replace(base.info, name=name, parent=base.info.name, path=lora.lora_path)
        self.lora, self.label = lora, label  # the version in service, and how it is shown
        self._running: dict[int, int] = {}  # adapter id -> requests running on it
        self._idle = asyncio.Condition()

    async def chat(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        lora, label = self.lora, self.label  # fixed for the request's whole life
        key = lora.lora_int_id
        self._running[key] = self._running.get(key, 0) + 1
        try:
            async for event in self.base.chat(request, lora):
                if isinstance(event, MessageStart):
                    event = replace(event, model=self.info.name, adapter=label)
                yield event
        finally:
            self._running[key] -= 1
            if not self._running[key]:
                del self._running[key]
                async with self._idle:
                    self._idle.notify_all()

    def swap(self, lora: LoRARequest, label: str) -> LoRARequest:
        """Serve another version from the next request on; returns the one it replaces."""
        old, self.lora, self.label = self.lora, lora, label
        self.info = replace(self.info, path=lora.lora_path)
        return old

    def running(self, lora: LoRARequest) -> int:
        return self._running.get(lora.lora_int_id, 0)

    async def drained(self, lora: LoRARequest) -> None:
        """Return once no request runs on `lora` (new ones go to the version in service)."""
        async with self._idle:
            await self._idle.wait_for(lambda: not self.running(lora))

    # -- the rest of the Backend interface: the base engine's -----------------------------------

    async def count_tokens(self, request: ChatRequest) -> int:
        return await self.base.count_tokens(request)

    def stats(self) -> BackendStats:
        return self.base.stats()

    def prefix_cache_counts(self) -> tuple[int, int]:
        return 0, 0  # counted once, by the base's backend

    async def abort_all(self) -> None:
        """Nothing of its own: the base's abort_all ends its requests too."""

    def close(self) -> None:
        """Nothing of its own: the engine is the base's."""
