"""The learning loop's nightly job: `tenshu learn nightly` on [learn]'s schedule.

The run itself (enough new feedback? train, gate, promote) is learn/nightly.py's, in its own
low-priority process; this module only says when and with which flags, from tenshu.toml. It is
a heavy job: a scheduled run waits for [jobs]' energy policy (on mains, idle, within hours).

    [learn]
    schedule = "0 3 * * *"
    adapter = "mine"
"""

from __future__ import annotations

import sys

from tenshu.config.learn import LearnSettings
from tenshu.jobs.job import Job
from tenshu.jobs.schedule import parse_schedule

NAME = "learn-nightly"


def learn_job(settings: LearnSettings, model: str = "") -> Job | None:
    """The nightly learning job, or None when [learn] schedules none. It trains on [learn]'s
    model, else on `model` (the server's embedded model), else on learn nightly's default."""
    if not settings.schedule:
        return None
    command = [sys.executable, "-m", "tenshu", "learn", "nightly",
               "--adapter", settings.adapter, "--method", settings.method,
               "--min-new", str(settings.min_new)]
    if settings.model or model:
        command += ["--model", settings.model or model]
    if settings.user:
        command += ["--user", settings.user]
    return Job(NAME, parse_schedule(settings.schedule, settings.timezone), command,
               catch_up=settings.catch_up, heavy=True)  # it trains: it waits for [jobs]' policy
