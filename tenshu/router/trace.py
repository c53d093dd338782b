"""Trace: where one request went and why, filled in by the router and the gateway.

The router writes its decision (route, tier, the reason, the sentinel's score, why a request
was kept private); the gateway adds one Attempt per candidate it tried or skipped, and who
served in the end. The API layer turns it into response headers (`x-tenshu-route`,
`x-tenshu-backend`, `x-tenshu-fallbacks`, `x-tenshu-adapter`); the audit log keeps it (`tenshu trace ID`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Attempt:
    backend: str  # the deployment: a model's name (with [i] for its i-th replica)
    outcome: str  # "ok", "error", or "skipped" (cooling down, busy, over budget, ...)
    error: str | None = None  # "kind: message" for an error, the reason for a skip
    ms: float = 0.0  # until the first token (ok) or the failure (error)


@dataclass
class Trace:
    route: str | None = None  # the route's name, or the model asked for when it named one
    tier: str | None = None
    reason: str = ""  # why this tier: "model", "rule 2: thinking", "sentinel", "default", ...
    score: float | None = None  # the sentinel's complexity score, when it was asked
    private: str | None = None  # why the request may not leave the machine, when it may not
    attempts: list[Attempt] = field(default_factory=list)
    backend: str | None = None  # the deployment that answered
    cost_usd: float = 0.0
    memory: dict | None = None  # what memory gave the prompt: {"collections", "chunks"}
    stopped: bool = False  # the client left after the first token (its answer is partial)
    adapter: str | None = None  # the LoRA adapter version that answered ("NAME@vN")

    @property
    def fallbacks(self) -> int:
        """Candidates that failed before one answered."""
        return sum(a.outcome == "error" for a in self.attempts)

    def headers(self) -> dict[str, str]:
        headers = {"x-tenshu-fallbacks": str(self.fallbacks)}
        if self.route:
            headers["x-tenshu-route"] = self.route
        if self.backend:
            headers["x-tenshu-backend"] = self.backend
        if self.adapter:
            headers["x-tenshu-adapter"] = self.adapter
        return headers

    def to_json(self) -> str:
        """What the audit log keeps beyond its own columns."""
        data = {"reason": self.reason, "private": self.private,
                "attempts": [vars(a) for a in self.attempts]}  # flat: no asdict's deep copy
        if self.memory is not None:
            data["memory"] = self.memory
        if self.stopped:
            data["stopped"] = True
        if self.adapter:
            data["adapter"] = self.adapter
        return json.dumps(data, separators=(",", ":"))
