"""/runs: the viewer's agent runs, the calls waiting for their decision, a form to start a run;
and one run, followed live.

    GET /runs          the skeleton; static/js/runs.js fills it from /tenshu/v1/approvals,
                       /tenshu/v1/runs and /tenshu/v1/agents, and approves, denies and starts
    GET /runs/{id}     one run: its record is read here with the viewer's principal (the same
                       store function GET /tenshu/v1/runs/{id} calls), so another user's run is
                       the not-found page, exactly as a missing one; runs.js then follows
                       /tenshu/v1/runs/{id}/events for its steps, approves, denies and cancels

Everything a model or a person wrote (the task, the model's text, a call's arguments, a tool's
output) is put in the page as text: escaped here by Jinja, set as text nodes by runs.js.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from tenshu.web.login import to_login, viewer_of
from tenshu.web.pages import not_found, render

router = APIRouter(include_in_schema=False)


@router.get("/runs")
async def runs_page(request: Request):
    viewer = await viewer_of(request)
    if viewer is None:
        return to_login(request)
    return render(request, viewer, "runs.html", active="runs")


@router.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str):
    viewer = await viewer_of(request)
    if viewer is None:
        return to_login(request)
    run = await run_in_threadpool(request.app.state.store.runs.get, viewer.principal, run_id)
    if run is None:
        return not_found(request, viewer, "run")
    return render(request, viewer, "run.html", active="runs", run=run)
