"""Daily budgets: tokens or dollars per key and tier, counted as requests finish.

A budget ([[budgets]] in tenshu.toml) covers one key or all keys, and one tier or every cloud
model. When what its requests spent today (UTC) reaches a limit, the router skips the models
it covers, so routes go on with the local tiers instead. Spend is kept in memory per
(key, model) and day; at start the server loads today's spend from the audit log, so a restart
does not reset anyone's allowance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime

from tenshu.config.routing import BudgetSpec, RoutingSettings


def today() -> date:
    return datetime.now(UTC).date()


def start_of_today() -> datetime:
    d = today()
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


class Budgets:
    def __init__(self, settings: RoutingSettings, clock: Callable[[], date] = today):
        self.specs = settings.budgets
        self.models = {m.name: m for m in settings.models}
        self.tiers = dict(settings.tiers)
        self.clock = clock
        self.day = clock()
        # (key name or None, model) -> [tokens, dollars] spent today
        self.spent: dict[tuple[str | None, str], list[float]] = defaultdict(lambda: [0, 0.0])

    def load(self, rows: Iterable[tuple[int | None, str | None, int, int, float]],
             key_names: dict[int, str]) -> None:
        """Today's spend so far: (key_id, backend, input tokens, output tokens, cost) rows, and
        the keys' names by id."""
        for key_id, backend, tokens_in, tokens_out, cost in rows:
            if backend:
                key = key_names.get(key_id) if key_id is not None else None
                self.add(key, _model_of(backend), tokens_in + tokens_out, cost)

    def add(self, key: str | None, model: str, tokens: int, cost: float) -> None:
        self._roll()
        spent = self.spent[(key, model)]
        spent[0] += tokens
        spent[1] += cost

    def blocked(self, key: str | None, model: str) -> str | None:
        """Why `model` may not serve the key of this name now (a spent budget), or None."""
        if not self.specs:
            return None
        self._roll()
        for spec in self.specs:
            if not self._covers(spec, key, model):
                continue
            tokens, cost = self.used(spec)
            if spec.daily_tokens is not None and tokens >= spec.daily_tokens:
                return f"{spec.describe()} is spent ({tokens:,} of {spec.daily_tokens:,} tokens)"
            if spec.daily_usd is not None and cost >= spec.daily_usd:
                return f"{spec.describe()} is spent (${cost:.2f} of ${spec.daily_usd:.2f})"
        return None

    def _covers(self, spec: BudgetSpec, key: str | None, model: str) -> bool:
        if spec.key is not None and spec.key != key:
            return False
        if spec.tier is not None:
            return model in self.tiers.get(spec.tier, ())
        found = self.models.get(model)
        return found is not None and not found.is_local

    def used(self, spec: BudgetSpec) -> tuple[int, float]:
        """Tokens and dollars the requests `spec` covers spent today (UTC): what `blocked`
        checks its limits against, and what the dashboard shows."""
        self._roll()
        tokens, cost = 0, 0.0
        for (key, model), (t, c) in self.spent.items():
            if self._covers(spec, key, model):
                tokens += int(t)
                cost += c
        return tokens, cost

    def _roll(self) -> None:
        if (day := self.clock()) != self.day:
            self.day = day
            self.spent.clear()


def _model_of(deployment: str) -> str:
    """A deployment's model: `vllm[1]` -> `vllm`."""
    return deployment.split("[", 1)[0]
