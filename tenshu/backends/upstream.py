"""Upstream backends: a ChatRequest forwarded to another server (OpenAI, Anthropic or Ollama
wire format) over HTTP (backends/http.py), its reply read back as the core ChatEvent sequence.

The router picks a backend; this module is what runs when that backend is remote. The shared
work lives here: one streamed attempt per request (always streamed, so the timeouts hold even
when the client wants a whole reply; the gateway collects), the first-token and idle timeouts,
HTTP and transport failures turned into core errors, and the tool-call arguments parsed for
BlockStop. Each protocol subclass (backends/openai.py, anthropic.py, ollama.py) only says where
to send, with which headers, and how its stream decodes, using the client half of protocols/.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from tenshu.backends.base import BackendStats
from tenshu.backends.http import (
    ConnectError,
    ConnectTimeout,
    HttpClient,
    HttpError,
    HttpResponse,
)
from tenshu.core.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    QuotaExceededError,
    RequestTooLargeError,
    ShuttingDownError,
    TenshuError,
    UpstreamError,
    UpstreamTimeoutError,
    error_for_status,
)
from tenshu.core.events import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatEvent,
    MessageFinish,
    MessageStart,
)
from tenshu.core.messages import (
    ToolUseBlock,
    loads_arguments,
)
from tenshu.core.models import ModelInfo
from tenshu.core.request import ChatRequest, estimate_tokens

_DRAIN_SECONDS = 1.0  # after the final event, how long the rest of the body may take
# What one attempt can fail with: core errors (HTTP statuses, in-stream error events, timeouts),
# the HTTP client's, and a reply that does not decode (JSON errors are ValueErrors; a missing
# field a KeyError, and so on).
_FAILURES = (TenshuError, HttpError, ValueError, KeyError, TypeError, AttributeError, IndexError)


@dataclass(frozen=True)
class Timeouts:
    """How long an upstream may take, in seconds."""

    connect: float = 5.0  # to open the connection
    first_token: float = 60.0  # from sending the request until the first content event
    idle: float = 30.0  # silence allowed between two events afterwards

    def __post_init__(self):
        for name in ("connect", "first_token", "idle"):
            if not getattr(self, name) > 0:
                raise ValueError(f"timeouts.{name} must be a positive number of seconds")


class UpstreamBackend:
    """The Backend interface over one upstream server. Subclasses fill in `protocol`,
    `prepare`, `headers` and `decode`; everything else is shared."""

    protocol = ""

    def __init__(
        self,
        name: str,
        endpoint: str,
        *,
        upstream_model: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "",
        context_window: int = 0,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 (frozen, so sharing the default is safe)
        max_concurrency: int = 0,
    ):
        self.name = name
        self.endpoint = endpoint.rstrip("/")
        self.upstream_model = upstream_model or name
        self.api_key = api_key
        self.api_key_env = api_key_env
        self.timeouts = timeouts
        self.max_concurrency = max_concurrency
        self.info = ModelInfo(name=name, context_window=context_window, created=int(time.time()),
                              owned_by=self.protocol, kind="chat")
        self.in_flight = 0
        self._watchdogs: set[_Watchdog] = set()
        # Only connecting is the client's to time; reads are timed per event (see _Watchdog).
        self.client = HttpClient(connect_timeout=timeouts.connect,
                                 max_connections=max_concurrency)

    # -- what each protocol provides ----------------------------------------------------------

    def prepare(self, request: ChatRequest) -> tuple[str, dict]:
        """The path under the endpoint and the JSON body for `request` (already a copy with the
        upstream's model name and stream on)."""
        raise NotImplementedError

    def headers(self, request: ChatRequest) -> dict[str, str]:
        raise NotImplementedError

    def decode(self, response: HttpResponse, request: ChatRequest
               ) -> AsyncIterator[list[ChatEvent]]:
        """The reply's events, in the batches its wire messages give."""
        raise NotImplementedError

    def error_body(self, status: int, text: str) -> TenshuError:
        """The protocol's reading of an error response (refined by `http_error`)."""
        raise NotImplementedError

    # -- the Backend interface ----------------------------------------------------------------

    async def chat(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        request = dataclasses.replace(request, model=self.upstream_model, stream=True)
        path, body = self.prepare(request)
        headers = self.headers(request)
        tools = bool(request.tools)
        watchdog = _Watchdog(self)
        self.in_flight += 1
        self._watchdogs.add(watchdog)
        answered = complete = False
        try:
            with watchdog:
                async with self.client.stream("POST", self.endpoint + path, json=body,
                                              headers=headers) as response:
                    answered = True
                    if response.status >= 400:
                        await response.read()
                        raise self.http_error(response)
                    arguments: dict[tuple[int, int], list[str]] = {}
                    async for events in self.decode(response, request):
                        if not events or complete:
                            continue  # pings, signatures, usage: not events, so still silence
                        if isinstance(events[0], MessageStart):
                            events[0].model = self.name
                            events[0].created = events[0].created or int(time.time())
                        if tools:
                            _collect_arguments(events, arguments)
                        watchdog.pause()
                        for event in events:
                            yield event
                        if isinstance(events[-1], MessageFinish):
                            # The reply is whole. Reading on to the end of the body lets the
                            # connection be reused; a server that never ends it gets a moment.
                            complete = True
                            watchdog.idle = min(watchdog.idle, _DRAIN_SECONDS)
                        watchdog.resume(len(events) > 1 or not isinstance(events[0], MessageStart))
            if not complete:
                raise self.cut_short()
        except _FAILURES as exc:
            if not complete:
                raise self.failure(exc, answered) from None
        finally:
            self.in_flight -= 1
            self._watchdogs.discard(watchdog)

    async def count_tokens(self, request: ChatRequest) -> int:
        return estimate_tokens(request)

    def stats(self) -> BackendStats:
        return BackendStats(running=self.in_flight, max_running=self.max_concurrency or 1024)

    def prefix_cache_counts(self) -> tuple[int, int]:
        return 0, 0

    async def abort_all(self) -> None:
        for watchdog in list(self._watchdogs):
            watchdog.abort()

    def close(self) -> None:
        """Nothing to do synchronously: the connections close with `aclose`, or the process."""

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- errors -------------------------------------------------------------------------------

    def cut_short(self) -> UpstreamError:
        return UpstreamError(f"{self.name} ended the stream before the reply was complete")

    def failure(self, exc: Exception, answered: bool) -> TenshuError:
        """Any failure of one attempt as a core error; `answered`: the response had begun."""
        if isinstance(exc, TenshuError):
            return self.core_error(exc)
        if isinstance(exc, ConnectTimeout):
            return UpstreamTimeoutError(
                f"cannot reach {self.name} at {self.endpoint}: no connection within "
                f"{self.timeouts.connect:g} s (timeouts.connect)")
        if isinstance(exc, ConnectError):
            return UpstreamError(f"cannot reach {self.name} at {self.endpoint}: {exc}")
        if isinstance(exc, HttpError):
            if not answered:
                return UpstreamError(f"{self.name} at {self.endpoint} closed the connection "
                                     f"without answering: {exc}")
            return self.cut_short()
        return UpstreamError(f"{self.name} sent a reply tenshu cannot read "
                             f"({type(exc).__name__}: {str(exc)[:200]})")

    def http_error(self, response: HttpResponse) -> TenshuError:
        """The core error for an error response: the client's own mistakes (400, 413) keep
        their kind; everything else says what went wrong between tenshu and the upstream."""
        status, text = response.status, response.text
        error = self.error_body(status, text)
        message = str(error)
        if status == 402 or _is_quota(text):
            return QuotaExceededError(
                f"{self.name} refused for quota or billing: {message}",
                retry_after=_retry_after(response.headers.get("retry-after")))
        if status == 429:
            return OverloadedError(f"{self.name} is rate limiting tenshu: {message}",
                                   retry_after=_retry_after(response.headers.get("retry-after")))
        if status == 413:
            return RequestTooLargeError(f"{self.name}: {message}")
        if status in (401, 403, 404):
            return self.core_error(AuthenticationError(message) if status != 404
                                   else NotFoundError(message))
        if status in (400, 422):
            return error if isinstance(error, InvalidRequestError) else InvalidRequestError(message)
        return error_for_status(status, f"{self.name} answered HTTP {status}: {message}")

    def core_error(self, error: TenshuError) -> TenshuError:
        """An error as the gateway must see it: the upstream refusing tenshu's key, or not
        knowing the model, is tenshu's configuration at fault (502), not the client's."""
        if isinstance(error, (AuthenticationError, PermissionDeniedError)):
            env = f"${self.api_key_env}" if self.api_key_env else "the upstream's api_key_env"
            fix = f"check the key in {env}" if self.api_key else f"tenshu sent none; set {env}"
            return UpstreamError(
                f"{self.name} at {self.endpoint} refused tenshu's credentials ({error}); {fix}")
        if isinstance(error, NotFoundError):
            return UpstreamError(
                f"{self.name} at {self.endpoint} does not know the model "
                f"{self.upstream_model!r} or the path ({error}); check the upstream's model "
                f"name and endpoint")
        if type(error) is TenshuError:
            return UpstreamError(f"{self.name} failed: {error}")
        return error


def _collect_arguments(events: list[ChatEvent], arguments: dict[tuple[int, int], list[str]]):
    """Gather each tool call's argument deltas; put the parsed object on its BlockStop."""
    for event in events:
        if isinstance(event, BlockStart):
            if isinstance(event.block, ToolUseBlock):
                arguments[event.choice, event.index] = []
        elif isinstance(event, BlockStop):
            parts = arguments.pop((event.choice, event.index), None)
            if parts is not None and event.input is None:
                try:
                    value = loads_arguments("".join(parts) or "{}")
                except ValueError:
                    continue
                if isinstance(value, dict):
                    event.input = value
        elif isinstance(event, BlockDelta) and event.partial_json:
            parts = arguments.get((event.choice, event.index))
            if parts is not None:
                parts.append(event.partial_json)


def _is_quota(text: str) -> bool:
    """Quota or billing, as OpenAI (insufficient_quota) and Anthropic (credit balance,
    billing_error) say it."""
    lowered = text.lower()
    return ("insufficient_quota" in lowered or "credit balance" in lowered
            or "billing_error" in lowered)


def _retry_after(value: str | None) -> int:
    """Retry-After in whole seconds (it may be seconds or an HTTP date); 1 when absent."""
    if not value:
        return 1
    try:
        return max(1, math.ceil(float(value)))
    except ValueError:
        pass
    try:
        return max(1, math.ceil(parsedate_to_datetime(value).timestamp() - time.time()))
    except (TypeError, ValueError, OverflowError):
        return 1


async def sse_data(response: HttpResponse) -> AsyncIterator[str]:
    """The `data` of each server-sent event; comments, `event:` and `id:` lines are skipped."""
    data: list[str] = []
    async for line in response.lines():
        if not line:
            if data:
                yield data[0] if len(data) == 1 else "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
    if data:  # a last event without its blank line
        yield "\n".join(data)


def loads_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {text[:80]!r}")
    return value


class _Watchdog:
    """The first-token and idle timeouts of one stream.

    Only the time spent waiting on the upstream counts: while an event is out with the consumer
    (`pause`), nothing is timed, so a slow client never times out the upstream. Per event the
    cost is a clock read; one timer checks the deadline, and when it has passed it cancels the
    task that is waiting on the read, which `__exit__` turns into UpstreamTimeoutError.
    """

    def __init__(self, backend: UpstreamBackend):
        self.backend = backend
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.cancelling = self.task.cancelling()
        self.deadline = self.first_deadline = self.loop.time() + backend.timeouts.first_token
        self.idle = backend.timeouts.idle
        self.content = False  # a content event has arrived: the idle timeout now applies
        self.fired: str | None = None  # "first_token", "idle" or "abort"
        self.when = self.deadline
        self.handle = self.loop.call_at(self.when, self._check)

    def __enter__(self) -> _Watchdog:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.handle.cancel()
        ours = self.fired and kind is not None and issubclass(kind, asyncio.CancelledError)
        if ours and self.task.uncancel() <= self.cancelling:
            raise self.error() from None

    def pause(self) -> None:
        self.deadline = math.inf

    def resume(self, content: bool) -> None:
        if self.fired:  # aborted while the consumer held an event
            raise self.error()
        task = asyncio.current_task()
        if task is not self.task:  # a stream may be pulled by one task, then another
            self.task, self.cancelling = task, task.cancelling()
        if content or self.content:
            self.content = True
            self.deadline = self.loop.time() + self.idle
        else:
            self.deadline = self.first_deadline
        if self.deadline < self.when:
            self.handle.cancel()
            self.when = self.deadline
            self.handle = self.loop.call_at(self.when, self._check)

    def abort(self) -> None:
        self.fired = "abort"
        if self.deadline != math.inf:  # waiting on the upstream, in this stream's code
            self.task.cancel()

    def _check(self) -> None:
        now = self.loop.time()
        if now >= self.deadline:
            self.fired = "idle" if self.content else "first_token"
            self.task.cancel()
            return
        self.when = self.deadline if self.deadline != math.inf else now + self.idle
        self.handle = self.loop.call_at(self.when, self._check)

    def error(self) -> TenshuError:
        name, timeouts = self.backend.name, self.backend.timeouts
        if self.fired == "abort":
            return ShuttingDownError("the server is shutting down; the reply was cut short")
        if self.fired == "idle":
            return UpstreamTimeoutError(
                f"{name} went silent for {timeouts.idle:g} s in the middle of its reply "
                f"(timeouts.idle)")
        return UpstreamTimeoutError(
            f"{name} sent no first token within {timeouts.first_token:g} s "
            f"(timeouts.first_token)")
