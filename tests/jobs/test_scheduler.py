"""The job scheduler on a real state database (SQLite, then PostgreSQL), running real
subprocesses: runs and their records, one run at a time, pause and resume, catch-up after a
restart, and close() ending what runs. Nothing is timed: tests wait on events and records, with
generous timeouts for a loaded machine."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tenshu.core.errors import NotFoundError, ShuttingDownError
from tenshu.jobs import Job, Scheduler, parse_schedule
from tenshu.store.jobs import JobRun, JobState
from tenshu.store.sql import utcnow

WAIT = 120  # seconds: only a broken scheduler gets near it


def py(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


WRITE = py("import sys, pathlib; pathlib.Path(sys.argv[1]).write_text('done'); print('wrote')")
FAIL = py("import sys; print('about to fail', flush=True); sys.exit(3)")
# Runs until the file named by its argument exists.
BLOCK = py("import sys, time, pathlib\n"
           "print('ready', flush=True)\n"
           "while not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.02)")
SLEEP = py("import time; print('ready', flush=True); time.sleep(600)")
STUBBORN = py("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "print('ready', flush=True); time.sleep(600)")


class Finished:
    """An on_done callback that hands each ended run to the test."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[JobRun] = asyncio.Queue()

    async def __call__(self, run: JobRun) -> None:
        await self.queue.put(run)

    async def next(self) -> JobRun:
        return await asyncio.wait_for(self.queue.get(), WAIT)


async def printed(run: JobRun, text: str) -> None:
    """Wait until the run's process has printed the line `text` (so it runs its own code)."""
    async def seen():
        while text not in Path(run.log).read_text().splitlines():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(seen(), WAIT)


async def started(store, logs, *jobs: Job, **options) -> Scheduler:
    scheduler = Scheduler(jobs, store.jobs, logs=logs, **options)
    await scheduler.start()
    return scheduler


async def test_a_run_by_hand_writes_its_log_and_its_record(store, logs, tmp_path):
    out = tmp_path / "out.txt"
    scheduler = await started(store, logs, Job("write", None, [*WRITE, str(out)]))
    try:
        queued = await scheduler.run_now("write")
        assert (queued.job, queued.trigger, queued.status) == ("write", "manual", "queued")
        assert queued.log == str(logs / f"{queued.id}.log")
        assert queued.id.startswith("jobrun_")
        run = await scheduler.wait(queued.id)
    finally:
        await scheduler.close()
    assert (run.status, run.exit_code, run.why) == ("succeeded", 0, "")
    assert run.finished_at >= run.started_at
    assert out.read_text() == "done"
    log = Path(run.log).read_text()
    assert "wrote" in log and f"# {run.id}: write (manual)" in log
    assert oct(Path(run.log).stat().st_mode & 0o777) == "0o600"
    assert store.jobs.run(run.id) == run
    assert store.jobs.states()["write"].last_run_at == run.started_at
    assert await scheduler.wait(run.id) == run  # an ended run: from the database


async def test_a_failed_command_and_one_that_cannot_start(store, logs):
    scheduler = await started(store, logs, Job("fail", None, FAIL),
                              Job("missing", None, ["/nonexistent/tenshu-test-command"]))
    try:
        failed = await scheduler.wait(await scheduler.trigger("fail"))
        missing = await scheduler.wait(await scheduler.trigger("missing"))
    finally:
        await scheduler.close()
    assert (failed.status, failed.exit_code, failed.why) == ("failed", 3, "exited with code 3")
    assert "about to fail" in Path(failed.log).read_text()
    assert missing.status == "failed"
    if shutil.which("nice") is None:  # run directly: Python says what was missing
        assert "could not start it" in missing.why
    else:  # `nice` says it could not run it
        assert missing.exit_code == 127


