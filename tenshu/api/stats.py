"""/tenshu/v1 stats: what the server did, for the dashboards and the trace explorer. JSON in
OpenAI's error shape; in the OpenAPI document.

    GET /tenshu/v1/stats?period=1h|24h|7d|30d     requests, tokens and latency over time,
                                                  histograms, routes, deployments, fallbacks,
                                                  the sentinel's verdicts, spend per key and
                                                  tier, and today's budgets
    GET /tenshu/v1/requests                       the requests, newest first (limit, after,
                                                  errors=true)
    GET /tenshu/v1/requests/{request_id}          one request and its trace (any id a client
                                                  saw for it: req_, turn_, chatcmpl-, msg_)

A member sees only their own requests, and the budgets of their own keys; an admin sees every
request and budget, or one user's (`?user=NAME`, logged as any admin read is). Another user's
request answers exactly as a missing one: 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Query, Request
from fastapi.routing import APIRouter

from tenshu.api.tenshu import _ERRORS, Context, Limit, User, _run, store_of
from tenshu.core.errors import NotFoundError
from tenshu.router.budget import Budgets
from tenshu.store import Principal, Store
from tenshu.store.sql import utcnow
from tenshu.store.stats import PERIODS, Overview

router = APIRouter(prefix="/tenshu/v1", tags=["tenshu"])
Period = Literal["1h", "24h", "7d", "30d"]


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """How much of one daily budget ([[budgets]]) its requests spent today (UTC)."""

    key: str | None  # None: all keys together
    tier: str | None  # None: every cloud model
    describe: str
    tokens: int
    cost_usd: float
    daily_tokens: int | None
    daily_usd: float | None

    @property
    def share(self) -> float:
        """The larger of the two fractions spent (1.0: spent; the router skips its models)."""
        shares = [used / limit if limit else float(used > 0) for used, limit in (
            (self.tokens, self.daily_tokens), (self.cost_usd, self.daily_usd))
            if limit is not None]
        return max(shares, default=0.0)

    def to_json(self) -> dict:
        return {"key": self.key, "tier": self.tier, "budget": self.describe,
                "tokens": self.tokens, "daily_tokens": self.daily_tokens,
                "cost_usd": round(self.cost_usd, 6), "daily_usd": self.daily_usd,
                "share": round(self.share, 4)}


def budget_use(budgets: Budgets, keys: set[str] | None) -> list[BudgetUse]:
    """Today's use of each budget that covers one of `keys` (None: every budget). On the event
    loop: the budgets live there, in memory."""
    found = []
    for spec in budgets.specs:
        if keys is not None and spec.key not in keys:
            continue
        # the sum the router checks the limit against (Budgets.blocked), not a second one
        tokens, cost = budgets.used(spec)
        found.append(BudgetUse(spec.key, spec.tier, spec.describe(), tokens, cost,
                               spec.daily_tokens, spec.daily_usd))
    return found


def whose_keys(store: Store, principal: Principal, user: str | None) -> set[str] | None:
    """The names of the active keys whose budgets the principal sees (None: all). Database I/O.
    A member's own; an admin's choice of user's, or all."""
    if principal.admin and user is None:
        return None
    return {k.name for k in store.keys.list(user or principal.name) if k.active}


async def overview(request: Request, principal: Principal, period: str,
                   user: str | None) -> tuple[Overview, list[BudgetUse]]:
    """The dashboard's numbers for `period` (a key of PERIODS), and today's budgets."""
    await settled(request)
    store = store_of(request)
    until = utcnow()

    def read():
        found = store.stats.overview(principal, until - PERIODS[period], until,
                                             user=user)  # first: a bad `user` is a 404 here
        return found, whose_keys(store, principal, user)

    found, keys = await _run(read)
    return found, budget_use(request.app.state.gateway.router.budgets, keys)


async def settled(request: Request) -> None:
    """Wait for the audit records still queued (a request ended a moment ago: its trace)."""
    writer = request.app.state.gateway.audit
    if writer is not None:
        await writer.settle()


@router.get("/stats", responses=_ERRORS)
async def stats(request: Request, ctx: Context, period: Period = "24h",
                user: User = None) -> dict:
    """The caller's requests over the period (an admin's: everyone's, or one user's)."""
    found, budgets = await overview(request, ctx.principal, period, user)
    return {**found.to_json(), "period": period, "budgets": [b.to_json() for b in budgets]}


@router.get("/requests", responses=_ERRORS)
async def list_requests(request: Request, ctx: Context, limit: Limit = 50,
                        after: Annotated[str | None, Query(max_length=100)] = None,
                        errors: bool = False, user: User = None) -> dict:
    """The caller's requests, newest first (an admin's: everyone's, or one user's)."""
    await settled(request)
    rows, more = await _run(store_of(request).stats.recent, ctx.principal,
                            limit=limit, after=after, user=user, errors=errors)
    data = [r.to_json() for r in rows]
    return {"object": "list", "data": data, "has_more": more,
            "first_id": data[0]["request_id"] if data else None,
            "last_id": data[-1]["request_id"] if data else None}


@router.get("/requests/{request_id}", responses=_ERRORS)
async def get_request(request_id: str, request: Request, ctx: Context) -> dict:
    """One request: where it went and why (the policy's reason and score, each candidate tried,
    errors, timings), tokens and cost. Nothing of the conversation is in it."""
    found = await trace_of(request, ctx.principal, request_id)
    if found is None:
        raise NotFoundError(f"request {request_id!r} not found")
    return found.to_json(trace=True)


async def trace_of(request: Request, principal: Principal, request_id: str):
    """The request `request_id` if the principal may read it, else None."""
    await settled(request)
    return await _run(store_of(request).stats.request, principal, request_id[:100])
