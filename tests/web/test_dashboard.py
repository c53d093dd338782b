"""The dashboard and the trace explorer in a real browser: after ana's chat requests (one of
them failed) the charts are drawn with data, her trace pages show each candidate tried, ben
gets the not-found page for her trace, and the pages fit a 375 px screen. And what charts.py
draws escapes every label."""

from __future__ import annotations

import math
import re
from datetime import timedelta

import httpx
import pytest
from playwright.sync_api import expect

from tenshu.router.trace import Attempt, Trace
from tenshu.store import AuditRecord
from tenshu.store.audit import write_audit
from tenshu.store.sql import begin_write, utcnow
from tenshu.web import charts
from tenshu.web.charts import Series, Span
from tests.web.conftest import shot

CHAT = {"model": "tenshu-tiny", "max_tokens": 12,
        "messages": [{"role": "user", "content": "tell me about the keep"}]}


@pytest.fixture(scope="module")
def requests_made(site):
    """ana's three chat requests through the API with her key (the last one too long for the
    model: it fails), ben's one, and 25 older requests of ana's from the day before's log."""
    def chat(who: str, body: dict) -> httpx.Response:
        return httpx.post(site.base_url + "/v1/chat/completions", json=body, timeout=120,
                          headers={"Authorization": f"Bearer {site.keys[who]}"})

    answered = [chat("ana", CHAT), chat("ana", {**CHAT, "max_tokens": 24})]
    failed = chat("ana", {**CHAT, "messages": [{"role": "user", "content": "moat " * 3000}]})
    bens = chat("ben", CHAT)
    assert [r.status_code for r in [*answered, failed, bens]] == [200, 200, 400, 200]
    store = site.server.store
    ana = store.users.get("ana").id
    older = Trace(reason="model", attempts=[Attempt("tenshu-tiny", "ok", None, 12.0)])
    with begin_write(store.engine) as conn:  # hours ago: outside the last hour's charts
        write_audit(conn, [AuditRecord(
            request_id=f"req_older{i:04d}", protocol="anthropic", route="/v1/messages",
            model="tenshu-tiny", routed="tenshu-tiny", backend="tenshu-tiny", input_tokens=9,
            output_tokens=20, ttft_ms=12.0, duration_ms=90.0, trace=older.to_json(),
            user_id=ana, ts=utcnow() - timedelta(hours=3, minutes=i)) for i in range(25)])
    return {"ok": answered[0].headers["request-id"], "failed": failed.headers["request-id"],
            "ben": bens.headers["request-id"]}


def test_the_dashboard_draws_anas_requests(new_page, site, requests_made):
    page, _ = new_page("ana")
    page.goto(site.base_url + "/dashboard?period=1h")  # only the requests just made
    expect(page.locator(".dash-periods a.active")).to_have_text("1h")
    for chart in ("requests", "tokens", "latency", "ttft", "per-token", "routes", "backends",
                  "fallbacks", "spend"):
        svg = page.locator(f"#chart-{chart} svg.chart")
        expect(svg).to_be_visible()
        expect(svg).not_to_have_class(re.compile(r"\bempty-chart\b"))
    expect(page.locator("#chart-requests polyline.line")).to_have_count(2)  # requests, failed
    assert page.locator("#chart-ttft rect.s1").count() >= 1
    expect(page.locator("#chart-fallbacks svg")).to_contain_text("context_length_exceeded")
    expect(page.locator("#chart-routes svg")).to_contain_text("tenshu-tiny")
    # no route here asks the sentinel, and no budget is configured: those say so
    expect(page.locator("#chart-verdicts svg.empty-chart")).to_contain_text("sentinel")
    expect(page.locator("#chart-budgets svg.empty-chart")).to_be_visible()
    expect(page.locator(".dash-value").first).to_have_text("3")  # requests
    rows = page.locator("#request-rows tr")
    expect(rows.first.locator("a")).to_have_attribute("href", f"/traces/{requests_made['failed']}")
    expect(rows.first).to_contain_text("context_length_exceeded")
    assert page.locator(f"a[href='/traces/{requests_made['ben']}']").count() == 0
    shot(page, "dashboard")


def test_the_explorer_loads_more_and_the_period_changes(new_page, site, requests_made):
    page, _ = new_page("ana")
    page.goto(site.base_url + "/dashboard")
    rows = page.locator("#request-rows tr")
    expect(rows).to_have_count(20)
    page.click("#more-requests")
    expect(rows).to_have_count(28)  # ana's 3 and 25 older; ben's is not hers
    expect(page.locator("#more-requests")).to_have_count(0)
    expect(rows.last.locator("a")).to_have_attribute("href", "/traces/req_older0024")
    page.click(".dash-periods a:text-is('7d')")
    page.wait_for_url(re.compile(r"period=7d"))
    expect(page.locator(".dash-periods a[aria-current=page]")).to_have_text("7d")
    expect(page.locator(".dash-value").first).to_have_text("28")


