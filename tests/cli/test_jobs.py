"""`tenshu jobs logs`, `pause` and `resume` as a person runs them: real subprocesses on a
TENSHU_HOME of their own. The logs are written by the real scheduler (jobs/scheduler.py) into
that home; pause and resume go to a live server, whose scheduler is then paused and resumed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from tenshu.jobs import Job, Scheduler, parse_schedule
from tenshu.store import open_store
from tenshu.store.jobs import JobRun
from tests.api.live import free_port, live_server

HELLO = [sys.executable, "-c", "print('hello')"]


@pytest.fixture
def tenshu(home):
    env = {**os.environ, "TENSHU_HOME": str(home)}
    env.pop("TENSHU_API_KEY", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tenshu", "jobs", *args],
                              capture_output=True, text=True, timeout=120, env=env)

    run.env = env
    return run


def ran(home, job: Job) -> JobRun:
    """One run of `job` by the real scheduler, its log in the home, once it has ended."""

    async def go() -> JobRun:
        with open_store(home / "state.db") as store:
            scheduler = Scheduler([job], store.jobs)
            await scheduler.start()
            try:
                return await scheduler.wait(await scheduler.trigger(job.name))
            finally:
                await scheduler.close()

    return asyncio.run(go())


def test_logs_prints_a_runs_output(tenshu, home):
    run = ran(home, Job("hello", None, HELLO))
    assert run.status == "succeeded"
    assert run.log == str(home / "logs" / "jobs" / f"{run.id}.log")
    shown = tenshu("logs", run.id)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == (home / "logs" / "jobs" / f"{run.id}.log").read_text()
    assert shown.stdout.splitlines()[0].startswith(f"# {run.id}: hello (manual) at ")
    assert shown.stdout.splitlines()[-1] == "hello"

    failed = ran(home, Job("fails", None, [sys.executable, "-c", "print('oops'); exit(3)"]))
    followed = tenshu("logs", "--follow", failed.id)  # ended already: all of it, then its end
    assert followed.returncode == 1
    assert followed.stdout.splitlines()[-1] == "oops"
    assert followed.stderr.strip() == f"{failed.id}: failed (exited with code 3)"


def test_logs_follows_a_run_until_it_ends(tenshu, home):
    release = home / "release"
    script = ("import pathlib, sys, time\nprint('first', flush=True)\n"
              "while not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.02)\nprint('second')")
    job = Job("slow", None, [sys.executable, "-c", script, str(release)])

    async def go():
        with open_store(home / "state.db") as store:
            scheduler = Scheduler([job], store.jobs)
            await scheduler.start()
            try:
                run = await scheduler.run_now("slow")
                follower = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "tenshu", "jobs", "logs", "-f", run.id,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=tenshu.env)
                line = b""
                while line.strip() != b"first":  # after the header (which quotes the script)
                    line = await asyncio.wait_for(follower.stdout.readline(), 60)
                assert follower.returncode is None  # still following: the run waits
                release.touch()
                out, err = await asyncio.wait_for(follower.communicate(), 60)
                return run, out.decode(), err.decode(), follower.returncode
            finally:
                release.touch()
                await scheduler.close()

    run, out, err, code = asyncio.run(go())
    assert out.splitlines() == ["second"]
    assert err.strip() == f"{run.id}: succeeded" and code == 0


def test_logs_says_why_there_is_none(tenshu, home):
    with open_store(home / "state.db") as store:
        by_hand = JobRun.new("hello", "manual", "succeeded")  # as `tenshu jobs run` records
        store.jobs.record(by_hand)
        skipped = JobRun.new("hello", "schedule", "skipped", why="hello was still running")
        store.jobs.record(skipped)
    for run_id, why in ((by_hand.id, "it ran in a terminal (`tenshu jobs run`)"),
                        (skipped.id, "it was skipped, so nothing ran"),
                        ("jobrun_nope", "no job run 'jobrun_nope'")):
        shown = tenshu("logs", run_id)
        assert shown.returncode == 1 and why in shown.stderr, shown.stderr
        assert shown.stdout == ""


def test_pause_and_resume_go_through_the_running_server(tenshu, home):
    job = Job("tick", parse_schedule("every 9999d"), HELLO)  # due in 2052, not during the test
    with live_server(home / "state.db", embedder=False, jobs=[job]) as live:
        store, scheduler = live.server.store, live.server.app.state.scheduler
        store.users.add("ana")
        ana = store.keys.create("ana-key", user="ana")[1]
        server = ("--url", live.base_url)

        paused = tenshu("pause", "tick", *server, "--key", live.key)
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout == "tick: paused; no scheduled runs until `tenshu jobs resume tick`\n"
        assert scheduler.state("tick").paused and scheduler.state("tick").next_run_at is None
        listed = tenshu("list")  # the database has what the server saved
        row = next(line for line in listed.stdout.splitlines() if line.startswith("tick"))
        assert "paused" in row.split()

        refused = tenshu("resume", "tick", *server, "--key", ana)
        assert refused.returncode == 1
        assert "only an admin may see and run jobs" in refused.stderr
        assert scheduler.state("tick").paused

        unknown = tenshu("pause", "tock", *server, "--key", live.key)
        assert unknown.returncode == 1 and "no job named 'tock'" in unknown.stderr

        before = time.time()
        resumed = tenshu("resume", "tick", *server, "--key", live.key)
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.startswith("tick: resumed; next run ")
        state = scheduler.state("tick")
        assert not state.paused and state.next_run_at.timestamp() > before
        assert not store.jobs.states()["tick"].paused

    down = tenshu("pause", "tick", "--url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "cannot reach the tenshu server" in down.stderr and "tenshu serve" in down.stderr
