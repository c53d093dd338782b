"""Deployments and their health: cooldowns, concurrency limits, least-busy replicas.

A deployment is one place a model runs: the embedded engine, or one endpoint of an upstream
(a model with three vLLM replicas has three). Each may hold a `limit` of requests at once: an
upstream's max_concurrency, or for the embedded engine the sequences it runs plus the queue
that may wait for it (server.max_num_seqs + server.max_queue). The gateway asks `can_take`
before it tries one
and reports each outcome; a deployment that fails `cooldown_failures` times within
`cooldown_window` seconds rests for `cooldown` seconds, then takes one probe request: success
brings it back, failure sends it to rest again. A 429 rests it for its Retry-After; a quota or
billing refusal for ten cooldowns at least, since waiting a moment will not help.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from tenshu.backends.base import Backend
from tenshu.config.routing import ModelSpec, RouterSettings
from tenshu.core.errors import (
    ContextLengthError,
    EngineDeadError,
    InvalidRequestError,
    OverloadedError,
    QuotaExceededError,
    TenshuError,
    UpstreamError,
)


def should_fall_back(error: TenshuError) -> bool:
    """Whether another candidate may succeed where this one failed. A client's mistake would
    fail everywhere; a context-window error only fails where the window is too small."""
    if isinstance(error, ContextLengthError):
        return True
    if isinstance(error, InvalidRequestError):
        return False
    return isinstance(error, (UpstreamError, OverloadedError, EngineDeadError)) or \
        error.status >= 500


def counts_against(error: TenshuError) -> bool:
    """Whether the failure is the deployment's (it counts towards a cooldown)."""
    return should_fall_back(error) and not isinstance(error, ContextLengthError)


@dataclass
class Deployment:
    name: str  # the model's name, with [i] for the i-th of several endpoints
    spec: ModelSpec
    backend: Backend
    limit: int = 0  # requests at once, running or waiting; 0 = no limit
    limit_source: str = ""  # the settings the limit comes from, for the 429's message
    in_flight: int = 0
    failures: deque = field(default_factory=deque)  # monotonic times of recent failures
    resting_until: float = 0.0  # cooling down until then (monotonic); 0 = healthy
    probing: bool = False  # a probe request is out after a cooldown

    @property
    def model(self) -> str:
        return self.spec.name

    def can_take(self) -> bool:
        return not self.limit or self.in_flight < self.limit

    def full(self) -> str:
        """Why can_take says no, in words for the client."""
        return (f"{self.name} already has {self.in_flight} requests running or waiting, its "
                f"limit ({self.limit_source or 'max_concurrency'}); retry shortly")

    def resting(self, now: float | None = None) -> float:
        """Seconds of cooldown left (0 when it may be tried: healthy, or due for its probe)."""
        if not self.resting_until:
            return 0.0
        now = time.monotonic() if now is None else now
        if now < self.resting_until:
            return self.resting_until - now
        return float("inf") if self.probing else 0.0  # one probe at a time

    def acquire(self) -> None:
        self.in_flight += 1
        if self.resting_until:
            self.probing = True

    def release(self) -> None:
        self.in_flight -= 1
        self.probing = False  # a probe the client abandoned before any verdict

    def succeeded(self) -> None:
        self.failures.clear()
        self.resting_until = 0.0
        self.probing = False

    def failed(self, error: TenshuError, settings: RouterSettings,
               now: float | None = None) -> None:
        if not counts_against(error):
            self.probing = False
            return
        now = time.monotonic() if now is None else now
        rest = 0.0
        if isinstance(error, QuotaExceededError):
            rest = max(settings.cooldown * 10, 60.0)
        elif isinstance(error, OverloadedError):
            rest = max(float(error.retry_after), 1.0)
        self.failures.append(now)
        while self.failures and self.failures[0] < now - settings.cooldown_window:
            self.failures.popleft()
        if self.probing or len(self.failures) >= settings.cooldown_failures:
            rest = max(rest, settings.cooldown)
        if rest:
            self.resting_until = now + rest
            self.failures.clear()
        self.probing = False


def least_busy(deployments: list[Deployment]) -> list[Deployment]:
    """Replicas of one model, the least busy first (stable: ties keep their order)."""
    return sorted(deployments, key=lambda d: d.in_flight)
