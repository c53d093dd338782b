"""A job: the command the scheduler (scheduler.py) runs, on which schedule, and whether it is
heavy (it waits for the energy policy, policy.py); and how a run's exit code reads.

    Job("learn-nightly", parse_schedule("0 3 * * *"), ["tenshu", "learn", "nightly"], heavy=True)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tenshu.jobs.schedule import Schedule
from tenshu.store.jobs import JobRun

NICE = 10  # jobs run at this niceness: the server, and whoever uses it, come first


@dataclass(frozen=True)
class Job:
    """A command to run on a schedule (None: only when triggered).

    command: the argv, run without a shell; env: variables added to the server's for it;
    cwd: where it runs (None: the server's directory). catch_up: a scheduled run that was
    missed while the server was down runs once when it starts. on_done: awaited with each run
    that ran, once it has ended (succeeded, failed or cancelled), before its end is recorded.
    heavy: it trains, ingests or reports at length, so a scheduled run waits for the energy
    policy; light (the default) runs when due, as a job that does not say what it is should.
    """

    name: str
    schedule: Schedule | None
    command: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    catch_up: bool = False
    on_done: Callable[[JobRun], Awaitable[None]] | None = None
    heavy: bool = False

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 64 or not all(
                c.isascii() and (c.isalnum() or c in "-_.") for c in self.name):
            raise ValueError(f"job name {self.name!r}: 1 to 64 letters, digits, '-', '_', '.'")
        if not self.command:
            raise ValueError(f"job {self.name!r}: the command is empty")
        object.__setattr__(self, "command", tuple(str(part) for part in self.command))

    def argv(self) -> list[str]:
        """The command, niced. Through `nice` rather than os.nice in a preexec_fn: the server
        has threads, and Python's preexec_fn is not safe in a process with threads. Where
        there is no `nice` (Windows), at the server's priority."""
        nice = shutil.which("nice")
        return [nice, "-n", str(NICE), *self.command] if nice else list(self.command)

    def environ(self) -> dict[str, str] | None:
        """The environment it runs in (None: the server's, unchanged)."""
        return {**os.environ, **self.env} if self.env else None


def outcome(exit_code: int) -> tuple[str, str]:
    """A finished process's status and why, from its exit code (negative: killed by that
    signal, as asyncio and subprocess report it)."""
    if exit_code == 0:
        return "succeeded", ""
    if exit_code < 0:
        with contextlib.suppress(ValueError):
            return "failed", f"killed by {signal.Signals(-exit_code).name}"
    return "failed", f"exited with code {exit_code}"
