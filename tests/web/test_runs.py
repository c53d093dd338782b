"""The agent runs' pages in a real browser, on a server with one agent whose first step must
write a file (a write tool: the default policy asks the owner first). The model is a random
checkpoint, so the call is forced (force_tools) and what the tests check is what the pages do
with it: ana starts a run from /runs, watches it wait for her, approves it on its page and sees
the tool's output arrive live; she denies another from the list on /runs with a reason, and
cancels a third; markup she typed into a task stays text; ben gets the not-found page for her
run; the pages fit a 375 px screen in the dark theme.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from playwright.sync_api import expect

from tenshu.config import ModelSpec
from tenshu.config.agents import AgentSpec, AgentsSettings
from tests.api.live import live_server
from tests.web.conftest import shot, with_people
from tests.web.test_web_security import logged_in

WAIT_MS = 120_000  # far more than a run's step takes here
MARKUP = '<img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def site(tmp_path_factory, checkpoint):
    """This module's server (new_page in conftest.py logs in to it): ana, ben and boss, and the
    agent "cleaner"."""
    agents = AgentsSettings(agents=(AgentSpec(
        "cleaner", "agent-model", description="Tidies the workspace (asks before writing)",
        tools=("write_file", "delete_file"), force_tools=("write_file",), tool_choice="none",
        # room for the forced call's whole arguments (a path of up to 1000 characters, then
        # the text): a call cut off by max_tokens is refused unrun, and never asks
        max_tokens=800),), servers=())
    path = checkpoint("qwen3", max_position_embeddings=8192)
    with live_server(tmp_path_factory.mktemp("web-runs") / "state.db",
                     models=(ModelSpec("agent-model", str(path)),), kv_cache_memory_gib=0.25,
                     max_num_seqs=4, agents=agents) as live:
        yield with_people(live)


@pytest.fixture(scope="module")
def runs() -> dict:
    """The runs the module's tests made, by what they were for."""
    return {}


def api(site, method: str, path: str, who: str = "ana", **kwargs) -> httpx.Response:
    return httpx.request(method, site.base_url + "/tenshu/v1" + path, timeout=180,
                         headers={"Authorization": f"Bearer {site.keys[who]}"}, **kwargs)


def waiting_run(site, task: str) -> dict:
    """A run of ana's, started through the API, once it waits for her decision."""
    response = api(site, "POST", "/agents/cleaner/runs", json={"task": task, "wait": 120})
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["status"] == "waiting_approval", run
    return run


def pending_call(site, run_id: str) -> dict:
    steps = api(site, "GET", f"/runs/{run_id}").json()["steps"]
    return next(s for s in steps if s["status"] == "waiting_approval")


