"""The job scheduler's records: each job's state, and the history of its runs.

The scheduler (jobs/scheduler.py) writes a job's state as it changes (paused, last run, next
due), so that after a restart it knows which scheduled run it missed; and every run, skipped
ones included, as it is triggered, starts and ends, so the history says what happened and why:
a heavy job's run that waits for the energy policy is "deferred", with why it waits, until it
starts or is given up; a run that ran has the energy it used (energy_j, where it was measured).
Jobs are the server's, not a person's: nothing here is owner-scoped, and only admins reach it
(api/jobs.py). Database I/O: not for the event loop.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import (
    Boolean,
    Engine,
    Float,
    Integer,
    String,
    Text,
    and_,
    column,
    func,
    insert,
    or_,
    select,
    table,
    update,
)

from tenshu.store.sql import UTCDateTime, begin_write, utcnow

# The columns this module reads and writes; their types are in migrations.py (m008_jobs).
jobs = table(
    "jobs", column("name", String), column("paused", Boolean),
    column("last_run_at", UTCDateTime()), column("next_run_at", UTCDateTime()),
)
job_runs = table(
    "job_runs", column("id", String), column("job", String), column("trigger", String),
    column("status", String), column("why", Text), column("exit_code", Integer),
    column("started_at", UTCDateTime()), column("finished_at", UTCDateTime()),
    column("log", Text), column("energy_j", Float),
)

TRIGGERS = ("schedule", "manual", "catch-up")
STATUSES = ("deferred", "queued", "running", "succeeded", "failed", "skipped", "cancelled")
ENDED = frozenset({"succeeded", "failed", "skipped", "cancelled"})


@dataclass(frozen=True, slots=True)
class JobState:
    """What the scheduler remembers of a job between runs of the server."""

    name: str
    paused: bool = False
    last_run_at: datetime | None = None  # when its last run (not a skipped one) started
    next_run_at: datetime | None = None  # None: paused, or no schedule


@dataclass(frozen=True, slots=True)
class JobRun:
    """One run of a job. started_at is when it was triggered (a skipped run: when it was
    refused; a deferred one: when it came due, then when it started); why says what a person
    would ask about it (why it waits, or was skipped, failed or cancelled). energy_j: the joules
    the machine's CPU packages used while it ran (jobs/energy.py); None where not measured."""

    id: str
    job: str
    trigger: str  # one of TRIGGERS
    status: str  # one of STATUSES
    started_at: datetime = field(default_factory=utcnow)
    why: str = ""
    exit_code: int | None = None
    finished_at: datetime | None = None
    log: str | None = None  # the file its output went to
    energy_j: float | None = None

    @classmethod
    def new(cls, job: str, trigger: str, status: str = "queued", **values) -> JobRun:
        if trigger not in TRIGGERS:
            raise ValueError(f"a run's trigger is one of {', '.join(TRIGGERS)}, not {trigger!r}")
        return cls(f"jobrun_{secrets.token_hex(12)}", job, trigger, status, **values)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def end(self, status: str, why: str = "", exit_code: int | None = None,
            at: datetime | None = None) -> JobRun:
        return replace(self, status=status, why=why, exit_code=exit_code,
                       finished_at=at or utcnow())

    def to_json(self) -> dict:
        return {"id": self.id, "object": "job.run", "job": self.job, "trigger": self.trigger,
                "status": self.status, "why": self.why, "exit_code": self.exit_code,
                "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None,
                "log": self.log, "energy_j": self.energy_j}


_RUN = (job_runs.c.id, job_runs.c.job, job_runs.c.trigger, job_runs.c.status,
        job_runs.c.started_at, job_runs.c.why, job_runs.c.exit_code, job_runs.c.finished_at,
        job_runs.c.log, job_runs.c.energy_j)
_NEWEST = (job_runs.c.started_at.desc(), job_runs.c.id.desc())


