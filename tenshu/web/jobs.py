"""/jobs: the jobs the server runs on schedules, for admins: each job's schedule and state, Run
now, Pause and Resume, a job's runs and a run's log.

    GET /jobs      the skeleton; static/js/jobs.js fills it from /tenshu/v1/jobs, a job's runs
                   from /tenshu/v1/jobs/{name}/runs and a run's log from
                   /tenshu/v1/jobs/runs/{id}/log, and runs, pauses and resumes through the same
                   API (api/jobs.py)

Jobs are the server's, not a person's: a member asking for /jobs gets the page anyone gets for
what is not theirs, as on /admin (and the API answers them 403). A log is a program's output: it
goes into the page as text.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from tenshu.web.login import to_login, viewer_of
from tenshu.web.pages import not_found, render

router = APIRouter(include_in_schema=False)


@router.get("/jobs")
async def jobs_page(request: Request):
    viewer = await viewer_of(request)
    if viewer is None:
        return to_login(request)
    if not viewer.principal.admin:
        return not_found(request, viewer, "page")
    return render(request, viewer, "jobs.html", active="jobs")
