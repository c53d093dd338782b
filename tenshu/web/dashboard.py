"""/dashboard and /traces/{id}: what the server did, in pictures.

    /dashboard?period=24h[&user=NAME]   requests, tokens and latency over time, latency
                                        histograms, routes and deployments, fallbacks and their
                                        causes, the sentinel's verdicts, budgets and spend per
                                        key and tier, and the latest requests (the explorer)
    /traces/{request_id}                one request: the policy's decision and score, why it
                                        stayed private, each candidate tried, who served, its
                                        timings, tokens and cost, what memory gave

The numbers come from the same functions as /tenshu/v1/stats and /tenshu/v1/requests
(api/stats.py), read with the viewer's principal: a member sees their own requests, an admin
everyone's. The charts are SVG drawn here (charts.py), so the page is whole without a script;
static/js/dashboard.js only loads more of the explorer and submits the admin's user picker.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from tenshu.api.stats import BudgetUse, overview, trace_of
from tenshu.api.tenshu import store_of
from tenshu.core.errors import NotFoundError
from tenshu.store.stats import PERIODS, SCORE_EDGES, Overview
from tenshu.web import charts
from tenshu.web.charts import Series, Span
from tenshu.web.login import to_login, viewer_of
from tenshu.web.pages import not_found, render

router = APIRouter(include_in_schema=False)
RECENT = 20  # requests in the explorer's first page
_OUTCOME = {"ok": "s3", "error": "s5"}  # a skipped candidate is drawn as a track
# a step's length in seconds, and the strides (in steps) the time axis may label at
_STRIDES = {"minute": (60, (1, 5, 10, 15, 30, 60)), "hour": (3600, (1, 2, 3, 6, 12, 24, 48)),
            "day": (86400, (1, 2, 7, 14))}


@router.get("/dashboard")
async def dashboard_page(request: Request, period: str = "24h", user: str | None = None):
    viewer = await viewer_of(request)
    if viewer is None:
        return to_login(request)
    principal = viewer.principal
    period = period if period in PERIODS else "24h"
    user = (user or "").strip() or None
    try:
        found, budgets = await overview(request, principal, period, user)
    except NotFoundError:
        return not_found(request, viewer, "user of that name")
    store = store_of(request)

    def read():
        recent = store.stats.recent(principal, limit=RECENT, user=user)
        names = [u.name for u in store.users.list()] if principal.admin else []
        return recent, names

    (rows, more), users = await run_in_threadpool(read)
    return render(request, viewer, "dashboard.html", active="dashboard", period=period,
                  periods=list(PERIODS), user=user, users=users, totals=tiles(found),
                  charts=draw(found, budgets), rows=[row_view(r) for r in rows], more=more,
                  admin=principal.admin)


@router.get("/traces/{request_id}")
async def trace_page(request: Request, request_id: str):
    viewer = await viewer_of(request)
    if viewer is None:
        return to_login(request)
    found = await trace_of(request, viewer.principal, request_id)
    if found is None:
        return not_found(request, viewer, "request")
    r, details = found.record, found.details
    attempts = [a for a in details.get("attempts") or [] if isinstance(a, dict)]
    return render(request, viewer, "trace.html", active="dashboard", r=found.to_json(),
                  when=_when(r.ts), details=details, attempts=attempts,
                  timing=timeline(attempts, r.ttft_ms, r.duration_ms, r.output_tokens),
                  admin=viewer.principal.admin, ms=_ms, usd=_usd)


# -- what the page shows ------------------------------------------------------------------------


def tiles(found: Overview) -> list[tuple[str, str, str]]:
    """(label, value, hint) of the period's totals."""
    t = found.totals
    failed = t["errors"] / t["requests"] if t["requests"] else 0
    return [
        ("Requests", charts.count(t["requests"]), f"{t['errors']} failed ({failed:.0%})"),
        ("Tokens", charts.count(t["input_tokens"] + t["output_tokens"]),
         f"{charts.count(t['input_tokens'])} in, {charts.count(t['output_tokens'])} out"),
        ("Latency p50", _ms(t["p50_ms"]), f"p95 {_ms(t['p95_ms'])}"),
        ("First token p50", _ms(t["ttft_p50_ms"]), f"p95 {_ms(t['ttft_p95_ms'])}"),
        ("Per token p50", _ms(t["per_token_p50_ms"]), "after the first"),
        ("Fallbacks", charts.count(t["fallbacks"]), f"cost {_usd(t['cost_usd'])}"),
    ]