class JobStore:
    """The jobs' state and run history in one database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- the jobs' state ------------------------------------------------------------------------

    def states(self) -> dict[str, JobState]:
        """Every job's state that was ever saved, by name."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(jobs.c.name, jobs.c.paused, jobs.c.last_run_at,
                                       jobs.c.next_run_at))
            return {row.name: JobState(*row) for row in rows}

    def save(self, state: JobState) -> None:
        """Write a job's state, replacing what was there."""
        values = dict(paused=state.paused, last_run_at=state.last_run_at,
                      next_run_at=state.next_run_at)
        with begin_write(self._engine) as conn:
            found = conn.execute(update(jobs).where(jobs.c.name == state.name).values(**values))
            if found.rowcount == 0:
                conn.execute(insert(jobs).values(name=state.name, **values))

    # -- runs -----------------------------------------------------------------------------------

    def record(self, run: JobRun) -> None:
        """Write a run as it is now: added the first time, updated after."""
        values = dict(job=run.job, trigger=run.trigger, status=run.status, why=run.why,
                      exit_code=run.exit_code, started_at=run.started_at,
                      finished_at=run.finished_at, log=run.log, energy_j=run.energy_j)
        with begin_write(self._engine) as conn:
            found = conn.execute(update(job_runs).where(job_runs.c.id == run.id).values(**values))
            if found.rowcount == 0:
                conn.execute(insert(job_runs).values(id=run.id, **values))

    def run(self, run_id: str) -> JobRun | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(*_RUN).where(job_runs.c.id == run_id)).first()
            return JobRun(*row) if row else None

    def runs(self, job: str | None = None, *, limit: int = 50,
             after: str | None = None) -> list[JobRun]:
        """A job's runs (None: every job's), newest first; `after`: the page after that run."""
        stmt = select(*_RUN).order_by(*_NEWEST).limit(limit)
        if job is not None:
            stmt = stmt.where(job_runs.c.job == job)
        with self._engine.connect() as conn:
            if after is not None:
                at = conn.execute(select(job_runs.c.started_at)
                                  .where(job_runs.c.id == after)).scalar()
                if at is None:
                    raise ValueError(f"after: no run {after!r}")
                stmt = stmt.where(or_(job_runs.c.started_at < at,
                                      and_(job_runs.c.started_at == at, job_runs.c.id < after)))
            return [JobRun(*row) for row in conn.execute(stmt)]

    def last_runs(self) -> dict[str, JobRun]:
        """Each job's newest run that was not skipped (a running one included), by job."""
        ran = job_runs.c.status != "skipped"
        newest = (select(job_runs.c.job, func.max(job_runs.c.started_at).label("at"))
                  .where(ran).group_by(job_runs.c.job).subquery())
        stmt = (select(*_RUN).join(newest, and_(job_runs.c.job == newest.c.job,
                                                job_runs.c.started_at == newest.c.at))
                .where(ran).order_by(job_runs.c.id))
        with self._engine.connect() as conn:
            return {row.job: JobRun(*row) for row in conn.execute(stmt)}

    def deferred(self, names: list[str]) -> set[str]:
        """Those of the named jobs that have a run still deferred (the process that ran the
        scheduler stopped while it waited)."""
        stmt = (select(job_runs.c.job).distinct()
                .where(job_runs.c.job.in_(names), job_runs.c.status == "deferred"))
        with self._engine.connect() as conn:
            return set(conn.execute(stmt).scalars())

    def abandon(self, names: list[str], why: str) -> int:
        """Mark the named jobs' runs that never ended (the process that ran them stopped
        first) as cancelled, saying `why`; how many there were."""
        if not names:
            return 0
        stmt = (update(job_runs)
                .where(job_runs.c.job.in_(names),
                       job_runs.c.status.in_(("deferred", "queued", "running")))
                .values(status="cancelled", why=why, finished_at=utcnow()))
        with begin_write(self._engine) as conn:
            return conn.execute(stmt).rowcount