def ended(site, run_id: str) -> dict:
    deadline = time.monotonic() + WAIT_MS / 1000
    while (run := api(site, "GET", f"/runs/{run_id}").json())["status"] not in (
            "succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
    return run


def test_ana_starts_a_run_and_approves_its_call_live(site, new_page, runs):
    page, _ = new_page("ana")
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(site.base_url + "/runs")
    expect(page.locator("nav.nav a[data-nav=runs]")).to_have_class("active")
    expect(page.locator("#no-runs")).to_have_text(re.compile("No runs yet"))
    expect(page.locator("#run-agent option")).to_have_text(["cleaner"])
    expect(page.locator("#agent-about")).to_contain_text("write_file, delete_file")
    task = f"Tidy up {MARKUP} and say <b>done</b>"
    page.fill("#run-task-input", task)
    page.click("#start-button")
    page.wait_for_url(re.compile(r"/runs/run_[0-9a-f]+$"))
    run_id = page.url.rsplit("/", 1)[1]
    runs["approved"] = run_id

    # the run waits for ana, with the call it wants to make shown in full
    expect(page.locator("#run-status")).to_have_text("waiting approval", timeout=WAIT_MS)
    expect(page.locator("#run-waiting")).to_be_visible()
    call = pending_call(site, run_id)
    assert call["name"] == "write_file" and call["data"]["class"] == "write"
    step = page.locator(f'.run-step[data-seq="{call["seq"]}"]')
    expect(step).to_have_attribute("data-status", "waiting_approval")
    expect(step.locator(".run-tool")).to_have_text("write_file")
    expect(step.locator(".run-class")).to_have_text("write")
    expect(step.locator(".run-why")).to_have_text("write tools need approval")
    shown = step.locator(".run-json").first.text_content()
    assert json.loads(shown) == call["data"]["input"]
    # the model's step before it: the call it asked for
    expect(page.locator('.run-step[data-kind="model"] .run-call .run-tool')).to_have_text(
        "write_file")
    # what ana typed is text, never markup
    expect(page.locator("#run-task")).to_have_text(task)
    assert page.locator("main img").count() == 0
    # the first step's tokens, once its usage is read back from the journal
    first = api(site, "GET", f"/runs/{run_id}").json()
    expect(page.locator("#run-counts")).to_have_text(f"1 model step · {first['tokens']} tokens")
    shot(page, "run-waiting")

    step.locator('button[data-decide="approve"]').click()
    # the call runs and the run ends, followed live on the same page (no reload)
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=WAIT_MS)
    run = ended(site, run_id)
    assert run["status"] == "succeeded", run
    done = next(s for s in run["steps"] if s["seq"] == call["seq"])
    assert done["status"] in ("done", "failed"), done  # a random path may not be writable
    expect(step).to_have_attribute("data-status", done["status"])
    assert step.locator(".run-output").text_content() == done["data"]["output"]["text"]
    expect(step.locator(".run-decision")).to_have_text("approved by ana")
    expect(step.locator("button[data-decide]")).to_have_count(0)
    expect(page.locator("#cancel-run")).to_be_hidden()
    expect(page.locator(".run-step")).to_have_count(len(run["steps"]))
    model_steps = sum(s["kind"] == "model" for s in run["steps"])
    listed = next(r for r in api(site, "GET", "/runs").json()["data"] if r["id"] == run_id)
    assert listed["model_steps"] == model_steps
    expect(page.locator("#run-counts")).to_have_text(
        f"{model_steps} model steps · {run['tokens']} tokens")
    last = run["steps"][-1]  # the model's answer to the call's output: its text, as text
    said = "".join(b["text"] for b in last["data"]["message"]["content"] if b["type"] == "text")
    text = page.locator(f'.run-step[data-seq="{last["seq"]}"] .run-step-text')
    assert text.text_content() == (said or "(no text)")
    assert page.locator("main img").count() == 0
    assert dialogs == []
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "run-succeeded")

    # the list shows the run by its task, as text
    page.goto(site.base_url + "/runs")
    row = page.locator(f'#run-rows tr[data-run="{run_id}"]')
    expect(row.locator("a")).to_have_text(task)
    expect(row.locator(".badge")).to_have_text("succeeded")
    assert page.locator("main img").count() == 0
    assert dialogs == []


def test_ana_denies_a_call_from_the_list_with_a_reason(site, new_page, runs):
    task = f"Clear out the old drafts {MARKUP}"
    run = waiting_run(site, task)
    runs["denied"] = run["id"]
    call = pending_call(site, run["id"])
    page, _ = new_page("ana")
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(site.base_url + "/runs")
    item = page.locator(f'.run-approval[data-run="{run["id"]}"]')
    expect(item).to_be_visible()
    expect(item.locator("strong")).to_have_text("cleaner")
    expect(item.locator(".run-approval-task")).to_have_text(task)
    expect(item.locator(".run-tool")).to_have_text("write_file")
    expect(item.locator(".run-class")).to_have_text("write")
    expect(item.locator(".run-why")).to_have_text("write tools need approval")
    assert json.loads(item.locator(".run-json").text_content()) == call["data"]["input"]
    expect(page.locator(f'#run-rows tr[data-run="{run["id"]}"] .badge')).to_have_text(
        "waiting approval")
    assert page.locator("main img").count() == 0
    shot(page, "runs-pending")

    item.locator("input[name=reason]").fill("not before I have read them")
    item.locator('button[data-decide="deny"]').click()
    expect(item).to_have_count(0)
    expect(page.locator("#no-approvals")).to_be_visible()
    finished = ended(site, run["id"])
    assert finished["status"] == "succeeded", finished  # the model is told, and goes on
    expect(page.locator(f'#run-rows tr[data-run="{run["id"]}"] .badge')).to_have_text(
        "succeeded", timeout=WAIT_MS)

    page.goto(site.base_url + f"/runs/{run['id']}")
    step = page.locator(f'.run-step[data-seq="{call["seq"]}"]')
    expect(step).to_have_attribute("data-status", "denied")
    expect(step.locator(".run-step-status")).to_have_text("denied")
    expect(step.locator(".run-output")).to_contain_text(
        "denied by ana: not before I have read them")
    expect(page.locator("#run-status")).to_have_text("succeeded")
    assert dialogs == []


