"""Jobs: work that the server runs on schedules, each in a low-priority subprocess, with its
state and history in the state database (store/jobs.py).

    from tenshu.jobs import Scheduler, configured_jobs
    scheduler = Scheduler(configured_jobs(), store.jobs)
    await scheduler.start(); ...; await scheduler.close()

schedule.py parses when a job is due (cron with a time zone, or `every 30m`); scheduler.py
runs the jobs; learn.py makes the learning loop's nightly job from [learn] in tenshu.toml.
"""

from __future__ import annotations

from pathlib import Path

from tenshu.jobs.learn import learn_job
from tenshu.jobs.schedule import Schedule, parse_schedule
from tenshu.jobs.scheduler import Job, Scheduler
from tenshu.store.jobs import JobRun, JobState

__all__ = ["Job", "JobRun", "JobState", "Schedule", "Scheduler", "configured_jobs",
           "learn_job", "parse_schedule"]


def configured_jobs(file: Path | None = None) -> list[Job]:
    """The jobs tenshu.toml configures (today: [learn]'s nightly run, when it has a schedule,
    training the server's first embedded model unless [learn] names one). The server schedules
    these, and `tenshu jobs` lists and runs them."""
    from tenshu.config import load_learn_settings, load_server_settings

    embedded = [m.path for m in load_server_settings(file).served_models()
                if m.backend == "embedded"]
    job = learn_job(load_learn_settings(file), embedded[0] if embedded else "")
    return [job] if job is not None else []