def test_an_admin_picks_a_user(new_page, site, requests_made):
    page, _ = new_page("boss")
    page.goto(site.base_url + "/dashboard")
    expect(page.locator(".dash-value").first).to_have_text("29")  # everyone's
    page.select_option("#dash-user-pick", "ben")
    page.wait_for_url(re.compile(r"user=ben"))
    expect(page.locator(".dash-value").first).to_have_text("1")
    expect(page.locator("#request-rows tr")).to_have_count(1)
    expect(page.locator("#request-rows")).to_contain_text("ben")


def test_a_trace_shows_each_candidate_tried(new_page, site, requests_made):
    page, _ = new_page("ana")
    page.goto(site.base_url + "/dashboard?period=1h")
    page.locator(f"a[href='/traces/{requests_made['failed']}']").click()
    page.wait_for_url(f"**/traces/{requests_made['failed']}")
    attempts = page.locator("#trace-attempts .attempt")
    expect(attempts).to_have_count(1)
    expect(attempts.first).to_contain_text("tenshu-tiny")
    expect(attempts.first.locator(".badge.bad")).to_have_text("error")
    expect(attempts.first.locator(".attempt-error")).to_contain_text("context_length_exceeded")
    expect(page.locator("#trace-decision")).to_contain_text("nobody (after 1 fallback)")
    # the answered request, by its turn's id as the chat page links it
    turn = "turn_" + requests_made["ok"].removeprefix("req_")
    page.goto(site.base_url + f"/traces/{turn}")
    expect(page.locator("h1")).to_contain_text(requests_made["ok"])
    expect(page.locator("#trace-attempts .attempt .badge.good")).to_have_text("ok")
    expect(page.locator("#trace-decision")).to_contain_text("model")  # the policy's reason
    timing = page.locator("#trace-timing svg.chart")
    expect(timing).not_to_have_class(re.compile(r"\bempty-chart\b"))
    expect(timing.locator("rect.s3")).to_have_count(1)  # the candidate that answered
    expect(timing.locator("rect.s1")).to_have_count(1)  # writing the answer
    expect(page.locator("#trace-timing")).to_contain_text("First token")
    shot(page, "trace")


def test_ben_gets_the_not_found_page_for_anas_trace(new_page, site, requests_made):
    page, watcher = new_page("ben", expect_errors=True)
    for request_id in (requests_made["ok"], "turn_" + requests_made["ok"][4:],
                       "req_0123456789abcdef01234567"):
        response = page.goto(site.base_url + f"/traces/{request_id}")
        assert response.status == 404
        expect(page.locator("h1")).to_have_text("Not found")
        expect(page.locator("main")).not_to_contain_text("tenshu-tiny")
    # the browser reports each 404 it loaded, and nothing else
    assert watcher.errors and all("404" in e for e in watcher.errors), watcher.errors
    page.goto(site.base_url + f"/traces/{requests_made['ben']}")
    expect(page.locator("#trace-attempts")).to_contain_text("tenshu-tiny")


@pytest.mark.parametrize("path", ["/dashboard", "/traces/{failed}"])
def test_the_pages_fit_a_narrow_screen(new_page, site, requests_made, path):
    page, _ = new_page("ana", width=375, height=800)
    page.goto(site.base_url + path.format(**requests_made))
    expect(page.locator("svg.chart").first).to_be_visible()
    overflow = page.evaluate("document.body.scrollWidth - document.body.clientWidth")
    assert overflow <= 0, f"{path} is {overflow}px wider than a 375px screen"
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_charts_escape_every_label_and_say_when_there_is_nothing():
    """No browser needed: what charts.py draws, as text."""
    hostile = '<script>alert(1)</script>"'
    drawn = [
        charts.bars([hostile], [Series(hostile, [3]), Series("b", [1])], title=hostile),
        charts.time_series([hostile, "b"], [Series(hostile, [1, None])], title=hostile),
        charts.histogram([0, 10, math.inf], [Series(hostile, [2, 1])], title=hostile,
                         edge_fmt=charts.ms, legend=True),
        charts.meters([(hostile, 1.5, hostile)], title=hostile),
        charts.waterfall([Span(hostile, 0, 10, "s3", hostile)], title=hostile),
    ]
    for svg in drawn:
        assert "<script" not in svg and "&lt;script&gt;" in svg and "style=" not in svg
        assert svg.startswith('<svg class="chart') and "viewBox=" in svg and "<title>" in svg
        assert "empty-chart" not in svg
    assert "10 ms and more" in drawn[2]  # the open last bin
    assert 'class="s5"' in drawn[3]  # a budget past its limit is red
    for nothing in (charts.bars([], [], title="x"),
                    charts.time_series(["a", "b"], [Series("s", [0, None])], title="x"),
                    charts.histogram([], [], title="x"), charts.meters([], title="x")):
        assert "empty-chart" in nothing and "<rect" not in nothing
