"""Agents: the runner's own cost per step (journal and dispatch), side by side with LangGraph
and its SQLite checkpointer, in one run.

  python benchmarks/agents.py                        # 50 model steps (99 steps), 7 repeats
  python benchmarks/agents.py --steps 200 --repeats 5
  python benchmarks/agents.py --profile              # and where tenshu's time goes (cProfile)

A run is the tool loop model -> tools -> model ... -> END. The model is scripted: an object
with tenshu's gateway interface (`chat(request, ctx)`, an async iterator of ChatEvents) that
answers at once, with a short text and a call of the tool for its first N-1 replies and with
text alone for the last; the tool answers "ok" at once. So a run of N model steps takes 2N-1
steps, and what is timed is the runner: the journal (its SQLite writes) and the dispatch (the
graph's walk, the nodes' bookkeeping, the tool call's checks).

- tenshu: tenshu/agents/runner.py's AgentGraph on a real store (open_store on a temporary
  SQLite file, WAL, synchronous NORMAL), a real run (Run.new, store.runs.create), with the
  journal AgentService gives it: `asyncio.to_thread(store.runs.record, step)` and
  `asyncio.to_thread(store.runs.save, run)`. The run is timed as AgentService._run takes it:
  saved as running, the graph walked, saved as succeeded. Its state is built as _run builds it
  (the tool's class allowed by the approvals policy).
- tenshu, no journal: the same with record and save doing nothing: the dispatch alone.
- langgraph: LangGraph's StateGraph with the same two nodes and conditional edge, compiled
  with AsyncSqliteSaver (the async checkpointer: the nodes are async, as tenshu's are, and
  SqliteSaver has no async methods) on a temporary file, WAL (its own setup) and synchronous
  NORMAL (set here, as tenshu's store has it: neither side fsyncs each commit). Its state is
  the messages (tenshu's Message objects, an `operator.add` channel), the model steps and the
  tokens. durability="sync": each step's checkpoint is written before the next step starts,
  the guarantee tenshu's journal gives. Its nodes do what tenshu's do besides the journal
  (build the request, fold the reply, check the call's arguments against the schema, ask the
  policy, call the tool under a timeout), with the same tenshu functions.
- langgraph, delta channel: the same with the messages in a DeltaChannel (beta in LangGraph
  1.2), whose checkpoints keep each step's new messages instead of the whole list (the
  operator.add channel's checkpoint is all the messages so far, so it grows with the run).
- langgraph, async writes: the same as langgraph with durability="async" (LangGraph's
  default), where a step's checkpoint is written while the next step runs.
- langgraph, no checkpointer: the dispatch alone.
- model + tool alone: the scripted model's replies folded and the tool called, in a plain
  loop: what neither runner can avoid (it should be near zero).

Each repeat runs every variant once, in turns that rotate, after one warm-up run of each. Per
step: the time from a node's start to the next node's start (the last step: to the end of the
walk), pooled over repeats: median and p90; and the whole run (with its first and last save
or checkpoint) over the number of steps, median over repeats. The journal's cost is tenshu
less tenshu, no journal. Then, apart from the timed runs: tenshu's journal write by write (the
time in its worker thread, as awaited, and the same UPDATE through sqlite3 alone), peak Python
memory of a run (tracemalloc), the import time of each runner in fresh interpreters, and what
LangGraph adds to the install. Goal (issue): tenshu's cost per step at most 5 ms at the median.

LangGraph is in the bench extra (`pip install -e '.[bench]'`); without it the LangGraph
variants are skipped, and said so. Results print as tables and are saved to
benchmarks/results/agents-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.metadata as metadata
import io
import json
import operator
import os
import platform
import pstats
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, TypedDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tenshu.agents.runner import AgentGraph, RunState  # noqa: E402
from tenshu.agents.tools import Tool, ToolContext, ToolOutput  # noqa: E402
from tenshu.config.agents import AgentSpec, AgentsSettings  # noqa: E402
from tenshu.core.events import (  # noqa: E402
    BlockDelta,
    BlockStart,
    BlockStop,
    MessageFinish,
    MessageStart,
    Usage,
)
from tenshu.core.fold import Fold  # noqa: E402
from tenshu.core.messages import (  # noqa: E402
    Message,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from tenshu.core.request import ChatRequest, ToolChoice  # noqa: E402
from tenshu.gateway import RequestContext  # noqa: E402
from tenshu.store import Principal, open_store  # noqa: E402
from tenshu.store.runs import Run  # noqa: E402

try:
    import aiosqlite
    from langgraph.channels.delta import DeltaChannel
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.graph import END, START, StateGraph
except ImportError:
    StateGraph = None

RESULTS = ROOT / "benchmarks" / "results"
GOAL_MS = 5.0
PEERS = ("langgraph", "langgraph-checkpoint-sqlite")


# -- the scripted model and the tool ------------------------------------------------------------


class ScriptedModel:
    """tenshu's gateway as the runner sees it: `chat(request, ctx)` streams a reply at once. A
    reply calls the tool until the run has had `steps - 1` replies, then answers in text."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    async def chat(self, request: ChatRequest, ctx):
        done = sum(1 for m in request.messages if m.role == "assistant")
        usage = Usage(input_tokens=12, output_tokens=6)
        yield MessageStart(f"msg_{done}", request.model, Usage(input_tokens=12), 0)
        yield BlockStart(0, TextBlock(""))
        if done + 1 < self.steps:
            yield BlockDelta(0, text=f"Looking at item {done}.")
            yield BlockStop(0)
            arguments = {"item": done}
            yield BlockStart(1, ToolUseBlock(f"call_{done}", "lookup"))
            yield BlockDelta(1, partial_json=json.dumps(arguments))
            yield BlockStop(1, input=arguments)
            yield MessageFinish("tool_use", usage)
        else:
            yield BlockDelta(0, text="All items looked at.")
            yield BlockStop(0)
            yield MessageFinish("end_turn", usage)


