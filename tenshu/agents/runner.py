"""One agent run: the tool loop as a state graph, each step journaled in the store.

The graph is model -> tools -> model ... -> END (graph.py). The model node asks the gateway
for the agent's next message (as any client would: the router chooses where it runs); the
tools node calls each tool the message asked for, in order. Every step is written when it
starts and when it ends, so a run rebuilt from its journal (`RunState.replay`) after a restart
reuses the results of calls that finished, re-runs a read-only call that was cut off, and asks
again before re-running any other call that was cut off (it may or may not have happened).

Before a call, its arguments are checked against the tool's schema and the approval policy is
asked about the tool's class: allow runs it, deny refuses it, ask pauses the run
(waiting_approval) until the owner decides (service.py) or the approval times out (denied).
A refused or failed call is an error result the model sees; with on_tool_error = "fail" it
ends the run instead.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from tenshu.agents.graph import END, Graph
from tenshu.agents.tools import Tool, ToolContext, ToolOutput
from tenshu.core.errors import TenshuError
from tenshu.core.events import BlockDelta
from tenshu.core.fold import Fold
from tenshu.core.messages import (
    Message,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    from_dict,
    to_dict,
)
from tenshu.core.request import ChatRequest, ToolChoice
from tenshu.store.runs import Run, Step, utcnow

if TYPE_CHECKING:
    from pathlib import Path

    from tenshu.config.agents import AgentSpec
    from tenshu.gateway import Gateway
    from tenshu.store.people import Principal

FINAL = frozenset({"done", "failed", "denied"})  # a tool step whose output is known
WORKSPACE_TOOLS = frozenset({"list_files", "read_file", "write_file", "delete_file", "shell",
                             "python"})


class RunFailed(TenshuError):
    """The run cannot go on: a limit reached, a model that failed, a tool error under
    on_tool_error = "fail"."""

    status = 422
    kind = "invalid_request_error"


@dataclass
class RunState:
    """What a run knows: its record, its agent, whom it acts for, its tools, the messages so
    far, and its journal."""

    run: Run
    agent: AgentSpec
    principal: Principal
    tools: dict[str, Tool]
    policy: dict[str, str]
    workspace: Path
    messages: list[Message] = field(default_factory=list)
    journal: dict[str, Step] = field(default_factory=dict)  # tool steps by call id
    seq: int = 0  # the last step's number
    waited: float = 0.0  # seconds spent waiting for approvals
    began: float = field(default_factory=time.monotonic)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    @property
    def calls(self) -> list[ToolUseBlock]:
        """The tool calls of the last message, if it is the model's."""
        if not self.messages or self.messages[-1].role != "assistant":
            return []
        return [b for b in self.messages[-1].content if isinstance(b, ToolUseBlock)]

    def replay(self, steps: list[Step]) -> list[Step]:
        """Rebuild the messages from a journal; returns the model steps that were cut off
        (their rows are to be closed: the step is taken again)."""
        self.messages = [Message.of("user", self.run.task)]
        cut = []
        for step in steps:
            self.seq = max(self.seq, step.seq)
            if step.kind == "model":
                if step.status == "done":
                    self.messages.append(from_dict(step.data["message"]))
                    self._close_calls()
                elif step.status == "started":
                    cut.append(step)
            else:
                self.journal[step.call_id] = step
                self._close_calls()
        return cut

    def _close_calls(self) -> None:
        """Once every call of the last message has its output, the results go in."""
        calls = self.calls
        if calls and all(self.journal.get(c.id) and self.journal[c.id].status in FINAL
                         for c in calls):
            self.messages.append(results_message(calls, self.journal))

    def resume_at(self) -> str:
        """Where a replayed run goes on: the graph's edge after the last finished node."""
        if self.messages[-1].role == "user":
            return "model"
        return "tools" if self.calls else END


def results_message(calls: list[ToolUseBlock], journal: dict[str, Step]) -> Message:
    blocks = []
    for call in calls:
        output = journal[call.id].data.get("output", {})
        blocks.append(ToolResultBlock(call.id, [TextBlock(output.get("text", ""))],
                                      is_error=bool(output.get("is_error"))))
    return Message("user", blocks)


Publish = Callable[[str, dict], None]
Decide = Callable[["RunState", Step], Awaitable[tuple[bool, str]]]
Save = Callable[[Run], Awaitable[None]]
Record = Callable[[Step], Awaitable[None]]


