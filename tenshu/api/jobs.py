"""/tenshu/v1/jobs: the jobs the server runs on schedules, and their runs. Admins only; JSON in
OpenAI's error shape; in the OpenAPI document.

    GET  /tenshu/v1/jobs                   every job: its schedule, heavy or not, paused or not,
                                           when it is next due, its run in flight or deferred
                                           (waiting for the energy policy), its last run
    GET  /tenshu/v1/jobs/{name}/runs       its runs, newest first (limit, after)
    POST /tenshu/v1/jobs/{name}/run        run it now, heavy or not: 202 with the run (queued,
                                           or skipped when the job is running already)
    POST /tenshu/v1/jobs/{name}/pause      no scheduled runs until it is resumed
    POST /tenshu/v1/jobs/{name}/resume     scheduled again, from now
    GET  /tenshu/v1/jobs/runs/{id}/log     a run's output as the scheduler wrote it, as text:
                                           the last `tail` KiB (default 256), cut to whole
                                           lines; x-tenshu-log-size has the whole file's bytes

The scheduler (jobs/scheduler.py) is app.state.scheduler, which api/server.py starts; a server
without one has no jobs, so every name is a 404.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse

from tenshu.api.tenshu import _ERRORS, Context, Limit, _page, _run
from tenshu.core.errors import NotFoundError, PermissionDeniedError
from tenshu.gateway import RequestContext
from tenshu.jobs.scheduler import Scheduler
from tenshu.store.jobs import JobRun

router = APIRouter(prefix="/tenshu/v1", tags=["tenshu"])
TAIL_KIB = 256  # what the log endpoint sends by default: the end of a run is what one reads


def scheduler_of(request: Request, ctx: RequestContext) -> Scheduler | None:
    if not ctx.principal.admin:
        raise PermissionDeniedError("only an admin may see and run jobs")
    return getattr(request.app.state, "scheduler", None)


def _scheduler_with(request: Request, ctx: RequestContext, name: str) -> Scheduler:
    """The scheduler, once it is known to have a job `name`."""
    if (scheduler := scheduler_of(request, ctx)) is None:
        raise NotFoundError(f"no job named {name!r}: this server runs no jobs")
    scheduler.job(name)
    return scheduler


def job_json(scheduler: Scheduler, name: str, last: JobRun | None) -> dict:
    job, state, running = scheduler.jobs[name], scheduler.state(name), scheduler.running(name)
    deferred = scheduler.deferred(name)
    return {"object": "job", "name": name,
            "schedule": job.schedule.describe() if job.schedule is not None else None,
            "command": list(job.command), "catch_up": job.catch_up, "heavy": job.heavy,
            "paused": state.paused,
            "next_run_at": state.next_run_at.isoformat() if state.next_run_at else None,
            "running": running.id if running is not None else None,
            "deferred": deferred.id if deferred is not None else None,
            "last_run": last.to_json() if last is not None else None}


async def _job_json(scheduler: Scheduler, name: str) -> dict:
    last = await _run(scheduler.store.last_runs)
    return job_json(scheduler, name, last.get(name))


@router.get("/jobs", responses=_ERRORS)
async def list_jobs(request: Request, ctx: Context) -> dict:
    if (scheduler := scheduler_of(request, ctx)) is None:
        return {"object": "list", "data": []}
    last = await _run(scheduler.store.last_runs)
    return {"object": "list",
            "data": [job_json(scheduler, name, last.get(name)) for name in scheduler.jobs]}


@router.get("/jobs/{name}/runs", responses=_ERRORS)
async def job_runs(name: str, request: Request, ctx: Context, limit: Limit = 20,
                   after: Annotated[str | None, Query(max_length=100)] = None) -> dict:
    scheduler = _scheduler_with(request, ctx, name)
    runs = await _run(scheduler.store.runs, name, limit=limit + 1, after=after)
    return _page(runs[:limit], len(runs) > limit)


@router.post("/jobs/{name}/run", status_code=202, responses=_ERRORS)
async def run_job(name: str, request: Request, ctx: Context) -> dict:
    run = await _scheduler_with(request, ctx, name).run_now(name)
    return run.to_json()


@router.post("/jobs/{name}/pause", responses=_ERRORS)
async def pause_job(name: str, request: Request, ctx: Context) -> dict:
    scheduler = _scheduler_with(request, ctx, name)
    await scheduler.pause(name)
    return await _job_json(scheduler, name)


@router.post("/jobs/{name}/resume", responses=_ERRORS)
async def resume_job(name: str, request: Request, ctx: Context) -> dict:
    scheduler = _scheduler_with(request, ctx, name)
    await scheduler.resume(name)
    return await _job_json(scheduler, name)


@router.get("/jobs/runs/{run_id}/log", response_class=PlainTextResponse, responses=_ERRORS)
async def run_log(run_id: str, request: Request, ctx: Context,
                  tail: Annotated[int, Query(ge=1, le=64 * 1024, description="KiB")] = TAIL_KIB):
    if (scheduler := scheduler_of(request, ctx)) is None:
        raise NotFoundError(f"no job run {run_id!r}: this server runs no jobs")
    run = await _run(scheduler.store.run, run_id)
    if run is None:
        raise NotFoundError(f"no job run {run_id!r}")
    text, size = (None, 0) if run.log is None else await _run(_tail, Path(run.log), tail * 1024)
    if text is None and run.ended:
        why = f" ({run.why})" if run.why else ""
        raise NotFoundError(f"job run {run_id!r} has no log: " + (
            f"it was skipped, so nothing ran{why}" if run.status == "skipped" else
            "it ran in a terminal (`tenshu jobs run`), where its output went" if run.log is None
            else f"its file is not there{why}"))
    # a run that has not started yet (queued, deferred) has no file yet: its log is empty
    return PlainTextResponse(text or "", headers={"x-tenshu-log-size": str(size)})


def _tail(path: Path, limit: int) -> tuple[str | None, int]:
    """The file's last `limit` bytes as text, from its first whole line when it was cut, and
    its size; (None, 0) when there is no such file."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, 2)
            file.seek(max(0, size - limit))
            data = file.read(limit)
    except FileNotFoundError:
        return None, 0
    if size > limit and (newline := data.find(b"\n")) >= 0:
        data = data[newline + 1:]
    return data.decode("utf-8", errors="replace"), size
