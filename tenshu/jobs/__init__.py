"""Jobs: work that the server runs on schedules, each in a low-priority subprocess, with its
state and history in the state database (store/jobs.py).

    from tenshu.jobs import Scheduler, configured_jobs
    scheduler = Scheduler(configured_jobs(), store.jobs)
    await scheduler.start(); ...; await scheduler.close()

job.py says what a job is; schedule.py parses when it is due (cron with a time zone, or
`every 30m`); scheduler.py runs the jobs; learn.py makes the learning loop's nightly job from
[learn] in tenshu.toml. A heavy job waits for the energy policy ([jobs] in tenshu.toml):
policy.py says whether the machine is on mains, idle and within the hours; energy.py measures
what each run used.
"""

from __future__ import annotations

from pathlib import Path

from tenshu.jobs.energy import EnergyMeter
from tenshu.jobs.job import Job
from tenshu.jobs.learn import learn_job
from tenshu.jobs.policy import Conditions, FixedProbe, SystemProbe
from tenshu.jobs.schedule import Schedule, parse_schedule
from tenshu.jobs.scheduler import Scheduler
from tenshu.store.jobs import JobRun, JobState

__all__ = ["Conditions", "EnergyMeter", "FixedProbe", "Job", "JobRun", "JobState", "Schedule",
           "Scheduler", "SystemProbe", "configured_jobs", "learn_job", "parse_schedule"]


def configured_jobs(file: Path | None = None) -> list[Job]:
    """The jobs tenshu.toml configures (today: [learn]'s nightly run, when it has a schedule,
    training the server's first embedded model unless [learn] names one). The server schedules
    these, and `tenshu jobs` lists and runs them."""
    from tenshu.config import load_learn_settings, load_server_settings

    embedded = [m.path for m in load_server_settings(file).served_models()
                if m.backend == "embedded"]
    job = learn_job(load_learn_settings(file), embedded[0] if embedded else "")
    return [job] if job is not None else []
