"""AsyncEngine: the step loop in a background thread, one async stream per request.

Callers on the event loop never wait for a step: adds and aborts go into an inbox that the
engine thread drains at each step boundary, and outputs come back through per-request asyncio
queues. torch releases the GIL inside its kernels, so the event loop stays responsive while
the model runs. If the step loop fails, every open stream ends with EngineDeadError.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tenshu.core.errors import EngineDeadError
from tenshu.engine.config import EngineConfig
from tenshu.engine.llm_engine import LLMEngine, Prompt
from tenshu.engine.lora import LoRARequest
from tenshu.engine.outputs import RequestOutput
from tenshu.engine.sampling import SamplingParams


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue

    def put(self, item: RequestOutput | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class AsyncEngine:
    def __init__(self, config: EngineConfig | None = None, *, engine: LLMEngine | None = None):
        self.engine = engine if engine is not None else LLMEngine(config)
        self._inbox: deque[tuple] = deque()
        self._wake = threading.Event()
        self._streams: dict[str, _Stream] = {}
        self._dead: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="tenshu-engine", daemon=True)
        self._thread.start()

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    async def generate(
        self, request_id: str, prompt: Prompt, params: SamplingParams,
        lora_request: LoRARequest | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """Yield the request's outputs as tokens arrive; leaving the loop early aborts it.
        With `lora_request`, the request runs with that adapter (the engine's enable_lora)."""
        self._check_alive()
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        self._submit(("add", request_id, prompt, params, stream, lora_request))
        finished = False
        try:
            while not finished:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
        finally:
            if not finished:
                self._submit(("abort", request_id, None))

    async def abort(self, request_id: str) -> None:
        """Abort a request; returns once its blocks are free (at the next step boundary)."""
        self._check_alive()
        done = asyncio.get_running_loop().create_future()
        self._submit(("abort", request_id, done))
        await done

    async def add_lora(self, lora_request: LoRARequest) -> str:
        """Load an adapter in a worker thread, so the step loop never waits on its reading and
        fusing; it is held until remove_lora. Returns the sha256 of its weights (hex). Raises
        LoRAError for one that cannot be used."""
        self._check_alive()
        loras = self.engine.lora_manager()
        return (await asyncio.to_thread(loras.add, lora_request)).digest

    def remove_lora(self, lora_int_id: int) -> bool:
        """Give an adapter up (refused while a request runs on it: wait for those first)."""
        return self.engine.remove_lora(lora_int_id)

    def shutdown(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join()

    def _check_alive(self) -> None:
        if self._dead is not None or self._stopped:
            raise EngineDeadError(f"the engine has stopped: {self._dead or 'shut down'}")

    def _submit(self, op: tuple) -> None:
        self._inbox.append(op)
        self._wake.set()

    # -- the engine thread --------------------------------------------------------------------

    def _run(self) -> None:
        engine = self.engine
        try:
            while not self._stopped:
                if not engine.has_unfinished_requests() and not self._inbox:
                    self._wake.wait()
                self._wake.clear()
                self._drain_inbox()
                if engine.has_unfinished_requests():
                    for out in engine.step():
                        stream = self._streams.get(out.request_id)
                        if stream is not None:
                            if out.finished:
                                del self._streams[out.request_id]
                            stream.put(out)
        except BaseException as exc:  # noqa: BLE001 (every stream must hear of it)
            self._dead = exc
            error = EngineDeadError(f"the engine failed: {exc!r}")
            for stream in self._streams.values():
                stream.put(error)
            self._streams.clear()
            raise

    def _drain_inbox(self) -> None:
        while self._inbox:
            op = self._inbox.popleft()
            if op[0] == "add":
                _, request_id, prompt, params, stream, lora_request = op
                try:
                    self.engine.add_request(request_id, prompt, params, lora_request)
                except Exception as exc:  # a bad request: tell its caller, keep serving
                    stream.put(exc)
                    continue
                self._streams[request_id] = stream
            else:
                _, request_id, done = op
                last = self.engine.abort_request(request_id)
                stream = self._streams.pop(request_id, None)
                if stream is not None and last is not None:
                    stream.put(last)  # a reader still waiting hears that the request ended
                if done is not None:
                    done.get_loop().call_soon_threadsafe(_resolve, done)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
