"""The jobs the server runs on schedules ([learn] schedule in tenshu.toml, ...), and their runs.

  tenshu jobs list                  each job: heavy or light, its schedule, paused or not, when
                                    it is next due, and its last run (as the server last wrote
                                    them)
  tenshu jobs history [NAME]        the runs, newest first (every job's, or NAME's), with why
                                    each waits (deferred) or was skipped, failed or cancelled,
                                    and the energy each used (--limit N)
  tenshu jobs logs RUN_ID [-f]      a run's output, as the server wrote it; --follow: and what
                                    it writes next, until the run ends (exit 0 if it succeeded)
  tenshu jobs run NAME              run a job now, here, in the foreground: its output on the
                                    terminal, its run in the history
  tenshu jobs pause NAME            no scheduled runs of it until it is resumed (a run in
                                    flight goes on); through the running server
  tenshu jobs resume NAME           scheduled again, from now (what it missed does not run)

The server runs each job at low priority (niced), one run at a time, and writes each run's
output to $TENSHU_HOME/logs/jobs/RUN_ID.log; list, history and logs read the state database and
those files, so they work with the server up or down. A heavy job's scheduled run waits for
[jobs]' energy policy in tenshu.toml (on mains, idle, within the hours; deferred until then);
`tenshu jobs run` runs it at once. ENERGY is what the CPU packages used while it ran (RAPL):
n/a where this machine's counters cannot be read (root only, since Linux 5.10; none on macOS).

Pause and resume ask the running server (POST /tenshu/v1/jobs/NAME/pause or /resume; the server
is http://127.0.0.1:7311 unless --url says, with --key or TENSHU_API_KEY, an admin's key), and
never write the database themselves: the scheduler reads its jobs' state from the database once,
at start, then keeps it in memory and writes it back whole at every change (each run it starts,
each pause). A paused flag written beside it would be ignored by its loop, which would still run
the job when due, and then written over by its next save. With no server reachable they fail
and say so; a server that is down runs nothing, and picks up the state it last saved.
"""

from __future__ import annotations

import codecs
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import httpx

from tenshu.cli.agent import add_server_options, client
from tenshu.cli.table import print_table
from tenshu.jobs import Job, configured_jobs
from tenshu.jobs.energy import EnergyMeter
from tenshu.jobs.scheduler import outcome
from tenshu.store import open_store
from tenshu.store.jobs import JobRun, JobStore
from tenshu.store.sql import utcnow


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="each job and its last run")
    history = actions.add_parser("history", help="the runs, newest first")
    history.add_argument("name", nargs="?", help="one job's (default: every job's)")
    history.add_argument("--limit", type=int, default=20, help="how many (default: 20)")
    logs = actions.add_parser("logs", help="a run's output")
    logs.add_argument("run_id", metavar="RUN_ID")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="and what it writes next, until the run ends")
    run = actions.add_parser("run", help="run a job now, in the foreground")
    run.add_argument("name")
    for action, text in (("pause", "no scheduled runs until it is resumed"),
                         ("resume", "scheduled again, from now")):
        change = actions.add_parser(action, help=f"{text} (through the running server)")
        change.add_argument("name")
        add_server_options(change)


def main(args) -> int:
    if args.action in ("pause", "resume"):
        return _through_server(args)
    if args.action == "logs":
        with open_store() as store:
            return _logs(store.jobs, args.run_id, follow=args.follow)
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
        kind = ("heavy" if job.heavy else "light") if job else "-"
        rows.append((name, kind, schedule, "paused" if paused else "",
                     _when(_next(job, state)) if job and not paused else "-",
                     f"{run.status} {_when(run.started_at)}" if run else "never"))
    print_table(("JOB", "KIND", "SCHEDULE", "PAUSED", "NEXT RUN", "LAST RUN"), rows)


def _history(runs: list[JobRun]) -> None:
    if not runs:
        print("no runs yet")
        return
    print_table(("RUN", "JOB", "TRIGGER", "STATUS", "STARTED", "SECONDS", "EXIT", "ENERGY",
                 "WHY"), [
        (r.id, r.job, r.trigger, r.status, _when(r.started_at),
         f"{(r.finished_at - r.started_at).total_seconds():.0f}" if r.finished_at else "-",
         "-" if r.exit_code is None else str(r.exit_code), _energy(r), r.why[:80])
        for r in runs], left=5)


def _energy(run: JobRun) -> str:
    """The joules a run used; n/a for one that ran unmeasured, - for one that did not run."""
    if run.energy_j is not None:
        return f"{run.energy_j:.0f} J" if run.energy_j < 10_000 else \
            f"{run.energy_j / 1000:.1f} kJ"
    return "n/a" if run.exit_code is not None else "-"


FOLLOW_EVERY = 0.25  # seconds between looks at a log still being written
_CHUNK = 1 << 20  # a log is printed a MiB at a time, not read whole into memory


