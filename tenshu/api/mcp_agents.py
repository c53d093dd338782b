"""The agent tools of tenshu's MCP server (api/mcp.py): list the agents, run one and get its
result, look at a run, and see the calls waiting for the person's approval.

There is deliberately no tool to approve or deny: an approval is the person's, and a model on
the other end of MCP (Claude Code's, say) must not be able to wave through the calls that
tenshu holds for a person. It points at the Runs page and `tenshu runs approve` instead.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel, Field

from tenshu.api.mcp import caller, tool
from tenshu.core.errors import NotFoundError

AgentName = Annotated[str, Field(min_length=1, max_length=64, description="the agent's name")]
Task = Annotated[str, Field(min_length=1, max_length=100_000, description="what it should do")]
RunId = Annotated[str, Field(min_length=1, max_length=64, description="a run's id (run_...)")]
Wait = Annotated[float, Field(ge=0, le=600, description=(
    "seconds to wait for the run to end or to need an approval; 0: return at once"))]


class AgentCard(BaseModel):
    name: str
    description: str
    model: str
    tools: list[str]


class Agents(BaseModel):
    agents: list[AgentCard]


class Waiting(BaseModel):
    tool: str
    tool_class: str
    input: dict[str, Any]
    why: str


class RunResult(BaseModel):
    run_id: str
    agent: str
    status: str = Field(description="queued, running, waiting_approval, succeeded, failed or "
                                    "cancelled")
    result: str = Field(description="the agent's final answer, once it succeeded")
    why: str = Field(description="why it failed or was cancelled")
    steps: int
    waiting_for: Waiting | None = Field(description="the call waiting for the person's approval "
                                                    "(approve it on the Runs page or with "
                                                    "`tenshu runs approve RUN_ID`)")


class Approval(BaseModel):
    run_id: str
    agent: str
    task: str
    tool: str
    tool_class: str
    input: dict[str, Any]
    why: str


class Approvals(BaseModel):
    approvals: list[Approval]


def _service(me):
    service = getattr(me.state, "agents", None)
    if service is None:
        raise NotFoundError("this server runs no agents")
    return service


async def _result(service, me, run_id: str) -> RunResult:
    run = await service.get(me.principal, run_id)
    waiting = None
    if run.status == "waiting_approval":
        for pending, step in await service.pending(me.principal):
            if pending.id == run.id:
                waiting = Waiting(tool=step.name, tool_class=step.data.get("class") or "",
                                  input=step.data.get("input", {}),
                                  why=step.data.get("why", ""))
    return RunResult(run_id=run.id, agent=run.agent, status=run.status, result=run.result,
                     why=run.why, steps=run.steps, waiting_for=waiting)


def agent_tools(mcp: MCPServer) -> None:
    @tool(mcp, title="List agents", read_only=True, destructive=False, idempotent=True)
    async def list_agents(ctx: Context) -> Agents:
        """The agents this tenshu server runs: each one's model and tools."""
        service = getattr(caller(ctx).state, "agents", None)
        agents = service.agents() if service is not None else []
        return Agents(agents=[AgentCard(name=a.name, description=a.description, model=a.model,
                                        tools=list(a.tools)) for a in agents])

    @tool(mcp, title="Run an agent", read_only=False, destructive=False, idempotent=False,
          open_world=True)
    async def run_agent(ctx: Context, agent: AgentName, task: Task, wait_seconds: Wait = 120
                        ) -> RunResult:
        """Start a run of one of tenshu's agents on a task and wait for its result. Its
        risky calls wait for the person's approval (then status is waiting_approval and
        waiting_for says which call); get_run looks at it later."""
        me = caller(ctx)
        service = _service(me)
        run = await service.create(me.principal, agent, task)
        if wait_seconds:
            await service.wait(me.principal, run.id, wait_seconds)
        return await _result(service, me, run.id)

    @tool(mcp, title="Get an agent run", read_only=True, destructive=False, idempotent=True)
    async def get_run(ctx: Context, run_id: RunId, wait_seconds: Wait = 0) -> RunResult:
        """A run's status and result (waiting up to wait_seconds for it to end)."""
        me = caller(ctx)
        service = _service(me)
        if wait_seconds:
            await service.wait(me.principal, run_id, wait_seconds)
        return await _result(service, me, run_id)

    @tool(mcp, title="Pending approvals", read_only=True, destructive=False, idempotent=True)
    async def pending_approvals(ctx: Context) -> Approvals:
        """The agents' calls waiting for the person's approval. Only the person decides them,
        on tenshu's Runs page or with `tenshu runs approve|deny RUN_ID`."""
        me = caller(ctx)
        service = getattr(me.state, "agents", None)
        pending = await service.pending(me.principal) if service is not None else []
        return Approvals(approvals=[
            Approval(run_id=run.id, agent=run.agent, task=run.task, tool=step.name,
                     tool_class=step.data.get("class") or "", input=step.data.get("input", {}),
                     why=step.data.get("why", "")) for run, step in pending])