class AgentGraph:
    """The agent's graph over one run's state, with what its nodes need from the service."""

    def __init__(self, gateway: Gateway, *, record: Record, save: Save, publish: Publish,
                 decide: Decide, memory=None) -> None:
        self.gateway = gateway
        self.record = record
        self.save = save
        self.publish = publish
        self.decide = decide
        self.memory = memory
        self.graph = (Graph("model")
                      .node("model", self.model).node("tools", self.tools)
                      .edge("model", lambda s: "tools" if s.calls else END)
                      .edge("tools", "model"))

    async def run(self, state: RunState, begin: str | None = None) -> None:
        await self.graph.walk(state, begin, before=lambda node: self._limits(state, node))

    def _limits(self, state: RunState, node: str) -> None:
        agent, run = state.agent, state.run
        # at "tools" too: calls whose results no model step may read are not run
        if run.steps >= agent.max_steps and node in ("model", "tools"):
            raise RunFailed(f"the agent reached its step limit (max_steps {agent.max_steps}) "
                            "without finishing")
        if run.tokens >= agent.max_total_tokens:
            raise RunFailed(f"the run spent its token budget (max_total_tokens "
                            f"{agent.max_total_tokens})")
        if self.active(state) >= agent.max_seconds:
            raise RunFailed(f"the run reached its time limit (max_seconds {agent.max_seconds:g})")

    @staticmethod
    def active(state: RunState) -> float:
        return time.monotonic() - state.began - state.waited

    # -- the model node --------------------------------------------------------------------------

    async def model(self, state: RunState) -> None:
        from tenshu.gateway import RequestContext

        agent, run = state.agent, state.run
        step = Step(run.id, state.next_seq(), "model", "model", agent.model, "started")
        await self.record(step)
        self.publish(run.id, {"type": "step.started", "seq": step.seq, "kind": "model",
                              "name": agent.model})
        request = ChatRequest(
            model=agent.model, messages=self._prompt(state), max_tokens=agent.max_tokens,
            temperature=agent.temperature, stream=True,
            tools=[t.spec() for t in state.tools.values()],
            tool_choice=self._choice(state) if state.tools else None)
        ctx = RequestContext(request_id=f"req_{secrets.token_hex(12)}", protocol="agent",
                             route=f"/tenshu/v1/agents/{agent.name}/runs",
                             principal=replace(state.principal, record="never"))
        fold = Fold()
        remaining = agent.max_seconds - self.active(state)
        try:
            async with asyncio.timeout(remaining):
                async for event in self.gateway.chat(request, ctx):
                    fold.add(event)
                    if isinstance(event, BlockDelta) and event.text:
                        self.publish(run.id, {"type": "text.delta", "seq": step.seq,
                                              "text": event.text})
        except TimeoutError:
            await self.record(replace(step, status="failed", finished_at=utcnow(),
                                      data={"error": "time limit"}))
            raise RunFailed(f"the run reached its time limit (max_seconds "
                            f"{agent.max_seconds:g})") from None
        except TenshuError as exc:
            await self.record(replace(step, status="failed", finished_at=utcnow(),
                                      data={"error": str(exc)}))
            raise RunFailed(f"the model {agent.model} failed: {exc}") from None
        message = fold.messages()[0] if fold.blocks else Message("assistant", [])
        finish = fold.finish.get(0)
        usage = finish.usage if finish else None
        spent = (usage.input_tokens + usage.output_tokens) if usage else 0
        for (choice, i), text in fold.bad_arguments.items():
            # a call whose arguments did not parse (cut short): kept, so the model sees it
            # refused, but never run
            fold.blocks[choice][i].unparsed = text
        data = {"message": to_dict(message), "stop_reason": finish.stop_reason if finish else None,
                "usage": {"input_tokens": usage.input_tokens, "output_tokens":
                          usage.output_tokens} if usage else None}
        await self.record(replace(step, status="done", finished_at=utcnow(), data=data))
        state.messages.append(message)
        state.run = replace(run, steps=run.steps + 1, tokens=run.tokens + spent,
                            updated_at=utcnow())
        await self.save(state.run)
        self.publish(run.id, {"type": "step.completed", "seq": step.seq, "kind": "model",
                              "name": agent.model, "status": "done",
                              "message": data["message"], "stop_reason": data["stop_reason"],
                              "usage": data["usage"]})

    def _prompt(self, state: RunState) -> list[Message]:
        agent = state.agent
        system = agent.instructions or f"You are {agent.name}, an agent with tools."
        if WORKSPACE_TOOLS & set(state.tools):
            system += "\nYour workspace holds your files; their paths are relative to it."
        return [Message.of("system", system), *state.messages]

    @staticmethod
    def _choice(state: RunState) -> ToolChoice:
        agent, done = state.agent, state.run.steps
        if done < len(agent.force_tools):
            return ToolChoice("tool", name=agent.force_tools[done], parallel=False)
        return ToolChoice(agent.tool_choice)

    # -- the tools node --------------------------------------------------------------------------

    async def tools(self, state: RunState) -> None:
        calls = state.calls
        for call in calls:
            step = state.journal.get(call.id)
            if step is None or step.status not in FINAL:
                step = await self._call(state, call, step)
                state.journal[call.id] = step
            output = step.data.get("output", {})
            if output.get("is_error") and state.agent.on_tool_error == "fail":
                raise RunFailed(f"the tool {call.name} failed: {output.get('text', '')}")
        state.messages.append(results_message(calls, state.journal))

    async def _call(self, state: RunState, call: ToolUseBlock, step: Step | None) -> Step:
        run = state.run
        tool = state.tools.get(call.name)
        data = {"input": call.input, "class": tool.cls if tool else None}
        if step is None:
            step = Step(run.id, state.next_seq(), "tools", "tool", call.name, "pending",
                        data=data, call_id=call.id)
        if tool is None:
            return await self._end(state, step, ToolOutput.error(
                f"there is no tool named {call.name!r}; the tools are: "
                f"{', '.join(state.tools) or 'none'}"), "failed")
        if call.unparsed is not None:
            return await self._end(state, step, ToolOutput.error(
                "the call's arguments were cut off before they were complete JSON; it was not "
                "run"), "failed")
        if problem := tool.check(call.input):
            return await self._end(state, step, ToolOutput.error(
                f"the arguments do not fit the tool's schema: {problem}"), "failed")
        decision = state.policy[tool.cls]
        if decision == "deny":
            return await self._end(state, step, ToolOutput.error(
                f"this agent may not use {tool.cls} tools (approvals policy: deny)"), "denied")
        cut_off = step.status == "started"  # from the journal: a restart cut it off
        if step.status != "approved" and (decision == "ask" or (cut_off and tool.cls != "read")):
            why = ("the call was cut off by a restart and may or may not have run" if cut_off
                   else f"{tool.cls} tools need approval")
            if step.status != "waiting_approval":  # the wait, and its timeout, start now
                step = replace(step, status="waiting_approval", data={**data, "why": why},
                               started_at=utcnow())
                await self.record(step)
                self.publish(run.id, {"type": "approval.required", "seq": step.seq,
                                      "tool": call.name, "class": tool.cls, "input": call.input,
                                      "why": why})
            approved, note = await self.decide(state, step)
            step = replace(step, data={**step.data, "decision": note})
            if not approved:
                return await self._end(state, step, ToolOutput.error(note), "denied")
        step = replace(step, status="started", started_at=utcnow())
        await self.record(step)
        self.publish(run.id, {"type": "step.started", "seq": step.seq, "kind": "tool",
                              "name": call.name, "input": call.input})
        ctx = ToolContext(state.principal, state.agent, state.workspace, self.memory,
                          timeout_s=state.agent.tool_timeout_s)
        try:
            async with asyncio.timeout(state.agent.tool_timeout_s + 10):
                output = await tool.call(call.input, ctx)
        except TimeoutError:
            output = ToolOutput.error(f"the tool did not finish within "
                                      f"{state.agent.tool_timeout_s:g} s (tool_timeout_s)")
        except TenshuError as exc:
            output = ToolOutput.error(str(exc))
        return await self._end(state, step, output, "failed" if output.is_error else "done")

    async def _end(self, state: RunState, step: Step, output: ToolOutput, status: str) -> Step:
        step = replace(step, status=status, finished_at=utcnow(),
                       data={**step.data, "output": output.to_json()})
        await self.record(step)
        self.publish(state.run.id, {"type": "step.completed", "seq": step.seq, "kind": "tool",
                                    "name": step.name, "status": status,
                                    "output": output.to_json()})
        return step