def _logs(store: JobStore, run_id: str, *, follow: bool) -> int:
    """Print the run's log; with `follow`, keep printing what is added until the run ends (a
    run that waits to start, deferred, has no log yet: it is waited for too)."""
    if (run := store.run(run_id)) is None:
        raise ValueError(f"no job run {run_id!r} (`tenshu jobs history` lists them)")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    printed, found = 0, False  # bytes of the file printed so far; whether it was there
    while True:
        ended = run.ended  # looked at before the file: a run that has ended wrote all of it
        if run.log is not None:
            printed, found = _print_from(Path(run.log), printed, decoder)
        if ended or not follow:
            break
        time.sleep(FOLLOW_EVERY)
        run = store.run(run_id) or run
    sys.stdout.write(decoder.decode(b"", final=True))
    why = f" ({run.why})" if run.why else ""
    if not found and ended:
        raise ValueError(f"job run {run_id} has no log: " + (
            f"it was skipped, so nothing ran{why}" if run.status == "skipped" else
            "it ran in a terminal (`tenshu jobs run`), where its output went" if run.log is None
            else f"there is nothing at {run.log}{why}"))
    if not follow:
        if not found:
            print(f"{run_id}: {run.status}, nothing written yet{why}", file=sys.stderr)
        return 0
    print(f"{run.id}: {run.status}{why}", file=sys.stderr)
    return 0 if run.status == "succeeded" else 1


def _print_from(path: Path, offset: int, decoder) -> tuple[int, bool]:
    """Print the file from byte `offset` on; where it ends now, and whether it is there."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            while data := file.read(_CHUNK):
                sys.stdout.write(decoder.decode(data))
                offset += len(data)
    except FileNotFoundError:  # not started yet, or gone
        return offset, False
    sys.stdout.flush()
    return offset, True


def _through_server(args) -> int:
    """Pause or resume a job by asking the running server's scheduler (the module's docstring
    says why not through the database)."""
    path = f"/tenshu/v1/jobs/{quote(args.name, safe='')}/{args.action}"
    with client(args) as http:
        try:
            response = http.post(path)
        except httpx.TransportError as exc:
            raise ValueError(
                f"cannot reach the tenshu server at {args.url} ({exc}): jobs are paused and "
                "resumed by the server that runs them; start it (`tenshu serve`), or name it "
                "with --url") from None
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"the server answered {response.status_code}"
        raise ValueError(message)
    job = response.json()
    if args.action == "pause":
        print(f"{job['name']}: paused; no scheduled runs until `tenshu jobs resume "
              f"{job['name']}`" + (f" (run {job['running']} goes on)" if job["running"] else ""))
    elif job["next_run_at"]:
        print(f"{job['name']}: resumed; next run {_when(datetime.fromisoformat(job['next_run_at']))}")
    else:
        print(f"{job['name']}: resumed (it has no schedule: it runs when triggered)")
    return 0


def _run(job: Job) -> int:
    """The job's command in the foreground, at once (heavy or not: the energy policy is the
    server's schedule's); recorded as a manual run (its output is the terminal's, so the run
    has no log file), with the energy it used where it can be measured."""
    meter = EnergyMeter.open()
    with open_store() as store:
        run = JobRun.new(job.name, "manual", "running")
        store.jobs.record(run)
        print(f"{run.id}: {' '.join(job.command)}")
        start = meter.read()
        try:
            code = _call(job, meter)
        except KeyboardInterrupt:
            store.jobs.record(run.end("cancelled", "interrupted (Ctrl-C)"))
            raise
        except OSError as exc:
            store.jobs.record(run.end("failed", f"could not start it: {exc}"))
            raise
        status, why = outcome(code)
        end = meter.read()
        run = replace(run.end(status, why, code), energy_j=end.since(start) if end else None)
        store.jobs.record(run)
    print(f"{run.id}: {status}" + (f" ({why})" if why else "") + f", energy {_energy(run)}"
          + (f" ({meter.unavailable})" if meter.unavailable else ""))
    return 0 if code == 0 else 1


def _call(job: Job, meter: EnergyMeter) -> int:
    """subprocess.call, reading the meter while it runs (to follow its counters' wraps)."""
    with subprocess.Popen(job.argv(), env=job.environ(), cwd=job.cwd) as process:
        try:
            while True:
                try:
                    return process.wait(meter.sample_every if meter.available else None)
                except subprocess.TimeoutExpired:
                    meter.read()
        except BaseException:  # as subprocess.call: Ctrl-C ends it too
            process.kill()
            raise


def _next(job: Job, state) -> datetime | None:
    """When the server has it due; or, where no server has scheduled it yet, when it would."""
    if state is not None and state.next_run_at is not None:
        return state.next_run_at
    return job.schedule.next_after(utcnow()) if job.schedule else None


def _when(at) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M") if at else "-"
