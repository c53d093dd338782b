"""The jobs page in a real browser (web/jobs.py, static/js/jobs.js), on a server whose scheduler
runs three trivial jobs: boss (an admin) sees them, runs one now and watches its run succeed
with its log ("hello") on the same page; pauses and resumes it; runs a failing one and reads why,
its log's markup left as text; the page fits a 375 px screen. ben (a member) has no Jobs in his top bar, and /jobs is the
not-found page to him. The log endpoint (GET /tenshu/v1/jobs/runs/{id}/log) is admins' only,
404 for an unknown run, and sends the end of a long log cut to whole lines.
"""

from __future__ import annotations

import re
import sys
import time

import httpx
import pytest
from playwright.sync_api import expect

from tenshu.jobs import Job, JobRun, parse_schedule
from tests.api.live import live_server
from tests.web.conftest import shot, with_people
from tests.web.test_web_security import logged_in

WAIT_MS = 60_000
MARKUP = "<img src=x onerror=alert(1)> <b>bold</b>"
# Schedules that come due years from now (the next 29 February, every 9999 days since 1970:
# 2052), so that a run of the suite at any hour never meets a scheduled run.
JOBS = [
    Job("hello", parse_schedule("every 9999d"), [sys.executable, "-c", "print('hello')"]),
    Job("nightly", parse_schedule("0 3 29 2 *", "UTC"),
        [sys.executable, "-c", f"print({MARKUP!r}); exit(2)"]),
    Job("chatty", None, [sys.executable, "-c", "for i in range(500): print(f'line {i:04}')"]),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """This module's server (new_page in conftest.py logs in to it): ana, ben and boss, and the
    scheduler's jobs above."""
    with live_server(tmp_path_factory.mktemp("web-jobs") / "state.db", embedder=False,
                     jobs=JOBS) as live:
        yield with_people(live)


def api(site, method: str, path: str, who: str = "boss", **kwargs) -> httpx.Response:
    return httpx.request(method, site.base_url + "/tenshu/v1" + path, timeout=60,
                         headers={"Authorization": f"Bearer {site.keys[who]}"}, **kwargs)


def ended(site, run_id: str) -> dict:
    """The run's record once it has ended, as the server's scheduler wrote it."""
    store, deadline = site.server.app.state.scheduler.store, time.monotonic() + WAIT_MS / 1000
    while not (run := store.run(run_id)).ended:
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
    return run.to_json()


def row(page, name: str):
    return page.locator(f'#job-rows tr[data-job="{name}"]')


def test_boss_runs_a_job_and_reads_its_log(site, new_page):
    page, _ = new_page("boss")
    expect(page.locator("nav.nav a[data-nav=jobs]")).to_have_text("Jobs")
    page.click("nav.nav a[data-nav=jobs]")
    expect(page.locator("nav.nav a[data-nav=jobs]")).to_have_class("active")
    expect(page.locator("#job-rows tr")).to_have_count(3)
    hello = row(page, "hello")
    expect(hello.locator(".job-schedule")).to_have_text("every 9999d")
    expect(row(page, "nightly").locator(".job-schedule")).to_have_text("0 3 29 2 * (UTC)")
    expect(row(page, "chatty").locator(".job-schedule")).to_have_text("by hand")
    expect(hello.locator(".job-state")).to_have_text("active")
    expect(hello.locator(".job-last")).to_have_text("never")
    assert hello.locator(".job-next time").get_attribute("datetime") == \
        api(site, "GET", "/jobs").json()["data"][0]["next_run_at"]

    hello.locator("button[data-act=run]").click()
    page.wait_for_url(re.compile(r"/jobs\?job=hello&log=jobrun_[0-9a-f]+$"))
    run_id = page.url.rsplit("=", 1)[1]
    expect(page.locator("#log-status")).to_have_text("succeeded", timeout=WAIT_MS)
    expect(page.locator("#log-text")).to_contain_text(f"# {run_id}: hello (manual) at ")
    assert page.locator("#log-text").text_content().splitlines()[-1] == "hello"
    run = ended(site, run_id)
    assert run["status"] == "succeeded"
    history = page.locator(f'#run-rows tr[data-run="{run_id}"]')
    expect(history).to_have_attribute("data-status", "succeeded")
    expect(history.locator(".job-trigger")).to_have_text("manual")
    expect(history.locator(".job-exit")).to_have_text("0")
    expect(history.locator("a")).to_have_attribute("href", f"/jobs?job=hello&log={run_id}")
    expect(hello.locator(".job-last .badge")).to_have_text("succeeded")
    expect(page.locator("#log-facts")).to_contain_text(run["log"])
    shot(page, "jobs")

    # the address keeps what is shown: a reload shows the same log
    page.reload()
    expect(page.locator("#log-run")).to_have_text(run_id)
    expect(page.locator("#log-text")).to_contain_text("hello")


def test_pause_and_resume_change_the_state_shown(site, new_page):
    page, _ = new_page("boss")
    page.goto(site.base_url + "/jobs")
    hello = row(page, "hello")
    hello.locator("button[data-act=pause]").click()
    expect(hello.locator(".job-state")).to_have_text("paused")
    expect(hello.locator(".job-next")).to_have_text("–")
    job = api(site, "GET", "/jobs").json()["data"][0]
    assert (job["name"], job["paused"], job["next_run_at"]) == ("hello", True, None)
    page.reload()  # as the server has it, not as the page last drew it
    expect(hello.locator(".job-state")).to_have_text("paused")

    hello.locator("button[data-act=resume]").click()
    expect(hello.locator(".job-state")).to_have_text("active")
    expect(hello.locator("button[data-act=pause]")).to_be_visible()
    expect(hello.locator(".job-next time")).to_be_visible()
    assert not site.server.app.state.scheduler.state("hello").paused


def test_a_failed_run_says_why_and_its_log_is_text(site, new_page):
    page, _ = new_page("boss")
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(site.base_url + "/jobs")
    row(page, "nightly").locator("button[data-act=run]").click()
    page.wait_for_url(re.compile(r"log=jobrun_"))
    run_id = page.url.rsplit("=", 1)[1]
    expect(page.locator("#log-status")).to_have_text("failed", timeout=WAIT_MS)
    history = page.locator(f'#run-rows tr[data-run="{run_id}"]')
    expect(history.locator(".job-why")).to_have_text("exited with code 2")
    expect(history.locator(".job-exit")).to_have_text("2")
    assert page.locator("#log-text").text_content().splitlines()[-1] == MARKUP
    assert page.locator("main img, main b").count() == 0
    assert dialogs == []

    # another job's runs, chosen from the list, without leaving the page
    row(page, "hello").locator("a").first.click()
    expect(page).to_have_url(re.compile(r"/jobs\?job=hello$"))
    expect(page.locator("#runs-of")).to_have_text("hello")
    expect(page.locator("#job-log")).to_be_hidden()


def test_the_log_endpoint(site):
    chatty = api(site, "POST", "/jobs/chatty/run")
    assert chatty.status_code == 202
    path = f"/jobs/runs/{ended(site, chatty.json()['id'])['id']}/log"
    whole = api(site, "GET", path)
    assert whole.status_code == 200 and whole.headers["content-type"].startswith("text/plain")
    assert whole.text.splitlines()[-1] == "line 0499"
    assert int(whole.headers["x-tenshu-log-size"]) == len(whole.content)
    end = api(site, "GET", path, params={"tail": 1})
    assert len(end.content) <= 1024 and end.text.endswith("line 0499\n")
    assert end.text.startswith("line ") and whole.text.endswith(end.text)  # whole lines
    assert end.headers["x-tenshu-log-size"] == whole.headers["x-tenshu-log-size"]

    refused = api(site, "GET", path, who="ben")
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "only an admin may see and run jobs"
    assert api(site, "GET", "/jobs/runs/jobrun_nope/log", who="ben").status_code == 403
    missing = api(site, "GET", "/jobs/runs/jobrun_nope/log")
    assert missing.status_code == 404 and "no job run 'jobrun_nope'" in missing.text
    assert api(site, "GET", path, params={"tail": 0}).status_code == 400
    skipped = JobRun.new("hello", "schedule", "skipped", why="hello was still running")
    waiting = JobRun.new("hello", "schedule", "queued")  # not started: no file yet
    for run in (skipped, waiting):
        site.server.store.jobs.record(run)
    none = api(site, "GET", f"/jobs/runs/{skipped.id}/log")
    assert none.status_code == 404
    assert "it was skipped, so nothing ran (hello was still running)" in none.text
    assert api(site, "GET", f"/jobs/runs/{waiting.id}/log").text == ""
    site.server.store.jobs.record(waiting.end("cancelled", "made up by this test"))
    # the page's own way in: boss's session cookie
    client, _ = logged_in(site, "boss")
    assert client.get("/tenshu/v1" + path).text == whole.text


def test_the_page_fits_a_narrow_screen_in_the_dark(site, new_page):
    run = api(site, "POST", "/jobs/nightly/run").json()
    ended(site, run["id"])
    page, _ = new_page("boss", width=375, height=800)
    page.goto(site.base_url + f"/jobs?job=nightly&log={run['id']}")
    page.click("#theme-toggle")
    if page.evaluate("document.documentElement.dataset.theme") == "light":
        page.click("#theme-toggle")  # the system was dark: one more click
    expect(page.locator("#log-status")).to_have_text("failed")
    expect(row(page, "hello").locator("button[data-act=run]")).to_be_visible()
    shot(page, "jobs-narrow-dark")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_a_member_has_no_jobs_page(site, new_page):
    page, watcher = new_page("ben", expect_errors=True)
    expect(page.locator("nav.nav a[data-nav=chat]")).to_be_visible()
    expect(page.locator("nav.nav a[data-nav=jobs]")).to_have_count(0)
    answer = page.goto(site.base_url + "/jobs")
    assert answer.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator("#job-rows")).to_have_count(0)
    # the one console line is the browser's note of the 404 itself
    assert all("404" in error for error in watcher.errors), watcher.errors
    assert httpx.get(site.base_url + "/jobs").status_code == 303  # no login: the login page
