"""Router.plan: for one request, the deployments to try, in order, and why.

    the model asked for ──▶ a model by name: its deployments (replicas, least busy first)
                        └─▶ a route (`auto`, `claude-*`): a tier by header, rule, sentinel or
                            default, then the fallback tiers; each tier's models in order
    then, in this order, candidates are set aside (each noted in the trace):
      private (header, key, content, local-only)  → cloud models are dropped
      a spent budget                              → the models it covers are dropped
      a prompt longer than a model's window       → that model is dropped
      images                                      → models without vision, if any has it
      cooling down after failures                 → dropped, unless nothing else is left

The gateway tries the plan's candidates in order and falls back before the first token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from tenshu.config.routing import RouteSpec, RoutingSettings
from tenshu.core.errors import ModelNotFoundError, PermissionDeniedError, QuotaExceededError
from tenshu.core.request import ChatRequest
from tenshu.router import policy
from tenshu.router.budget import Budgets
from tenshu.router.health import Deployment, least_busy
from tenshu.router.sentinel import Sentinel, sentinel_text
from tenshu.router.sovereignty import private_reason
from tenshu.router.trace import Attempt, Trace

log = logging.getLogger("tenshu.router")

PRIVATE_HEADER = "x-tenshu-private"
_TRUE = ("1", "true", "yes", "on")


class Router:
    def __init__(self, settings: RoutingSettings, deployments: Mapping[str, list[Deployment]],
                 *, sentinel: Sentinel | None = None, budgets: Budgets | None = None,
                 thresholds: Mapping[str, float] | None = None):
        self.settings = settings
        self.deployments = dict(deployments)  # model name -> its deployments
        self.sentinel = sentinel
        self.budgets = budgets or Budgets(settings)
        self.thresholds = dict(thresholds or {})  # route -> calibrated sentinel threshold
        self.tiers = dict(settings.tiers)
        self.all_tiers = tuple(self.tiers)
        self.routes = settings.routes

    # -- names ----------------------------------------------------------------------------------

    def route_for(self, model: str) -> RouteSpec | None:
        """The route answering a requested name: by its own name first, then by glob."""
        exact = next((r for r in self.routes if r.name == model), None)
        return exact or next((r for r in self.routes if r.answers(model)), None)

    def known(self, model: str) -> bool:
        return model in self.deployments or self.route_for(model) is not None

    def names(self) -> list[str]:
        return [*self.deployments, *(r.name for r in self.routes)]

    def context_window(self, route: RouteSpec) -> int:
        """The largest window among the route's models (what listings report for it)."""
        models = {m for t in policy.route_tiers(route, self.all_tiers) for m in self.tiers[t]}
        return max((self.deployments[m][0].backend.info.context_window for m in models),
                   default=0)

    # -- planning -------------------------------------------------------------------------------

    async def plan(self, request: ChatRequest, trace: Trace, *, key_name: str | None = None,
                   key_private: bool = False, headers: Mapping[str, str] | None = None,
                   prompt_tokens: int = 0, private: str | None = None) -> list[Deployment]:
        """The deployments to try, in order (never empty); raises when none may serve.
        `private` is a stage's reason the request must stay on this machine (memory's)."""
        headers = headers or {}
        name = request.model
        if name in self.deployments:
            trace.route, trace.reason = name, "model"
            models = [name]
        elif (route := self.route_for(name)) is not None:
            trace.route = route.name
            tier = await self._choose_tier(route, request, trace, headers, prompt_tokens)
            models = [m for t in policy.tier_order(route, tier, self.all_tiers)
                      for m in self.tiers[t]]
            models = list(dict.fromkeys(models))
        else:
            raise ModelNotFoundError(name, self.names())
        candidates = [d for m in models for d in least_busy(self.deployments[m])]
        candidates = self._sovereign(candidates, request, trace, key_private, headers, private)
        candidates = self._within_budget(candidates, trace, key_name)
        candidates = self._fitting(candidates, trace, prompt_tokens)
        candidates = self._seeing(candidates, trace, request)
        return self._rested(candidates, trace)

    async def _choose_tier(self, route: RouteSpec, request: ChatRequest, trace: Trace,
                           headers: Mapping[str, str], prompt_tokens: int) -> str:
        wanted = headers.get(policy.TIER_HEADER)
        if wanted and wanted in policy.route_tiers(route, self.all_tiers):
            trace.tier, trace.reason = wanted, f"header {policy.TIER_HEADER}"
            return wanted
        if found := policy.first_rule(route, request, headers, prompt_tokens):
            i, rule = found
            trace.tier, trace.reason = rule.tier, f"rule {i}: {rule.describe()}"
            return rule.tier
        if route.simple_tier and self.sentinel is not None and sentinel_text(request):
            threshold = self.thresholds.get(route.name, route.threshold)
            try:
                score = trace.score = await self.sentinel.score(request)
            except Exception as exc:  # the sentinel is advice: never fail a request over it
                log.warning("the sentinel failed (%s); using the route's default tier", exc)
            else:
                tier = route.tier if score >= threshold else route.simple_tier
                verdict = "complex" if score >= threshold else "simple"
                trace.tier = tier
                trace.reason = f"sentinel: {verdict} ({score:.2f} vs threshold {threshold:.2f})"
                return tier
        trace.tier, trace.reason = route.tier, "default"
        return route.tier

    def _sovereign(self, candidates, request, trace, key_private, headers, private=None):
        if all(d.spec.is_local for d in candidates):
            return candidates  # nothing could leave the machine: no need to look
        why = None
        if private:
            why = private
        elif self.settings.router.local_only:
            why = "local-only mode ([router] local_only)"
        elif key_private:
            why = "the API key is private"
        elif headers.get(PRIVATE_HEADER, "").strip().lower() in _TRUE:
            why = f"the {PRIVATE_HEADER} header"
        else:
            why = private_reason(request, self.settings.router.private_content)
        if why is None:
            return candidates
        trace.private = why
        kept = self._drop(candidates, trace, lambda d: None if d.spec.is_local else "private")
        if not kept:
            raise PermissionDeniedError(
                f"this request must stay on this machine ({why}), and no local model can serve "
                f"{request.model!r}: add a local model to its route's tiers, or send it to a "
                "local model by name")
        return kept

    def _within_budget(self, candidates, trace, key_name):
        kept = self._drop(candidates, trace, lambda d: self.budgets.blocked(key_name, d.model))
        if not kept:
            reasons = [a.error for a in trace.attempts if a.outcome == "skipped"]
            raise QuotaExceededError(f"{reasons[-1]}; no model outside the budget can serve "
                                     "this request", retry_after=3600)
        return kept

    def _fitting(self, candidates, trace, prompt_tokens):
        def too_small(d: Deployment) -> str | None:
            window = d.backend.info.context_window
            if window and prompt_tokens >= window:
                return f"the prompt (~{prompt_tokens:,} tokens) exceeds its {window:,} window"
            return None

        kept = self._drop(candidates, trace, too_small)
        if kept:
            return kept
        # Nothing fits: let the largest try, so the client gets its real context error.
        largest = max(candidates, key=lambda d: d.backend.info.context_window)
        trace.attempts = [a for a in trace.attempts if a.backend != largest.name]
        return [largest]

    def _seeing(self, candidates, trace, request):
        if not policy.has_images(request) or not any(d.spec.vision for d in candidates):
            return candidates
        return self._drop(candidates, trace, lambda d: None if d.spec.vision else "no vision")

    def _rested(self, candidates, trace):
        resting = [d for d in candidates if d.resting()]
        if not resting or len(resting) == len(candidates):
            return candidates  # nothing else left: better to try than to refuse
        for d in resting:
            trace.attempts.append(Attempt(d.name, "skipped",
                                          f"cooling down for {d.resting():.0f} s more"))
        return [d for d in candidates if d not in resting]

    @staticmethod
    def _drop(candidates, trace, why_not) -> list[Deployment]:
        kept = []
        for d in candidates:
            reason = why_not(d)
            if reason is None:
                kept.append(d)
            else:
                trace.attempts.append(Attempt(d.name, "skipped", reason))
        return kept