def test_ana_cancels_a_waiting_run(site, new_page, runs):
    run = waiting_run(site, "Delete everything")
    runs["cancelled"] = run["id"]
    call = pending_call(site, run["id"])
    page, _ = new_page("ana")
    page.goto(site.base_url + f"/runs/{run['id']}")
    step = page.locator(f'.run-step[data-seq="{call["seq"]}"]')
    expect(step.locator('button[data-decide="approve"]')).to_be_visible()
    page.once("dialog", lambda d: d.accept())
    page.click("#cancel-run")
    expect(page.locator("#run-status")).to_have_text("cancelled")
    expect(page.locator("#run-why")).to_have_text("cancelled by ana")
    expect(page.locator("#cancel-run")).to_be_hidden()
    # the call it waited on is closed, and may no longer be decided
    expect(step).to_have_attribute("data-status", "denied")
    expect(step.locator(".run-output")).to_contain_text("the run was cancelled by ana")
    expect(step.locator("button[data-decide]")).to_have_count(0)
    assert api(site, "GET", f"/runs/{run['id']}").json()["status"] == "cancelled"
    assert api(site, "GET", "/approvals").json()["data"] == []


def test_ben_gets_the_not_found_page_for_anas_run(site, new_page, runs):
    assert runs, "the tests before this one made ana's runs"
    # Chromium logs a page answered 404 as a console error: those, and nothing else, are expected
    page, watcher = new_page("ben", expect_errors=True)
    for run_id in [*runs.values(), "run_000000000000000000000000", "not a run"]:
        response = page.goto(site.base_url + "/runs/" + run_id)
        assert response.status == 404, run_id
        expect(page.locator("h1")).to_have_text("Not found")
        expect(page.locator("main")).not_to_contain_text("cleaner")
    assert watcher.errors and all("status of 404" in e for e in watcher.errors), watcher.errors
    watcher.errors.clear()
    page.goto(site.base_url + "/runs")
    expect(page.locator("#no-runs")).to_have_text(re.compile("No runs yet"))
    expect(page.locator("#no-approvals")).to_have_text("No calls are waiting for a decision.")
    expect(page.locator("#run-rows tr")).to_have_count(0)


def test_the_pages_fit_a_narrow_screen_in_the_dark(site, new_page, runs):
    waiting = waiting_run(site, "A long task " * 20)
    page, _ = new_page("ana", width=375, height=800)
    page.goto(site.base_url + "/runs")
    page.click("#theme-toggle")
    if page.evaluate("document.documentElement.dataset.theme") == "light":
        page.click("#theme-toggle")  # the system was dark: one more click
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(20, 23, 28)"
    expect(page.locator(f'.run-approval[data-run="{waiting["id"]}"]')).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(page, "runs-narrow-dark")
    for run_id in (waiting["id"], runs["approved"]):
        page.goto(site.base_url + f"/runs/{run_id}")
        expect(page.locator(".run-step").first).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.goto(site.base_url + f"/runs/{waiting['id']}")
    expect(page.locator("#run-status")).to_have_text("waiting approval")
    shot(page, "run-narrow-dark")
    assert api(site, "POST", f"/runs/{waiting['id']}/cancel").status_code == 200
    expect(page.locator("#run-status")).to_have_text("cancelled")


def test_the_pages_need_a_login_and_carry_the_strict_policy(site, runs):
    response = httpx.get(site.base_url + "/runs/" + runs["approved"])
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next=/runs/{runs['approved']}"
    client, _ = logged_in(site, "ana")
    for path in ("/runs", "/runs/" + runs["approved"]):
        response = client.get(path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "<script>" not in response.text and " style=" not in response.text
    # the task, server-rendered, is escaped
    assert "Tidy up &lt;img src=x onerror=alert(1)&gt;" in response.text