async def test_environment_directory_and_low_priority(store, logs, tmp_path):
    report = py("import os; print(os.environ['TENSHU_JOB_TEST'], os.getcwd(), os.nice(0))")
    job = Job("report", None, report, env={"TENSHU_JOB_TEST": "hello"}, cwd=tmp_path)
    scheduler = await started(store, logs, job)
    try:
        run = await scheduler.wait(await scheduler.trigger("report"))
    finally:
        await scheduler.close()
    value, cwd, nice = Path(run.log).read_text().splitlines()[-1].split()
    assert (run.status, value, Path(cwd).resolve()) == ("succeeded", "hello", tmp_path.resolve())
    if shutil.which("nice"):
        assert int(nice) == min(19, os.nice(0) + 10)


async def test_one_run_at_a_time_and_a_second_trigger_is_skipped(store, logs, tmp_path):
    release = tmp_path / "release"
    finished = Finished()
    scheduler = await started(store, logs, Job("block", None, [*BLOCK, str(release)],
                                               on_done=finished))
    try:
        first = await scheduler.run_now("block")
        second = await scheduler.run_now("block")
        assert second.status == "skipped"
        assert second.why == f"block was still running (manual run {first.id})"
        assert await scheduler.wait(second.id) == second  # already over
        assert scheduler.running("block").id == first.id
        release.touch()
        assert (await scheduler.wait(first.id)).status == "succeeded"
        assert (await finished.next()).id == first.id  # on_done: only for the run that ran
        third = await scheduler.wait(await scheduler.trigger("block"))
        assert third.status == "succeeded"
    finally:
        await scheduler.close()
    history = store.jobs.runs("block")
    assert [r.id for r in history] == [third.id, second.id, first.id]  # newest first
    assert [r.status for r in history] == ["succeeded", "skipped", "succeeded"]
    assert store.jobs.last_runs()["block"].id == third.id


async def test_scheduled_runs(store, logs, tmp_path):
    finished = Finished()
    job = Job("tick", parse_schedule("every 1s"), [*WRITE, str(tmp_path / "tick")],
              on_done=finished)
    scheduler = await started(store, logs, job)
    try:
        run = await finished.next()
        assert (run.trigger, run.status) == ("schedule", "succeeded")
        assert scheduler.state("tick").next_run_at > run.started_at
    finally:
        await scheduler.close()
    state = store.jobs.states()["tick"]
    assert state.last_run_at is not None and state.next_run_at > state.last_run_at


async def test_pause_and_resume_and_they_are_kept(store, logs, tmp_path):
    def job(finished=None):
        return Job("tick", parse_schedule("every 1s"), [*WRITE, str(tmp_path / "tick")],
                   on_done=finished)

    scheduler = await started(store, logs, job())
    try:
        paused = await scheduler.pause("tick")
        assert (paused.paused, paused.next_run_at) == (True, None)
    finally:
        await scheduler.close()
    assert store.jobs.states()["tick"].paused

    finished = Finished()
    scheduler = await started(store, logs, job(finished))  # a restart: still paused
    try:
        assert scheduler.state("tick").paused
        assert scheduler.state("tick").next_run_at is None
        manual = await scheduler.wait(await scheduler.trigger("tick"))  # by hand: allowed
        assert manual.status == "succeeded"
        before = {r.id for r in store.jobs.runs("tick")}
        resumed = await scheduler.resume("tick")
        assert not resumed.paused and resumed.next_run_at is not None
        while (run := await finished.next()).trigger != "schedule":
            pass
        assert run.id not in before and run.status == "succeeded"
    finally:
        await scheduler.close()
    assert not store.jobs.states()["tick"].paused