def draw(found: Overview, budgets: list[BudgetUse]) -> dict[str, Markup]:
    """Every chart of the dashboard, as SVG."""
    b = found.buckets
    labels = [x.start.strftime("%d %b" if found.step == "day" else "%d %b %H:%M") for x in b]
    ticks = _ticks([x.start for x in b], found.step)
    latency = [Series("p50", [x.p50_ms for x in b]), Series("p95", [x.p95_ms for x in b])]
    return {
        "requests": charts.time_series(labels, [
            Series("requests", [x.requests for x in b]),
            Series("failed", [x.errors for x in b], "s5")],
            title="Requests over time", area=True, integer=True, ticks=ticks),
        "tokens": charts.time_series(labels, [
            Series("input", [x.input_tokens for x in b]),
            Series("output", [x.output_tokens for x in b])],
            title="Tokens over time", area=True, integer=True, ticks=ticks),
        "latency": charts.time_series(labels, latency, title="Latency over time", fmt=charts.ms,
                                      ticks=ticks),
        "ttft": _latency_histogram(found.ttft, "Time to first token"),
        "per_token": _latency_histogram(found.per_token, "Latency per output token"),
        "routes": _split(found.routes, "Requests by route"),
        "backends": _split(found.backends, "Requests by deployment"),
        "fallbacks": _fallbacks(found.fallbacks),
        "verdicts": charts.histogram(SCORE_EDGES, [
            Series(f"tier {tier}", counts) for tier, counts in found.verdicts.items()],
            title="The sentinel's scores, by the tier chosen", edge_fmt=lambda v: f"{v:.1f}",
            legend=True)
        if found.verdicts else charts.empty("The sentinel's scores",
                                            "The sentinel scored no request in this period"),
        "budgets": charts.meters([(_budget_name(u), u.share, _budget_text(u))
                                  for u in budgets], title="Budgets today",
                                 message="No budget covers these keys"),
        "spend": charts.bars(
            [f"{key or 'no key'} · {tier or 'no tier'}" for key, tier, _ in found.spend],
            [Series("tokens", [t.tokens for _, _, t in found.spend])],
            title="Tokens by key and tier",
            notes=[f"{charts.count(t.tokens)} tokens" + (f", {_usd(t.cost_usd)}"
                                                         if t.cost_usd else "")
                   for _, _, t in found.spend]),
    }


def row_view(row) -> dict:
    """One request of the explorer, as the table shows it (dashboard.js builds the same)."""
    r = row.record
    return {"id": r.request_id, "when": _when(r.ts), "iso": r.ts.isoformat(),
            "model": r.routed or r.model or "-", "backend": r.backend or "none",
            "status": r.status, "error": r.error_kind or "", "ms": _ms(r.duration_ms),
            "tokens": f"{r.input_tokens} / {r.output_tokens}", "fallbacks": r.fallbacks,
            "user": row.user or "-"}


def timeline(attempts: list[dict], ttft: float | None, duration: float,
             output_tokens: int) -> Markup:
    """The request on one time axis: each candidate in turn, then the answer being written."""
    spans, at = [], 0.0
    for i, a in enumerate(attempts, 1):
        took = float(a.get("ms") or 0.0)
        outcome = str(a.get("outcome") or "")
        note = f"{outcome}: {a['error']}" if a.get("error") else outcome
        spans.append(Span(f"{i}. {a.get('backend')}", at, at + took,
                          _OUTCOME.get(outcome, "track"), note))
        at += took
    if ttft is not None:
        spans.append(Span(f"answer ({output_tokens} tokens)", ttft, max(duration, ttft), "s1",
                          "from the first token to the end"))
    return charts.waterfall(spans, title="Where the time went")


# -- helpers ------------------------------------------------------------------------------------


def _latency_histogram(h, title: str) -> Markup:
    return charts.histogram(h.edges, [Series("requests", h.counts)], title=title,
                            edge_fmt=charts.ms)


def _split(tallies, title: str) -> Markup:
    """Bars of answered and failed requests per name."""
    return charts.bars([t.name for t in tallies], [
        Series("answered", [t.requests - t.errors for t in tallies], "s1"),
        Series("failed", [t.errors for t in tallies], "s5")], title=title)


def _fallbacks(causes: list[tuple[str, str, int]]) -> Markup:
    """Failed candidates per deployment, stacked by the error's kind."""
    if not causes:
        return charts.empty("Fallbacks", "No candidate failed in this period")
    backends = list(dict.fromkeys(b for b, _, _ in causes))
    kinds = list(dict.fromkeys(k for _, k, _ in causes))
    n = {(b, k): c for b, k, c in causes}
    return charts.bars(backends, [Series(k, [n.get((b, k), 0) for b in backends])
                                  for k in kinds], title="Failed candidates, by cause",
                       legend=True)


def _budget_name(u: BudgetUse) -> str:
    return f"{'key ' + u.key if u.key else 'all keys'} · " \
           f"{'tier ' + u.tier if u.tier else 'cloud models'}"


def _budget_text(u: BudgetUse) -> str:
    parts = []
    if u.daily_tokens is not None:
        parts.append(f"{charts.count(u.tokens)} of {charts.count(u.daily_tokens)} tokens")
    if u.daily_usd is not None:
        parts.append(f"{_usd(u.cost_usd)} of {_usd(u.daily_usd)}")
    return ", ".join(parts)


def _ticks(starts: list[datetime], step: str) -> list[tuple[int, str]]:
    """The axis' labels: at most six, on round times (every 10 minutes, 6 hours, a week...)."""
    unit, strides = _STRIDES[step]
    stride = next((s for s in strides if len(starts) / s <= 6), strides[-1])
    text = "%d %b" if step == "day" else "%a %d" if stride >= 24 else "%H:%M"
    return [(i, t.strftime(text)) for i, t in enumerate(starts)
            if int(t.timestamp() // unit) % stride == 0]


def _when(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _ms(value: float | None) -> str:
    return "-" if value is None else charts.ms(value)


def _usd(value: float) -> str:
    if not value:
        return "$0"
    return f"${value:.2f}" if value >= 1 else f"${value:.4f}"