async def lookup(arguments: dict, ctx: ToolContext) -> ToolOutput:
    return ToolOutput("ok")


TOOL = Tool("lookup", "Looks an item up.", {"type": "object", "properties": {
    "item": {"type": "integer"}}, "required": ["item"]}, "read", call=lookup)


def agent_spec(steps: int) -> AgentSpec:
    return AgentSpec("bench", "scripted", max_steps=steps, max_total_tokens=10**9,
                     max_seconds=3600.0)


# -- tenshu -------------------------------------------------------------------------------------


class TimedGraph(AgentGraph):
    """AgentGraph, marking the time each node starts (where the walk checks its limits)."""

    marks: list[float]

    def _limits(self, state: RunState, node: str) -> None:
        self.marks.append(time.perf_counter())
        super()._limits(state, node)


async def _nothing(_value) -> None:
    return None


def _never(*_args) -> Awaitable[tuple[bool, str]]:
    raise AssertionError("the policy allows the tool: nothing is decided")


def journal(store, timings: dict[str, list] | None = None):
    """record and save as AgentService gives them to the runner (each write in a worker
    thread). With `timings`, each write's time in its thread and as awaited is kept there."""
    if timings is None:
        async def record(step) -> None:
            await asyncio.to_thread(store.runs.record, step)

        async def save(run) -> None:
            await asyncio.to_thread(store.runs.save, run)
        return record, save

    def timed(name: str, write):
        def in_thread(value) -> None:
            start = time.perf_counter()
            write(value)
            timings[f"{name}, in its thread"].append(time.perf_counter() - start)

        async def awaited(value) -> None:
            start = time.perf_counter()
            await asyncio.to_thread(in_thread, value)
            timings[f"{name}, awaited"].append(time.perf_counter() - start)
        return awaited
    return timed("record", store.runs.record), timed("save", store.runs.save)


class Tenshu:
    def __init__(self, store, steps: int, record=_nothing, save=_nothing) -> None:
        self.store, self.steps = store, steps
        self.settings = AgentsSettings()
        self.agent = agent_spec(steps)
        self.principal = Principal(1, "bench", "member")
        self.save = save
        self.graph = TimedGraph(ScriptedModel(steps), record=record, save=save,
                                publish=lambda _run, _event: None, decide=_never)

    async def run(self, workspace: Path) -> tuple[float, list[float], int]:
        run = Run.new(self.principal.user_id, self.agent.name, "Look at every item.")
        await asyncio.to_thread(self.store.runs.create, run)
        state = RunState(run, self.agent, self.principal, {TOOL.name: TOOL},
                         self.settings.policy(self.agent, self.principal.name), workspace)
        state.messages = [Message.of("user", run.task)]  # what replay gives a fresh run
        self.graph.marks = []
        start = time.perf_counter()
        state.run = run.moved("running")
        await self.save(state.run)
        await self.graph.run(state)
        end = time.perf_counter()
        await self.save(state.run.moved("succeeded", result=state.messages[-1].text))
        total = time.perf_counter() - start
        assert state.run.steps == self.steps and state.messages[-1].text, "the run went wrong"
        return total, steps_of(self.graph.marks, end), len(self.graph.marks)