async def test_a_missed_run_is_caught_up_once_at_start(store, logs, tmp_path):
    """The server was down when the job was due: with catch_up it runs once at start; the
    history from before the restart is kept."""
    def job(catch_up: bool) -> Job:  # due on 29 February only: never during the test
        return Job("nightly", parse_schedule("0 3 29 2 *", "Europe/Paris"),
                   [*WRITE, str(tmp_path / "nightly")], catch_up=catch_up)

    scheduler = await started(store, logs, job(True))
    try:
        earlier = await scheduler.wait(await scheduler.trigger("nightly"))
        assert scheduler.state("nightly").next_run_at > utcnow()
    finally:
        await scheduler.close()

    def stopped_through_a_run():
        state = store.jobs.states()["nightly"]
        store.jobs.save(JobState("nightly", last_run_at=state.last_run_at,
                                 next_run_at=utcnow() - timedelta(hours=30)))

    stopped_through_a_run()
    scheduler = await started(store, logs, job(True))
    try:
        (caught_up, before) = store.jobs.runs("nightly")  # recorded as start() returned
        assert before.id == earlier.id
        assert caught_up.trigger == "catch-up"
        assert (await scheduler.wait(caught_up.id)).status == "succeeded"
        assert scheduler.state("nightly").next_run_at > utcnow()
    finally:
        await scheduler.close()
    scheduler = await started(store, logs, job(True))  # nothing was missed this time
    await scheduler.close()
    assert len(store.jobs.runs("nightly")) == 2

    stopped_through_a_run()
    scheduler = await started(store, logs, job(False))
    await scheduler.close()
    assert [r.trigger for r in store.jobs.runs("nightly")] == ["catch-up", "manual"]


async def test_close_cancels_a_running_job(store, logs):
    scheduler = await started(store, logs, Job("sleep", None, SLEEP))
    run = await scheduler.run_now("sleep")
    await printed(run, "ready")
    assert scheduler.running("sleep").id == run.id
    await scheduler.close()
    ended = await scheduler.wait(run.id)
    assert (ended.status, ended.why, ended.exit_code) == \
        ("cancelled", "tenshu stopped while it ran", -15)
    assert store.jobs.run(run.id) == ended
    assert scheduler.running("sleep") is None


async def test_close_kills_a_job_that_ignores_sigterm(store, logs):
    scheduler = await started(store, logs, Job("stubborn", None, STUBBORN), grace=0.5)
    run = await scheduler.run_now("stubborn")
    await printed(run, "ready")  # its SIGTERM handler is in place
    await scheduler.close()
    ended = await scheduler.wait(run.id)
    assert (ended.status, ended.exit_code) == ("cancelled", -9)


async def test_runs_a_crash_left_unended_are_cancelled_at_start(store, logs):
    store.jobs.record(JobRun.new("nightly", "schedule", "running"))
    store.jobs.record(JobRun.new("other", "schedule", "running"))  # not this scheduler's job
    scheduler = await started(store, logs, Job("nightly", None, WRITE))
    await scheduler.close()
    (nightly,) = store.jobs.runs("nightly")
    assert (nightly.status, nightly.why) == ("cancelled", "tenshu stopped before it ended")
    assert store.jobs.runs("other")[0].status == "running"


async def test_unknown_names_and_a_closed_scheduler(store, logs):
    scheduler = await started(store, logs, Job("write", None, WRITE))
    with pytest.raises(NotFoundError, match="no job named 'nope'; the jobs are: write"):
        await scheduler.run_now("nope")
    with pytest.raises(NotFoundError, match="no job run"):
        await scheduler.wait("jobrun_0")
    with pytest.raises(RuntimeError, match="already started"):
        await scheduler.start()
    await scheduler.close()
    with pytest.raises(ShuttingDownError, match="stopping"):
        await scheduler.run_now("write")
    with pytest.raises(ValueError, match="two jobs are named 'a'"):
        Scheduler([Job("a", None, WRITE), Job("a", None, WRITE)], store.jobs)
    with pytest.raises(ValueError, match="job name 'a b'"):
        Job("a b", None, WRITE)


def test_history_pages(store):
    runs = [JobRun.new("nightly", "manual", "succeeded", started_at=utcnow() + timedelta(i))
            for i in range(5)]
    for run in runs:
        store.jobs.record(run)
    newest = [r.id for r in reversed(runs)]
    first = store.jobs.runs("nightly", limit=2)
    assert [r.id for r in first] == newest[:2]
    rest = store.jobs.runs("nightly", limit=10, after=first[-1].id)
    assert [r.id for r in rest] == newest[2:]
    assert store.jobs.runs("other") == []
    with pytest.raises(ValueError, match="no run"):
        store.jobs.runs("nightly", after="jobrun_missing")
