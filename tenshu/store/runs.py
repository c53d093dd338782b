"""Agent runs and their journal: each run's state, every step it took, and the MCP servers'
pinned tool lists.

A run belongs to a user; every read and write of one takes the principal and filters by owner
in SQL, so another user's run answers exactly as a missing one. A step is written when it
starts and again when it ends (agents/runner.py), so after a restart the runner knows which
tool calls finished (their results are reused, never repeated) and which were cut off. Database
I/O: not for the event loop.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Engine,
    Integer,
    String,
    Text,
    and_,
    column,
    delete,
    func,
    insert,
    select,
    table,
    update,
)

from tenshu.store.people import Principal
from tenshu.store.sql import UTCDateTime, begin_write, utcnow

# The columns read and written here; their types are in migrations.py (m009_agents).
agent_runs = table(
    "agent_runs", column("id", String), column("owner_id", Integer), column("agent", String),
    column("task", Text), column("status", String), column("why", Text), column("result", Text),
    column("steps", Integer), column("tokens", Integer), column("created_at", UTCDateTime()),
    column("updated_at", UTCDateTime()), column("finished_at", UTCDateTime()),
)
run_steps = table(
    "run_steps", column("run_id", String), column("seq", Integer), column("node", String),
    column("kind", String), column("name", String), column("call_id", String),
    column("status", String), column("data", Text), column("started_at", UTCDateTime()),
    column("finished_at", UTCDateTime()),
)
mcp_pins = table(
    "mcp_pins", column("server", String), column("approved_hash", String),
    column("seen_hash", String), column("seen_tools", Text), column("seen_at", UTCDateTime()),
    column("approved_at", UTCDateTime()),
)

# queued -> running <-> waiting_approval -> succeeded | failed | cancelled
RUN_STATUSES = ("queued", "running", "waiting_approval", "succeeded", "failed", "cancelled")
ENDED = frozenset({"succeeded", "failed", "cancelled"})
# a step: started -> done | failed; a tool call that needs a person: waiting_approval ->
# approved (then started) | denied
STEP_STATUSES = ("started", "done", "failed", "waiting_approval", "approved", "denied")


def new_run_id() -> str:
    return f"run_{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    owner_id: int
    agent: str
    task: str
    status: str = "queued"
    why: str = ""  # why it failed or was cancelled
    result: str = ""  # the agent's final answer
    steps: int = 0  # model steps taken
    tokens: int = 0  # input + output tokens spent
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None

    @classmethod
    def new(cls, owner_id: int, agent: str, task: str, run_id: str | None = None) -> Run:
        return cls(run_id or new_run_id(), owner_id, agent, task)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def moved(self, status: str, **values) -> Run:
        finished = utcnow() if status in ENDED else None
        return replace(self, status=status, updated_at=utcnow(), finished_at=finished, **values)

    def to_json(self) -> dict:
        return {"id": self.id, "object": "agent.run", "agent": self.agent, "task": self.task,
                "status": self.status, "why": self.why, "result": self.result,
                "model_steps": self.steps, "tokens": self.tokens,
                "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None}


@dataclass(frozen=True, slots=True)
class Step:
    """One journaled step: a model call (kind "model") or a tool call (kind "tool"). `node` is
    the graph node it belongs to; `data` what it needs to be replayed (the model's message; a
    call's input, class and result)."""

    run_id: str
    seq: int
    node: str
    kind: str
    name: str
    status: str
    data: dict[str, Any] = field(default_factory=dict)
    call_id: str | None = None
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None

    def to_json(self) -> dict:
        return {"seq": self.seq, "node": self.node, "kind": self.kind, "name": self.name,
                "call_id": self.call_id, "status": self.status, "data": self.data,
                "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None}


_RUN = tuple(agent_runs.c[name] for name in (
    "id", "owner_id", "agent", "task", "status", "why", "result", "steps", "tokens",
    "created_at", "updated_at", "finished_at"))
_STEP = tuple(run_steps.c[name] for name in (
    "run_id", "seq", "node", "kind", "name", "status", "data", "call_id", "started_at",
    "finished_at"))


def _step(row) -> Step:
    row = tuple(row)  # the columns of _STEP, in order
    return Step(*row[:6], json.loads(row[6] or "{}"), *row[7:])


class RunStore:
    """Runs, steps and MCP pins in one database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- runs, owner-scoped -------------------------------------------------------------------

    def create(self, run: Run) -> Run:
        with begin_write(self._engine) as conn:
            conn.execute(insert(agent_runs).values(**_run_values(run), id=run.id,
                                                   owner_id=run.owner_id))
        return run

    def save(self, run: Run) -> None:
        """Write a run's state (the runner's; it holds the run it was given by its owner)."""
        with begin_write(self._engine) as conn:
            conn.execute(update(agent_runs).where(agent_runs.c.id == run.id)
                         .values(**_run_values(run)))

    def get(self, principal: Principal, run_id: str) -> Run | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(*_RUN).where(
                and_(agent_runs.c.id == run_id, agent_runs.c.owner_id == principal.user_id))
            ).first()
        return Run(*row) if row else None

    def list(self, principal: Principal, *, status: str | None = None, agent: str | None = None,
             limit: int = 50) -> list[Run]:
        stmt = select(*_RUN).where(agent_runs.c.owner_id == principal.user_id)
        if status:
            stmt = stmt.where(agent_runs.c.status == status)
        if agent:
            stmt = stmt.where(agent_runs.c.agent == agent)
        stmt = stmt.order_by(agent_runs.c.created_at.desc(), agent_runs.c.id.desc()).limit(limit)
        with self._engine.connect() as conn:
            return [Run(*row) for row in conn.execute(stmt)]

    def unfinished(self) -> list[Run]:
        """Every run a stopped server left running or waiting (the runner's, at start)."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(*_RUN).where(
                agent_runs.c.status.in_(("queued", "running", "waiting_approval")))
                .order_by(agent_runs.c.created_at))
            return [Run(*row) for row in rows]

    # -- steps ----------------------------------------------------------------------------------

    def record(self, step: Step) -> None:
        """Write a step as it is now: added the first time, updated after."""
        values = dict(node=step.node, kind=step.kind, name=step.name, call_id=step.call_id,
                      status=step.status, data=json.dumps(step.data, ensure_ascii=False),
                      started_at=step.started_at, finished_at=step.finished_at)
        with begin_write(self._engine) as conn:
            found = conn.execute(update(run_steps).where(and_(
                run_steps.c.run_id == step.run_id, run_steps.c.seq == step.seq)).values(**values))
            if found.rowcount == 0:
                conn.execute(insert(run_steps).values(run_id=step.run_id, seq=step.seq,
                                                      **values))

    def steps(self, principal: Principal | None, run_id: str) -> list[Step]:
        """A run's steps in order; with a principal, only if the run is theirs (None: the
        runner's own read of a run it holds)."""
        stmt = select(*_STEP).where(run_steps.c.run_id == run_id)
        if principal is not None:
            stmt = stmt.where(run_steps.c.run_id.in_(select(agent_runs.c.id).where(and_(
                agent_runs.c.id == run_id, agent_runs.c.owner_id == principal.user_id))))
        with self._engine.connect() as conn:
            return [_step(row) for row in conn.execute(stmt.order_by(run_steps.c.seq))]

    def pending(self, principal: Principal) -> list[tuple[Run, Step]]:
        """The principal's tool calls waiting for a decision, oldest first."""
        stmt = (select(*_RUN, *_STEP)
                .join(run_steps, run_steps.c.run_id == agent_runs.c.id)
                .where(and_(agent_runs.c.owner_id == principal.user_id,
                            run_steps.c.status == "waiting_approval"))
                .order_by(run_steps.c.started_at))
        with self._engine.connect() as conn:
            return [(Run(*tuple(row)[:len(_RUN)]), _step(tuple(row)[len(_RUN):]))
                    for row in conn.execute(stmt)]

    def count_pending(self, principal: Principal) -> int:
        stmt = (select(func.count()).select_from(run_steps)
                .join(agent_runs, run_steps.c.run_id == agent_runs.c.id)
                .where(and_(agent_runs.c.owner_id == principal.user_id,
                            run_steps.c.status == "waiting_approval")))
        with self._engine.connect() as conn:
            return conn.execute(stmt).scalar_one()

    # -- MCP servers' pinned tool lists ---------------------------------------------------------

    def pin(self, server: str) -> dict | None:
        """What is pinned of a server: {approved_hash, seen_hash, seen_tools}, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(select(mcp_pins.c.approved_hash, mcp_pins.c.seen_hash,
                                      mcp_pins.c.seen_tools, mcp_pins.c.seen_at,
                                      mcp_pins.c.approved_at)
                               .where(mcp_pins.c.server == server)).first()
        if row is None:
            return None
        return {"server": server, "approved_hash": row.approved_hash,
                "seen_hash": row.seen_hash, "seen_tools": json.loads(row.seen_tools or "[]"),
                "seen_at": row.seen_at, "approved_at": row.approved_at}

    def saw(self, server: str, digest: str, tools: list[dict], *, approve: bool) -> None:
        """Record a server's tool list as seen (and approved, the first time or when told)."""
        now = utcnow()
        values = dict(seen_hash=digest, seen_tools=json.dumps(tools), seen_at=now)
        if approve:
            values |= dict(approved_hash=digest, approved_at=now)
        with begin_write(self._engine) as conn:
            found = conn.execute(update(mcp_pins).where(mcp_pins.c.server == server)
                                 .values(**values))
            if found.rowcount == 0:
                conn.execute(insert(mcp_pins).values(server=server, **values))

    def approve_pin(self, server: str, digest: str) -> bool:
        """Approve the tool list last seen, if it is still the one with `digest`."""
        with begin_write(self._engine) as conn:
            return conn.execute(update(mcp_pins).where(and_(
                mcp_pins.c.server == server, mcp_pins.c.seen_hash == digest))
                .values(approved_hash=digest, approved_at=utcnow())).rowcount == 1


def delete_user_runs(conn, owner_id: int) -> int:
    """A removed user's runs and their steps (inside the removal's transaction)."""
    ids = select(agent_runs.c.id).where(agent_runs.c.owner_id == owner_id)
    conn.execute(delete(run_steps).where(run_steps.c.run_id.in_(ids)))
    return conn.execute(delete(agent_runs).where(agent_runs.c.owner_id == owner_id)).rowcount


def _run_values(run: Run) -> dict:
    return dict(agent=run.agent, task=run.task, status=run.status, why=run.why,
                result=run.result, steps=run.steps, tokens=run.tokens,
                created_at=run.created_at, updated_at=run.updated_at,
                finished_at=run.finished_at)