def steps_of(marks: list[float], end: float) -> list[float]:
    return [b - a for a, b in zip(marks, [*marks[1:], end], strict=True)]


# -- LangGraph ----------------------------------------------------------------------------------


class PeerState(TypedDict):
    messages: Annotated[list, operator.add]
    steps: int
    tokens: int


def _extend(messages: list, writes: list[list]) -> list:
    return [*messages, *(m for batch in writes for m in batch)]


def delta_state() -> type:
    """The state with its messages in a DeltaChannel (beta in LangGraph 1.2): a checkpoint
    keeps the step's new messages, not all of them (a full copy every 100 updates)."""

    class PeerDeltaState(TypedDict):
        messages: Annotated[list, DeltaChannel(_extend)]
        steps: int
        tokens: int
    return PeerDeltaState


class Peer:
    """The same loop as a LangGraph StateGraph. Its nodes do what tenshu's do, the journal
    aside, with the same tenshu functions. (Their state is annotated `dict`: LangGraph reads a
    node's annotation as its input schema, and the two states' messages channels differ.)"""

    def __init__(self, steps: int, checkpointer, durability: str | None,
                 state: type = PeerState) -> None:
        self.steps, self.durability = steps, durability
        self.model = ScriptedModel(steps)
        self.agent = agent_spec(steps)
        self.principal = Principal(1, "bench", "member")
        self.policy = AgentsSettings().policy(self.agent, self.principal.name)
        self.tools = {TOOL.name: TOOL}
        self.marks: list[float] = []
        builder = StateGraph(state)
        builder.add_node("model", self.model_node)
        builder.add_node("tools", self.tools_node)
        builder.add_edge(START, "model")
        builder.add_conditional_edges("model", self.route, ["tools", END])
        builder.add_edge("tools", "model")
        self.graph = builder.compile(checkpointer=checkpointer)

    async def model_node(self, state: dict) -> dict:
        self.marks.append(time.perf_counter())
        agent = self.agent
        system = Message.of("system", f"You are {agent.name}, an agent with tools.\nYour "
                            "workspace holds your files; tool paths are relative to it.")
        request = ChatRequest(
            model=agent.model, messages=[system, *state["messages"]],
            max_tokens=agent.max_tokens, temperature=agent.temperature, stream=True,
            tools=[t.spec() for t in self.tools.values()], tool_choice=ToolChoice("auto"))
        ctx = RequestContext(request_id=f"req_{secrets.token_hex(12)}", protocol="agent",
                             route=f"/tenshu/v1/agents/{agent.name}/runs",
                             principal=replace(self.principal, record="never"))
        fold = Fold()
        async with asyncio.timeout(agent.max_seconds):
            async for event in self.model.chat(request, ctx):
                fold.add(event)
        finish = fold.finish[0]
        spent = finish.usage.input_tokens + finish.usage.output_tokens
        return {"messages": fold.messages(), "steps": state["steps"] + 1,
                "tokens": state["tokens"] + spent}

    @staticmethod
    def route(state: dict) -> str:
        last = state["messages"][-1]
        return "tools" if any(isinstance(b, ToolUseBlock) for b in last.content) else END

    async def tools_node(self, state: dict) -> dict:
        self.marks.append(time.perf_counter())
        agent, blocks = self.agent, []
        calls = [b for b in state["messages"][-1].content if isinstance(b, ToolUseBlock)]
        for call in calls:
            tool = self.tools[call.name]
            if problem := tool.check(call.input):
                output = ToolOutput.error(problem)
            elif self.policy[tool.cls] != "allow":
                output = ToolOutput.error("not allowed")
            else:
                ctx = ToolContext(self.principal, agent, Path("."), None,
                                  timeout_s=agent.tool_timeout_s)
                async with asyncio.timeout(agent.tool_timeout_s + 10):
                    output = await tool.call(call.input, ctx)
            blocks.append(ToolResultBlock(call.id, [TextBlock(output.text)],
                                          is_error=output.is_error))
        return {"messages": [Message("user", blocks)]}

    async def run(self, _workspace: Path) -> tuple[float, list[float], int]:
        self.marks = []
        config = {"configurable": {"thread_id": f"run_{secrets.token_hex(12)}"},
                  "recursion_limit": 2 * self.steps + 10}
        start = time.perf_counter()
        options = {"durability": self.durability} if self.durability else {}
        out = await self.graph.ainvoke(
            {"messages": [Message.of("user", "Look at every item.")], "steps": 0, "tokens": 0},
            config, **options)
        end = time.perf_counter()
        assert out["steps"] == self.steps and out["messages"][-1].text, "the run went wrong"
        return end - start, steps_of(self.marks, end), len(self.marks)


