"""The jobs the server runs on schedules ([learn] schedule in tenshu.toml, ...), and their runs.

  tenshu jobs list                  each job: its schedule, paused or not, when it is next due,
                                    and its last run (as the server last wrote them)
  tenshu jobs history [NAME]        the runs, newest first (every job's, or NAME's), with why
                                    each was skipped, failed or cancelled (--limit N)
  tenshu jobs run NAME              run a job now, here, in the foreground: its output on the
                                    terminal, its run in the history

The server runs each job at low priority (niced), one run at a time, and writes each run's
output to $TENSHU_HOME/logs/jobs/RUN_ID.log. Pause and resume a job through the server:
POST /tenshu/v1/jobs/NAME/pause or /resume.
"""

from __future__ import annotations

import subprocess
from datetime import datetime

from tenshu.cli.table import print_table
from tenshu.jobs import Job, configured_jobs
from tenshu.jobs.scheduler import outcome
from tenshu.store import open_store
from tenshu.store.jobs import JobRun
from tenshu.store.sql import utcnow


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="each job and its last run")
    history = actions.add_parser("history", help="the runs, newest first")
    history.add_argument("name", nargs="?", help="one job's (default: every job's)")
    history.add_argument("--limit", type=int, default=20, help="how many (default: 20)")
    run = actions.add_parser("run", help="run a job now, in the foreground")
    run.add_argument("name")


def main(args) -> int:
    jobs = {job.name: job for job in configured_jobs()}
    if args.action == "run":
        if args.name not in jobs:
            raise ValueError(f"no job named {args.name!r}; the jobs are: "
                             f"{', '.join(jobs) or 'none (set [learn] schedule in tenshu.toml)'}")
        return _run(jobs[args.name])
    with open_store() as store:
        if args.action == "list":
            _list(jobs, store.jobs.states(), store.jobs.last_runs())
        else:
            _history(store.jobs.runs(args.name, limit=max(1, args.limit)))
    return 0


def _list(jobs: dict[str, Job], states: dict, last: dict[str, JobRun]) -> None:
    names = [*jobs, *sorted(set(states) - set(jobs))]
    if not names:
        print("no jobs: schedule one in tenshu.toml, e.g. [learn] schedule = \"0 3 * * *\"")
        return
    rows = []
    for name in names:
        job, state, run = jobs.get(name), states.get(name), last.get(name)
        schedule = (job.schedule.describe() if job.schedule else "by hand") if job else \
            "not configured"
        paused = state is not None and state.paused
        rows.append((name, schedule, "paused" if paused else "",
                     _when(_next(job, state)) if job and not paused else "-",
                     f"{run.status} {_when(run.started_at)}" if run else "never"))
    print_table(("JOB", "SCHEDULE", "PAUSED", "NEXT RUN", "LAST RUN"), rows)


def _history(runs: list[JobRun]) -> None:
    if not runs:
        print("no runs yet")
        return
    print_table(("RUN", "JOB", "TRIGGER", "STATUS", "STARTED", "SECONDS", "EXIT", "WHY"), [
        (r.id, r.job, r.trigger, r.status, _when(r.started_at),
         f"{(r.finished_at - r.started_at).total_seconds():.0f}" if r.finished_at else "-",
         "-" if r.exit_code is None else str(r.exit_code), r.why[:80]) for r in runs], left=5)


def _run(job: Job) -> int:
    """The job's command in the foreground; recorded as a manual run (its output is the
    terminal's, so the run has no log file)."""
    with open_store() as store:
        run = JobRun.new(job.name, "manual", "running")
        store.jobs.record(run)
        print(f"{run.id}: {' '.join(job.command)}")
        try:
            code = subprocess.call(job.argv(), env=job.environ(), cwd=job.cwd)
        except KeyboardInterrupt:
            store.jobs.record(run.end("cancelled", "interrupted (Ctrl-C)"))
            raise
        except OSError as exc:
            store.jobs.record(run.end("failed", f"could not start it: {exc}"))
            raise
        status, why = outcome(code)
        store.jobs.record(run.end(status, why, code))
    print(f"{run.id}: {status}" + (f" ({why})" if why else ""))
    return 0 if code == 0 else 1


def _next(job: Job, state) -> datetime | None:
    """When the server has it due; or, where no server has scheduled it yet, when it would."""
    if state is not None and state.next_run_at is not None:
        return state.next_run_at
    return job.schedule.next_after(utcnow()) if job.schedule else None


def _when(at) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M") if at else "-"
