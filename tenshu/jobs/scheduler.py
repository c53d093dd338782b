"""The job scheduler: runs jobs on their schedules inside the server, each as a low-priority
subprocess, and keeps their state and history in the state database.

    scheduler = Scheduler([learn_job(settings)], store.jobs)
    await scheduler.start()           # catches up missed runs, then sleeps until one is due
    run_id = await scheduler.trigger("learn-nightly")       # by hand; at once
    run = await scheduler.wait(run_id)                      # its end: succeeded, failed, ...
    await scheduler.pause("learn-nightly"); await scheduler.resume("learn-nightly")
    await scheduler.close()           # SIGTERM to what runs, SIGKILL after a grace

One run at a time per job: a trigger while the job runs is recorded as a skipped run, with the
run it would have overlapped. Each run's output goes to $TENSHU_HOME/logs/jobs/<run id>.log,
and the energy it used (energy.py, where the machine has counters) to its record.
The loop sleeps on an asyncio event with the time to the next due run as its timeout; every
change (pause, resume, close) sets the event, so nothing waits on a guess.

A heavy job (training, a large ingest) that comes due, on its schedule or as a catch-up, starts
only when the energy policy allows ([jobs] in tenshu.toml: on mains, idle, within the hours;
policy.py). Until then its run is recorded as deferred, saying why it waits, and the loop looks
again every minute; it starts as soon as the policy allows, or is given up (skipped, with why)
when the job's next run comes due first. A run by hand never waits. A server stopped while a
run waits leaves it deferred; the next start ends it, and defers a catch-up run in its place
for a job with catch_up. The loop's clock is `clock`, and the machine's state is what `probe`
reads, so tests set both and call check() instead of waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from tenshu.config import private_dir, tenshu_home
from tenshu.config.jobs import JobsSettings
from tenshu.core.errors import NotFoundError, ShuttingDownError
from tenshu.jobs.energy import EnergyMeter
from tenshu.jobs.job import Job, outcome
from tenshu.jobs.policy import Probe, SystemProbe, why_wait
from tenshu.store.jobs import JobRun, JobState, JobStore
from tenshu.store.sql import utcnow

log = logging.getLogger("tenshu.jobs")

GRACE = 10.0  # seconds a job has to end after SIGTERM, before SIGKILL
# The longest the loop sleeps: asyncio's clock stops while a laptop sleeps, the wall clock
# does not, so a long timeout would wake late by the time the machine spent asleep. It is also
# how often a deferred run looks again: the load average it reads is a 1-minute mean.
_RECHECK = 60.0


class Scheduler:
    """Runs `jobs` on their schedules; their state and runs are in `store`. Start it on the
    event loop it serves; it does its database I/O in threads.

    policy: when heavy jobs may start ([jobs]; default: its defaults); probe: what the machine
    is doing (default: psutil's view, without requests: pass SystemProbe(gateway) for those);
    meter: the energy counters (default: the machine's); clock: now, aware UTC."""

    def __init__(self, jobs: Iterable[Job], store: JobStore, *, logs: Path | None = None,
                 grace: float = GRACE, policy: JobsSettings | None = None,
                 probe: Probe | None = None, meter: EnergyMeter | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.jobs: dict[str, Job] = {}
        for job in jobs:
            if job.name in self.jobs:
                raise ValueError(f"two jobs are named {job.name!r}")
            self.jobs[job.name] = job
        self.store = store
        self.logs = logs or tenshu_home() / "logs" / "jobs"
        self.grace = grace
        self.policy = policy or JobsSettings()
        self.probe = probe or SystemProbe()
        self.meter = meter or EnergyMeter.open()
        self.clock = clock
        # joules used by each job's runs that ended since the start (/metrics); empty: no meter
        self.joules = dict.fromkeys(self.jobs, 0.0) if self.meter.available else {}
        self._states = {name: JobState(name) for name in self.jobs}
        self._active: dict[str, JobRun] = {}  # job name -> its run in flight
        self._deferred: dict[str, JobRun] = {}  # job name -> its run waiting for the policy
        self._tasks: dict[str, asyncio.Task[JobRun]] = {}  # run id -> the task running it
        self._procs: dict[str, asyncio.subprocess.Process] = {}  # run id -> its process
        self._cancelled: set[str] = set()  # run ids that close() stopped
        self._changed = asyncio.Event()  # wakes the loop: a job paused, resumed, or closing
        self._saving = asyncio.Lock()  # job states are written one at a time, newest last
        self._checking = asyncio.Lock()  # one look at what is due at a time (check)
        self._loop: asyncio.Task | None = None
        self._closing = False

    # -- what is there --------------------------------------------------------------------------

    def job(self, name: str) -> Job:
        if (job := self.jobs.get(name)) is None:
            raise NotFoundError(f"no job named {name!r}; the jobs are: "
                                f"{', '.join(self.jobs) or 'none'}")
        return job

    def state(self, name: str) -> JobState:
        """Whether the job is paused, when it last ran and when it is next due."""
        return self._states[self.job(name).name]

    def running(self, name: str) -> JobRun | None:
        """The job's run in flight, if there is one."""
        return self._active.get(self.job(name).name)

    def deferred(self, name: str) -> JobRun | None:
        """The job's run that waits for the energy policy, if there is one."""
        return self._deferred.get(self.job(name).name)

    def why_wait(self) -> str:
        """Why a heavy job may not start now ("": it may), from the probe and the policy."""
        try:
            seen = self.probe.read()
        except Exception as exc:  # the OS would not say: wait, and say so
            log.exception("could not read the machine's state for the energy policy")
            return f"could not read the machine's state: {exc}"
        return why_wait(self.policy, seen, self.clock())

    # -- starting and stopping ------------------------------------------------------------------

    async def start(self) -> None:
        """Load the jobs' state, run once each job with catch_up whose scheduled run was missed
        while the server was down, then schedule the rest."""
        if self._loop is not None:
            raise RuntimeError("the scheduler is already started")
        stored, waited = await asyncio.to_thread(self._prepare)
        now = self.clock()
        missed = []
        for name, job in self.jobs.items():
            old = stored.get(name, JobState(name))
            due = None if old.paused or job.schedule is None else job.schedule.next_after(now)
            self._states[name] = replace(old, next_run_at=due)
            # missed: due while the server was down, or deferred when it stopped
            if job.catch_up and due is not None and old.next_run_at and \
                    (old.next_run_at <= now or name in waited):
                missed.append(job)
        for name in self.jobs:
            await self._save(name)
        for job in missed:
            await self._begin(job, "catch-up")
        self._loop = asyncio.create_task(self._run_loop(), name="tenshu-scheduler")

    def _prepare(self) -> tuple[dict[str, JobState], set[str]]:
        waited = self.store.deferred(list(self.jobs))
        left = self.store.abandon(list(self.jobs), "tenshu stopped before it ended")
        if left:
            log.warning("%d job run(s) had not ended when tenshu last stopped: marked "
                        "cancelled", left)
        return self.store.states(), waited

    async def close(self) -> None:
        """Stop scheduling; ask the runs in flight to end (SIGTERM to each one's process
        group), kill what is left after `grace` seconds, and record them as cancelled."""
        self._closing = True
        self._changed.set()
        if self._loop is not None:
            # Not cancelled: it ends at its next look at _closing, so a run it was starting
            # has its task by then, and is stopped with the others.
            await self._loop
        # A deferred run stays so in the database: the next start ends it, and defers a
        # catch-up run in its place for a job with catch_up.
        self._deferred.clear()
        for run_id, process in list(self._procs.items()):
            self._cancelled.add(run_id)
            _signal(process, signal.SIGTERM)
        if not (tasks := list(self._tasks.values())):
            return
        _, late = await asyncio.wait(tasks, timeout=self.grace)
        if late:
            for process in list(self._procs.values()):
                _signal(process, signal.SIGKILL)
            await asyncio.wait(late)

    # -- by hand --------------------------------------------------------------------------------

    async def run_now(self, name: str) -> JobRun:
        """Trigger a run of the job by hand (paused or not, heavy or not: at once), and return
        its record as it is now: queued, or skipped when the job is running already. `wait`
        awaits its end."""
        return await self._begin(self.job(name), "manual")

    async def trigger(self, name: str) -> str:
        """run_now, for a caller that needs only the run's id."""
        return (await self.run_now(name)).id

    async def wait(self, run_id: str) -> JobRun:
        """The run's record once it has ended (at once, for one that has)."""
        if (task := self._tasks.get(run_id)) is not None:
            return await asyncio.shield(task)
        found = await asyncio.to_thread(self.store.run, run_id)
        if found is None:
            raise NotFoundError(f"no job run {run_id!r}")
        return found

    async def pause(self, name: str) -> JobState:
        """No more scheduled runs of the job until it is resumed. A run in flight goes on; a
        deferred one is given up; a run by hand is still allowed."""
        self.job(name)
        if (waiting := self._deferred.pop(name, None)) is not None:
            await self._end_waiting(waiting, f"paused while it waited ({waiting.why})")
        state = await self._save(name, paused=True, next_run_at=None)
        self._changed.set()
        return state

    async def resume(self, name: str) -> JobState:
        """Schedule the job again, from now: what it missed while paused does not run."""
        job = self.job(name)
        due = job.schedule.next_after(self.clock()) if job.schedule is not None else None
        state = await self._save(name, paused=False, next_run_at=due)
        self._changed.set()
        return state

    # -- the loop -------------------------------------------------------------------------------

    async def check(self) -> None:
        """Look once, now: start the runs that are due, and the deferred ones the energy policy
        allows now. The loop does this at every wake; a test, after it moves the clock."""
        async with self._checking:
            await self._run_due()
            await self._start_deferred()

    async def _run_loop(self) -> None:
        while not self._closing:
            self._changed.clear()  # before looking: a change made meanwhile wakes the next wait
            try:
                await self.check()
            except Exception:  # the database failed; try again at the next wake
                log.exception("the job scheduler could not start a due run")
            wake = min((s.next_run_at for s in self._states.values() if s.next_run_at),
                       default=None)
            timeout = None if wake is None else \
                min(_RECHECK, max(0.0, (wake - self.clock()).total_seconds()))
            if timeout is None and self._deferred:
                timeout = _RECHECK
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    async def _run_due(self) -> None:
        now = self.clock()
        for name, job in self.jobs.items():
            due = self._states[name].next_run_at
            if due is None or due > now or job.schedule is None or self._closing:
                continue
            # Several missed times (the machine slept through them) make one run.
            await self._save(name, next_run_at=job.schedule.next_after(now))
            if (waiting := self._deferred.pop(name, None)) is not None:
                await self._end_waiting(waiting, f"given up: the next run came due first "
                                                 f"({waiting.why})")
            await self._begin(job, "schedule")

    async def _start_deferred(self) -> None:
        """Start the deferred runs if the policy allows now; else write why they still wait."""
        if not self._deferred:
            return
        why = self.why_wait()
        for name, waiting in list(self._deferred.items()):
            if self._closing:
                return
            if self._deferred.get(name) is not waiting:  # meanwhile run by hand, or paused
                continue
            if why:
                if why != waiting.why:
                    self._deferred[name] = waiting = replace(waiting, why=why)
                    await asyncio.to_thread(self.store.record, waiting)
                continue
            del self._deferred[name]
            now = self.clock()
            note = f"waited {_duration(now - waiting.started_at)} ({waiting.why})"
            await self._start(self.jobs[name],
                              replace(waiting, status="queued", started_at=now, why=note))

    async def _end_waiting(self, run: JobRun, why: str) -> None:
        """Record a deferred run that will not start as skipped."""
        await asyncio.to_thread(self.store.record, run.end("skipped", why, at=self.clock()))

    async def _save(self, name: str, **changes) -> JobState:
        """Change a job's state, and write it. Under a lock, and always the newest state: two
        changes at once never leave the older one in the database."""
        state = self._states[name] = replace(self._states[name], **changes)
        async with self._saving:
            await asyncio.to_thread(self.store.save, self._states[name])
        return state

    # -- one run --------------------------------------------------------------------------------

    async def _begin(self, job: Job, trigger: str) -> JobRun:
        """Record a run of `job` and start it; or record it skipped when the job is running, or
        deferred when it is heavy, not run by hand, and the energy policy says wait."""
        if self._closing:
            raise ShuttingDownError("the job scheduler is stopping")
        now = self.clock()
        if (running := self._active.get(job.name)) is not None:
            run = JobRun.new(job.name, trigger, "skipped", started_at=now, finished_at=now,
                             why=f"{job.name} was still running ({running.trigger} run "
                                 f"{running.id})")
            await asyncio.to_thread(self.store.record, run)
            return run
        if job.heavy and trigger != "manual" and (why := self.why_wait()):
            run = self._deferred[job.name] = JobRun.new(job.name, trigger, "deferred",
                                                        started_at=now, why=why)
            await asyncio.to_thread(self.store.record, run)
            return run
        waiting = self._deferred.pop(job.name, None)  # this one is by hand: it goes first
        run = await self._start(job, JobRun.new(job.name, trigger, "queued", started_at=now))
        if waiting is not None:
            await self._end_waiting(waiting, f"run by hand instead ({run.id})")
        return run

    async def _start(self, job: Job, run: JobRun) -> JobRun:
        """Record the run as queued, and start it."""
        run = replace(run, log=str(self.logs / f"{run.id}.log"))
        self._active[job.name] = run  # before any await: a second trigger sees it
        try:
            await self._save(job.name, last_run_at=run.started_at)
            await asyncio.to_thread(self.store.record, run)
        except BaseException:
            del self._active[job.name]
            raise
        task = asyncio.create_task(self._run(job, run), name=f"tenshu-{run.id}")
        self._tasks[run.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run.id, None))
        return run

    async def _run(self, job: Job, run: JobRun) -> JobRun:
        try:
            ended = await self._execute(job, run)
        except Exception as exc:  # the database failed: what ran is over, or never started
            log.exception("job run %s of %s failed in tenshu", run.id, job.name)
            ended = run.end("failed", f"tenshu could not run it: {exc}", at=self.clock())
        finally:
            self._active.pop(job.name, None)
            self._procs.pop(run.id, None)
            self._cancelled.discard(run.id)
        if run.why:  # it waited for the energy policy: said beside how it ended
            ended = replace(ended, why="; ".join(filter(None, (ended.why, run.why))))
        if ended.energy_j is not None:
            self.joules[job.name] += ended.energy_j
        if job.on_done is not None:
            try:
                await job.on_done(ended)
            except Exception:
                log.exception("on_done of job %s failed", job.name)
        # written after on_done: whoever reads that the run ended sees what followed it too
        # (the adapter a nightly run promoted is served by then)
        try:
            await asyncio.to_thread(self.store.record, ended)
        except Exception:
            log.exception("could not record the end of job run %s", run.id)
        return ended

    async def _execute(self, job: Job, run: JobRun) -> JobRun:
        if self._closing:
            ended = run.end("cancelled", "tenshu stopped before it started", at=self.clock())
        else:
            start = self.meter.read()
            try:
                process = await self._spawn(job, run)
            except OSError as exc:
                ended = run.end("failed", f"could not start it: {exc}", at=self.clock())
            else:
                self._procs[run.id] = process
                if self._closing:  # close() began while it was starting, and missed it
                    self._cancelled.add(run.id)
                    _signal(process, signal.SIGTERM)
                try:
                    await asyncio.to_thread(self.store.record, replace(run, status="running"))
                except Exception:  # it runs all the same; its end is written over this
                    log.exception("could not record job run %s as running", run.id)
                code = await self._wait(process)
                status, why = outcome(code)
                if run.id in self._cancelled:
                    status, why = "cancelled", "tenshu stopped while it ran"
                ended = replace(run.end(status, why, code, at=self.clock()),
                                energy_j=self.meter.read().since(start) if start else None)
        return ended  # recorded by _run, once on_done has run

    async def _wait(self, process: asyncio.subprocess.Process) -> int:
        """The process's exit code, once it ends; the energy meter read meanwhile, often enough
        to follow its counters across their wraps."""
        if not self.meter.available:
            return await process.wait()
        ending = asyncio.ensure_future(process.wait())
        while not ending.done():
            await asyncio.wait({ending}, timeout=self.meter.sample_every)
            self.meter.read()
        return ending.result()

    async def _spawn(self, job: Job, run: JobRun) -> asyncio.subprocess.Process:
        """The job's process, its output (stdout and stderr) to the run's log, in a session of
        its own so that close() reaches the children it starts too."""
        private_dir(self.logs)  # the output of jobs is the owner's alone, as the home is
        fd = os.open(run.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, f"# {run.id}: {job.name} ({run.trigger}) at "
                         f"{run.started_at.isoformat()}\n# {shlex.join(job.command)}"
                         "\n".encode())
            return await asyncio.create_subprocess_exec(
                *job.argv(), stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT,
                env=job.environ(), cwd=job.cwd, start_new_session=os.name == "posix")
        finally:
            os.close(fd)


def _duration(time: timedelta) -> str:
    minutes = round(time.total_seconds() / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _signal(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Send `sig` to a job's process group (POSIX), or end the process (Windows); not to one
    already reaped, whose id may be another's by now."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if os.name == "posix":
            os.killpg(process.pid, sig)
        elif sig == signal.SIGTERM:
            process.terminate()
        else:
            process.kill()
