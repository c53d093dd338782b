"""The agents of a running server: starting runs, following them, approving their calls,
cancelling them, and resuming at start the runs a stopped server left unfinished.

Each run is a task on the event loop (runner.py walks its graph). Whoever follows a run
(`subscribe`) gets its events as they happen: steps starting and ending, the model's text as
it comes, approvals asked for and given, the run's end. Everything a person may do to a run
goes through the store with their principal first, so another user's run answers as missing.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tenshu.agents.builtins import builtin_tools
from tenshu.agents.mcp import McpServers
from tenshu.agents.runner import AgentGraph, RunFailed, RunState
from tenshu.config.agents import INTEGRATION, SEPARATOR, AgentSpec, AgentsSettings
from tenshu.core.errors import ConflictError, InvalidRequestError, NotFoundError, TenshuError
from tenshu.store.people import Principal
from tenshu.store.runs import Run, Step, utcnow

if TYPE_CHECKING:
    from tenshu.gateway import Gateway

log = logging.getLogger("tenshu.agents")

MAX_TASK_CHARS = 100_000


class AgentService:
    def __init__(self, settings: AgentsSettings, gateway: Gateway, store, *, home: Path,
                 memory=None, integrations=None) -> None:
        """`integrations`: the TokenSource of the configured integrations (None: none)."""
        self.settings = settings
        self.gateway = gateway
        self.integrations = integrations
        for agent in settings.agents:
            try:
                gateway.model_info(agent.model)
            except NotFoundError:
                raise ValueError(f"agents.{agent.name}.model: {agent.model!r} is not a model or "
                                 "route this server serves") from None
            _check_service_tools(agent, integrations)
        self.store = store
        self.runs = store.runs
        self.home = home
        self.servers = McpServers(settings.servers, store.runs, logs=home / "logs" / "mcp")
        self.graph = AgentGraph(gateway, record=self._record, save=self._save,
                                publish=self.publish, decide=self._decide, memory=memory)
        self._tasks: dict[str, asyncio.Task] = {}
        self._followers: dict[str, set[asyncio.Queue]] = {}
        self._decisions: dict[tuple[str, int], asyncio.Future] = {}
        self._cancelled: dict[str, str] = {}  # run id -> who cancelled it
        self._closing = False

    # -- the server's life ---------------------------------------------------------------------

    async def start(self) -> None:
        """Resume the runs a stopped server left running or waiting for approval."""
        for run in await asyncio.to_thread(self.runs.unfinished):
            user = await asyncio.to_thread(self.store.users.by_id, run.owner_id)
            agent = self.settings.agent(run.agent)
            if user is None or agent is None:
                why = "its user was removed" if user is None else \
                    f"the agent {run.agent} is no longer configured"
                await self._save(run.moved("failed", why=f"not resumed: {why}"))
                continue
            log.info("resuming agent run %s (%s, %s)", run.id, run.agent, run.status)
            self._spawn(run, agent, Principal.of(user))

    async def close(self) -> None:
        """Stop following runs without ending them: they stay running in the store, and the
        next start resumes them."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- what people ask -----------------------------------------------------------------------

    def agents(self) -> list[AgentSpec]:
        return list(self.settings.agents)

    def agent(self, name: str) -> AgentSpec:
        agent = self.settings.agent(name)
        if agent is None:
            known = ", ".join(a.name for a in self.settings.agents) or "none configured"
            raise NotFoundError(f"no agent named {name!r} (agents: {known})")
        return agent

    async def create(self, principal: Principal, name: str, task: str, *,
                     run_id: str | None = None) -> Run:
        """Start a run. `run_id`: the id it is to have, chosen (and recorded) by a caller that
        must know it before the run exists (store.runs.new_run_id)."""
        agent = self.agent(name)
        if not isinstance(task, str) or not task.strip():
            raise InvalidRequestError("task: say what the agent should do", field="task")
        if len(task) > MAX_TASK_CHARS:
            raise InvalidRequestError(f"task: longer than {MAX_TASK_CHARS} characters",
                                      field="task")
        self.gateway.model_info(agent.model)  # a model that is not served: 404 now, not later
        run = Run.new(principal.user_id, agent.name, task, run_id)
        await asyncio.to_thread(self.runs.create, run)
        self._spawn(run, agent, principal)
        return run

    async def get(self, principal: Principal, run_id: str) -> Run:
        run = await asyncio.to_thread(self.runs.get, principal, run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id!r}")
        return run

    async def wait(self, principal: Principal, run_id: str, timeout: float | None = None) -> Run:
        """The run once it has ended or waits for approval (or as it is at the timeout)."""
        queue = self.subscribe(run_id)  # first: an end between the read and this is not missed
        try:
            run = await self.get(principal, run_id)
            if run.ended or run.status == "waiting_approval" or run_id not in self._tasks:
                return run
            async with asyncio.timeout(timeout):
                while True:
                    event = await queue.get()
                    if event is None or event == {"type": "run.status", "run_id": run_id,
                                                  "status": "waiting_approval"}:
                        break
        except TimeoutError:
            pass
        finally:
            self.unsubscribe(run_id, queue)
        return await self.get(principal, run_id)

    async def decide(self, principal: Principal, run_id: str, approve: bool,
                     reason: str = "") -> Step:
        """Approve or deny the call run `run_id` waits on."""
        run = await self.get(principal, run_id)  # the owner's, or missing
        if run.ended:
            raise ConflictError(f"run {run_id} has ended ({run.status}): nothing to decide")
        steps = await asyncio.to_thread(self.runs.steps, principal, run_id)
        step = next((s for s in steps if s.status == "waiting_approval"), None)
        if step is None:
            raise ConflictError(f"run {run_id} is not waiting for an approval")
        verb = "approved" if approve else "denied"
        note = f"{verb} by {principal.name}" + (f": {reason}" if reason else "")
        decided = replace(step, status=verb, data={**step.data, "decision": note})
        await asyncio.to_thread(self.runs.record, decided)
        self.publish(run_id, {"type": "approval.decided", "seq": step.seq, "approved": approve,
                              "by": principal.name, "reason": reason})
        future = self._decisions.get((run_id, step.seq))
        if future is not None and not future.done():
            future.set_result((approve, note))
        return decided

    async def cancel(self, principal: Principal, run_id: str) -> Run:
        run = await self.get(principal, run_id)
        if run.ended:
            raise ConflictError(f"run {run_id} has already ended ({run.status})")
        task = self._tasks.get(run_id)
        self._cancelled[run_id] = principal.name
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        else:
            await self._finish(run, "cancelled", why=f"cancelled by {principal.name}")
        return await self.get(principal, run_id)

    async def pending(self, principal: Principal) -> list[tuple[Run, Step]]:
        return await asyncio.to_thread(self.runs.pending, principal)

    # -- following runs ------------------------------------------------------------------------

    def subscribe(self, run_id: str) -> asyncio.Queue:
        """A queue of the run's events from now on; None after its last."""
        queue: asyncio.Queue = asyncio.Queue()
        self._followers.setdefault(run_id, set()).add(queue)
        return queue

    def unsubscribe(self, run_id: str, queue: asyncio.Queue) -> None:
        followers = self._followers.get(run_id)
        if followers is not None:
            followers.discard(queue)
            if not followers:
                del self._followers[run_id]

    def live(self, run_id: str) -> bool:
        return run_id in self._tasks

    def publish(self, run_id: str, event: dict) -> None:
        event = {**event, "run_id": run_id}
        for queue in self._followers.get(run_id, ()):
            queue.put_nowait(event)

    def _end_followers(self, run_id: str) -> None:
        for queue in self._followers.pop(run_id, ()):
            queue.put_nowait(None)

    # -- running -------------------------------------------------------------------------------

    def _spawn(self, run: Run, agent: AgentSpec, principal: Principal) -> None:
        task = asyncio.create_task(self._run(run, agent, principal), name=f"agent-run-{run.id}")
        self._tasks[run.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(run.id, None))

    async def _run(self, run: Run, agent: AgentSpec, principal: Principal) -> None:
        workspace = self.home / "workspaces" / str(principal.user_id) / agent.name
        state = RunState(run, agent, principal, {}, self.settings.policy(agent, principal.name),
                         workspace)
        try:
            try:
                await self._walk(state)
            except BaseExceptionGroup as group:  # the MCP clients' task groups wrap errors
                raise _first(group) from None
            answer = state.messages[-1].text if state.messages else ""
            await self._finish(state.run, "succeeded", result=answer)
        except asyncio.CancelledError:
            if run.id in self._cancelled:
                who = self._cancelled.pop(run.id)
                for step in await asyncio.to_thread(self.runs.steps, None, run.id):
                    if step.status == "waiting_approval":  # no longer anyone's to decide
                        output = {"text": f"the run was cancelled by {who}", "is_error": True,
                                  "data": None}
                        await self._record(replace(step, status="denied", finished_at=utcnow(),
                                                   data={**step.data, "output": output}))
                        self.publish(run.id, {"type": "step.completed", "seq": step.seq,
                                              "kind": "tool", "name": step.name,
                                              "status": "denied", "output": output})
                await self._finish(state.run, "cancelled", why=f"cancelled by {who}")
            elif not self._closing:
                raise
            # the server is stopping: the run stays as it is, to resume at the next start
        except TenshuError as exc:
            await self._finish(state.run, "failed", why=str(exc))
        except Exception as exc:  # a bug must not leave the run "running" for ever
            log.exception("agent run %s failed", run.id)
            await self._finish(state.run, "failed", why=f"internal error: {exc}")

    async def _walk(self, state: RunState) -> None:
        """Rebuild the run from its journal, open its tools, and walk its graph to the end."""
        run, agent = state.run, state.agent
        async with AsyncExitStack() as stack:
            await asyncio.to_thread(state.workspace.mkdir, parents=True, exist_ok=True)
            steps = await asyncio.to_thread(self.runs.steps, None, run.id)
            for cut in state.replay(steps):
                await self._record(replace(cut, status="failed", finished_at=utcnow(),
                                           data={"error": "cut off by a restart"}))
            state.tools = {t.name: t for t in builtin_tools(agent.builtins())}
            if agent.integrations():
                # here, not at the top: the services' tools (and their OAuth and HTTP clients)
                # are imported only by a server whose agents use them
                from tenshu.integrations.tools import service_tools
            for name in agent.integrations():
                for tool in service_tools(self.integrations.integration(name), self.integrations):
                    if agent.offers(tool.name):
                        state.tools[tool.name] = tool
            for server in agent.servers():
                for tool in await self.servers.open(server, stack,
                                                    call_timeout_s=agent.tool_timeout_s):
                    if agent.offers(tool.name):
                        state.tools[tool.name] = tool
            state.run = run.moved("running")
            await self._save(state.run)
            await self.graph.run(state, state.resume_at() if steps else None)

    async def _finish(self, run: Run, status: str, *, why: str = "", result: str = "") -> None:
        run = run.moved(status, why=why, result=result or run.result)
        await self._save(run)
        self.publish(run.id, {"type": "run.completed", "status": status, "why": why,
                              "result": run.result})
        self._end_followers(run.id)

    async def _decide(self, state: RunState, step: Step) -> tuple[bool, str]:
        """Wait for the owner's decision on `step` (already recorded as waiting), or time out:
        a timeout is a denial."""
        key = (state.run.id, step.seq)
        future = self._decisions[key] = asyncio.get_running_loop().create_future()
        state.run = state.run.moved("waiting_approval")
        await self._save(state.run)
        self.publish(state.run.id, {"type": "run.status", "status": "waiting_approval"})
        waited_from = asyncio.get_running_loop().time()
        try:
            # decided while we were not listening (before a restart, or just now)?
            now = {s.seq: s for s in await asyncio.to_thread(self.runs.steps, None, state.run.id)}
            found = now.get(step.seq)
            if found is not None and found.status in ("approved", "denied"):
                decision = found.status == "approved", found.data.get("decision", found.status)
            else:
                elapsed = (utcnow() - step.started_at).total_seconds()
                left = max(0.0, state.agent.approval_timeout_s - elapsed)
                try:
                    decision = await asyncio.wait_for(future, left)
                except TimeoutError:
                    decision = False, (f"no one approved the call within "
                                       f"{state.agent.approval_timeout_s:g} s "
                                       "(approval_timeout_s)")
        finally:  # a cancelled wait leaves the run waiting: a restart asks again
            self._decisions.pop(key, None)
            state.waited += asyncio.get_running_loop().time() - waited_from
        state.run = state.run.moved("running")
        await self._save(state.run)
        self.publish(state.run.id, {"type": "run.status", "status": "running"})
        return decision

    async def _record(self, step: Step) -> None:
        await asyncio.to_thread(self.runs.record, step)

    async def _save(self, run: Run) -> None:
        await asyncio.to_thread(self.runs.save, run)