async def sqlite_saver(path: Path):
    conn = await aiosqlite.connect(str(path))
    await conn.execute("PRAGMA synchronous = NORMAL")  # as tenshu's store (tenshu/store/sql.py)
    saver = AsyncSqliteSaver(conn)
    await saver.setup()
    return conn, saver


# -- the model and the tool alone ---------------------------------------------------------------


class Bare:
    """The scripted model's replies folded and the tool called in a plain loop."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.model = ScriptedModel(steps)
        self.agent = agent_spec(steps)
        self.ctx = ToolContext(Principal(1, "bench", "member"), self.agent, Path("."))

    async def run(self, _workspace: Path) -> tuple[float, list[float], int]:
        marks: list[float] = []
        messages = [Message.of("user", "Look at every item.")]
        start = time.perf_counter()
        while True:
            marks.append(time.perf_counter())
            fold = Fold()
            async for event in self.model.chat(ChatRequest(model="scripted", messages=messages),
                                               None):
                fold.add(event)
            messages.append(fold.messages()[0])
            calls = [b for b in messages[-1].content if isinstance(b, ToolUseBlock)]
            if not calls:
                break
            marks.append(time.perf_counter())
            outputs = [await TOOL.call(c.input, self.ctx) for c in calls]
            messages.append(Message("user", [ToolResultBlock(c.id, [TextBlock(o.text)])
                                             for c, o in zip(calls, outputs, strict=True)]))
        end = time.perf_counter()
        return end - start, steps_of(marks, end), len(marks)


# -- measuring ----------------------------------------------------------------------------------


Runner = Callable[[Path], Awaitable[tuple[float, list[float], int]]]


async def measure(variants: dict[str, Runner], repeats: int, workspace: Path) -> dict:
    for run in variants.values():  # warm-up: imports, caches, the first SQLite pages
        await run(workspace)
    totals: dict[str, list[float]] = {name: [] for name in variants}
    steps: dict[str, list[float]] = {name: [] for name in variants}
    early: dict[str, list[float]] = {name: [] for name in variants}  # the first 10 steps
    late: dict[str, list[float]] = {name: [] for name in variants}  # the last 10
    names = list(variants)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            total, per_step, count = await variants[name](workspace)
            totals[name].append(total / count)
            steps[name].extend(per_step)
            early[name].extend(per_step[:10])
            late[name].extend(per_step[-10:])
        print(f"  repeat {r + 1}/{repeats}: " + ", ".join(
            f"{n} {totals[n][-1] * 1e3:.2f}" for n in names) + " ms/step", flush=True)
    out = {}
    for name in names:
        pooled = sorted(steps[name])
        out[name] = {"steps_per_run": len(pooled) // repeats,
                     "median_ms": statistics.median(pooled) * 1e3,
                     "p90_ms": pooled[int(0.9 * (len(pooled) - 1))] * 1e3,
                     "first_10_median_ms": statistics.median(early[name]) * 1e3,
                     "last_10_median_ms": statistics.median(late[name]) * 1e3,
                     "run_per_step_ms": statistics.median(totals[name]) * 1e3,
                     "run_per_step_all_ms": [t * 1e3 for t in totals[name]]}
    return out


async def memory_peaks(variants: dict[str, Runner], workspace: Path) -> dict[str, float]:
    """Peak Python memory (tracemalloc; SQLite's own C allocations are not seen) of one run."""
    peaks = {}
    for name, run in variants.items():
        tracemalloc.start()
        await run(workspace)
        peaks[name] = tracemalloc.get_traced_memory()[1] / 2**10
        tracemalloc.stop()
    return peaks


async def journal_split(store, database: Path, steps: int, workspace: Path,
                        runs: int = 3) -> dict:
    """Where the journal's time goes: each write's median time in its worker thread
    (SQLAlchemy and SQLite) and as the runner awaits it (the thread's hop added), the writes a
    run makes, and a step's update as SQLite alone does it (sqlite3, the same transaction)."""
    timings: dict[str, list[float]] = {f"{w}, {how}": [] for w in ("record", "save")
                                       for how in ("in its thread", "awaited")}
    runner = Tenshu(store, steps, *journal(store, timings))
    for _ in range(runs):
        await runner.run(workspace)
    out = {name + " ms": statistics.median(values) * 1e3 for name, values in timings.items()}
    out["records per run"] = len(timings["record, awaited"]) // runs
    out["saves per run"] = len(timings["save, awaited"]) // runs
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = NORMAL")
        run_id, seq = conn.execute("SELECT run_id, seq FROM run_steps LIMIT 1").fetchone()
        alone = []
        for i in range(200):
            start = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE run_steps SET status = ?, data = ?, finished_at = ? "
                         "WHERE run_id = ? AND seq = ?", ("done", json.dumps({"i": i}),
                                                          "2026-12-06 00:00:00", run_id, seq))
            conn.execute("COMMIT")
            alone.append(time.perf_counter() - start)
    finally:
        conn.close()
    out["the update in sqlite3 alone ms"] = statistics.median(alone) * 1e3
    return out


async def profile(store, steps: int, workspace: Path, top: int = 30) -> str:
    """One tenshu run under cProfile, its journal written inline (not in a worker thread, which
    cProfile does not see): where the time of a step goes."""
    async def record(step) -> None:
        store.runs.record(step)

    async def save(run) -> None:
        store.runs.save(run)
    runner = Tenshu(store, steps, record, save)
    await runner.run(workspace)
    profiler = cProfile.Profile()
    profiler.enable()
    await runner.run(workspace)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def import_times(peer: bool, rounds: int = 7) -> dict[str, float]:
    """Median milliseconds to import each runner in a fresh interpreter, the cases taking
    turns; LangGraph also after tenshu's runner (what it would add to a running tenshu)."""
    cases = {"tenshu.agents.runner": ("import tenshu.agents.runner", "")}
    if peer:
        lg = "import langgraph.graph, langgraph.checkpoint.sqlite.aio"
        cases["langgraph + AsyncSqliteSaver"] = (lg, "")
        cases["langgraph + AsyncSqliteSaver, after tenshu's runner"] = (
            lg, "import tenshu.agents.runner")
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (code, before) in cases.items():
            script = (f"{before}\nimport time\nt = time.perf_counter()\n{code}\n"
                      "print(time.perf_counter() - t)")
            done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                  cwd=ROOT, check=True)
            times[name].append(float(done.stdout.split()[-1]))
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def _requires(name: str) -> list[str]:
    from packaging.requirements import Requirement

    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return []
    names = []
    for text in dist.requires or ():
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(req.name)
    return names


def _closure(roots) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name not in seen:
            seen.add(name)
            todo += _requires(name)
    return seen


def added_install() -> dict:
    """The distributions LangGraph and its checkpointer bring that tenshu does not already
    depend on, and their size on disk."""
    added = sorted(_closure(PEERS) - _closure(["tenshu"]))
    sizes = {}
    for name in added:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        sizes[f"{name}=={dist.version}"] = sum(
            (f.size or 0) for f in dist.files or () if f.size is not None)
    return {"packages": sizes, "count": len(sizes), "mb": sum(sizes.values()) / 1e6}


# -- the report ---------------------------------------------------------------------------------