def _check_service_tools(agent: AgentSpec, integrations) -> None:
    """Each `integration:NAME__TOOL` the agent names is a tool NAME's provider has."""
    for entry in agent.tools:
        if not entry.startswith(INTEGRATION):
            continue
        from tenshu.integrations.tools import tool_names  # see _walk: only where used
        name, _, tool = entry[len(INTEGRATION):].partition(SEPARATOR)
        if integrations is None:
            raise ValueError(f"agents.{agent.name}.tools: {entry!r} names no configured "
                             f"integration ([integrations.{name}])")
        provider = integrations.integration(name).provider.name
        known = tool_names(provider)
        if not known:
            raise ValueError(f"agents.{agent.name}.tools: {entry!r}: a {provider} integration "
                             "has no agent tools (google, github and slack have)")
        if tool and tool not in known:
            raise ValueError(f"agents.{agent.name}.tools: {entry!r}: {provider} has no tool "
                             f"{tool!r}; its tools: {', '.join(known)}")


def _first(group: BaseExceptionGroup) -> BaseException:
    """The error an exception group stands for: its first leaf, cancellation aside."""
    leaves = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)
    walk(group)
    real = [e for e in leaves if not isinstance(e, asyncio.CancelledError)]
    return (real or leaves or [group])[0]


__all__ = ["AgentService", "RunFailed"]