def table(results: dict) -> str:
    base = results.get("tenshu")
    peer = results.get("langgraph")
    rows = ["| variant | steps/run | per step, median ms | p90 ms | first 10 steps, median | "
            "last 10 steps, median | whole run / steps, ms | median over tenshu's |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        ratio = f"{r['median_ms'] / base['median_ms']:.2f}x" if base else ""
        rows.append(f"| {name} | {r['steps_per_run']} | {r['median_ms']:.3f} | "
                    f"{r['p90_ms']:.3f} | {r['first_10_median_ms']:.3f} | "
                    f"{r['last_10_median_ms']:.3f} | {r['run_per_step_ms']:.3f} | {ratio} |")
    lines = ["\n".join(rows), ""]
    if base and "tenshu, no journal" in results:
        dispatch = results["tenshu, no journal"]["median_ms"]
        lines.append(f"tenshu's journal (SQLite writes): {base['median_ms'] - dispatch:.3f} ms "
                     f"of the {base['median_ms']:.3f} ms median step; dispatch {dispatch:.3f} ms")
    if peer and "langgraph, no checkpointer" in results:
        dispatch = results["langgraph, no checkpointer"]["median_ms"]
        lines.append(f"LangGraph's checkpoint: {peer['median_ms'] - dispatch:.3f} ms of the "
                     f"{peer['median_ms']:.3f} ms median step; dispatch {dispatch:.3f} ms")
    if base and peer:
        lines.append(f"LangGraph + AsyncSqliteSaver over tenshu, per step at the median: "
                     f"**{peer['median_ms'] / base['median_ms']:.2f}x**")
    return "\n".join(lines)


def machine() -> dict:
    return {"cpus": os.cpu_count(), "load": [round(x, 2) for x in os.getloadavg()],
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "langgraph": metadata.version("langgraph") if StateGraph else None,
            "langgraph-checkpoint-sqlite": metadata.version("langgraph-checkpoint-sqlite")
            if StateGraph else None}


async def run_all(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="tenshu-bench-agents-") as tmp:
        work = Path(tmp)
        store = open_store(work / "state.db")
        variants: dict[str, Runner] = {
            "tenshu": Tenshu(store, args.steps, *journal(store)).run,
            "tenshu, no journal": Tenshu(store, args.steps).run,
        }
        conn = None
        try:
            if StateGraph is not None:
                conn, saver = await sqlite_saver(work / "langgraph.db")
                variants["langgraph"] = Peer(args.steps, saver, "sync").run
                variants["langgraph, delta channel"] = Peer(args.steps, saver, "sync",
                                                            delta_state()).run
                variants["langgraph, async writes"] = Peer(args.steps, saver, "async").run
                # (durability "sync" without a checkpointer fails in LangGraph 1.2.24, waiting
                # for a checkpoint that is never written; any other warns it has no effect)
                variants["langgraph, no checkpointer"] = Peer(args.steps, None, None).run
            else:
                print("LangGraph is not installed: its variants are skipped "
                      "(pip install -e '.[bench]' brings it)")
            variants["model + tool alone"] = Bare(args.steps).run
            workspace = work / "workspace"
            print(f"measuring {', '.join(variants)}: {args.steps} model steps a run, "
                  f"{args.repeats} repeats", flush=True)
            results = await measure(variants, args.repeats, workspace)
            split = await journal_split(store, work / "state.db", args.steps, workspace)
            peaks = await memory_peaks(variants, workspace)
            cprofile = await profile(store, args.steps, workspace) if args.profile else None
        finally:
            if conn is not None:
                await conn.close()
            store.close()
    return {"results": results, "journal": split, "memory_kib": peaks, "profile": cprofile}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="model steps in a run (the run "
                        "takes 2N-1 steps: N model steps, N-1 tool steps); default 50")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each variant")
    parser.add_argument("--profile", action="store_true",
                        help="profile one of tenshu's runs with cProfile and print the top")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be at least 1")
    about = machine()
    print(f"machine: {about['cpus']} CPUs ({about['processor']}), load average "
          f"{' '.join(map(str, about['load']))}; Python {about['python']}, SQLite "
          f"{about['sqlite']}; LangGraph {about['langgraph'] or 'not installed'}", flush=True)
    out = asyncio.run(run_all(args))
    results = out["results"]
    print("\n" + table(results))
    split = out["journal"]
    print(f"\ntenshu's journal: {split['records per run']} records and {split['saves per run']} "
          "saves a run; median ms per write: " + ", ".join(
              f"{name[:-3]} {ms:.3f}" for name, ms in split.items() if name.endswith(" ms")))
    print("peak Python memory of one run (tracemalloc): " + ", ".join(
        f"{name} {kib:,.0f} KiB" for name, kib in out["memory_kib"].items()))
    imports = import_times(StateGraph is not None)
    print("import time, fresh interpreter, median of 7: " + ", ".join(
        f"{name} {ms:.0f} ms" for name, ms in imports.items()))
    install = added_install() if StateGraph is not None else None
    if install:
        print(f"LangGraph adds {install['count']} distributions to tenshu's, "
              f"{install['mb']:.1f} MB installed: " + ", ".join(install["packages"]))
    median = results["tenshu"]["median_ms"]
    verdict = "met" if median <= GOAL_MS else f"missed by {median - GOAL_MS:.2f} ms"
    print(f"\ngoal: tenshu's cost per step <= {GOAL_MS:g} ms at the median: {median:.3f} ms, "
          f"{verdict}")
    if out["profile"]:
        print("\none tenshu run under cProfile, its journal written inline (cumulative):\n"
              + out["profile"])
    about["load_after"] = [round(x, 2) for x in os.getloadavg()]
    record = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": about,
              "steps": args.steps, "repeats": args.repeats, "results": results,
              "journal": out["journal"], "memory_kib": out["memory_kib"], "import_ms": imports, "install": install}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"agents-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
