"""A small state graph: named nodes, edges between them, and conditions that choose an edge.

A run walks the graph from its start: each node is an async function of the run's state that
changes it (and journals what it did); after a node, its edge (a fixed next node, or a
condition of the state) names the next one, until END. Because the next node is a function of
the node just finished and the state, a run rebuilt from its journal after a restart picks up
exactly where it stopped: `after(node, state)` gives where to go on.

The agent graph (runner.py) is the usual tool loop:

    START -> model -(tool calls?)-> tools -> model ...
                   \\-(no calls)---> END
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

END = "__end__"

Node = Callable[[Any], Awaitable[None]]
Condition = Callable[[Any], str]


class Graph:
    def __init__(self, start: str) -> None:
        self.start = start
        self.nodes: dict[str, Node] = {}
        self._edges: dict[str, str | Condition] = {}

    def node(self, name: str, run: Node) -> Graph:
        if name == END or name in self.nodes:
            raise ValueError(f"node {name!r} is already in the graph")
        self.nodes[name] = run
        return self

    def edge(self, source: str, target: str | Condition) -> Graph:
        """After `source`, go to `target`: a node's name, END, or a condition of the state
        that returns one of those."""
        if source not in self.nodes:
            raise ValueError(f"no node {source!r}")
        self._edges[source] = target
        return self

    def after(self, node: str, state) -> str:
        target = self._edges.get(node, END)
        name = target(state) if callable(target) else target
        if name != END and name not in self.nodes:
            raise ValueError(f"the edge after {node!r} leads to no node ({name!r})")
        return name

    async def walk(self, state, begin: str | None = None,
                   before: Callable[[str], None] | None = None) -> None:
        """Run from `begin` (default: the start) to END. `before(node)` is called before each
        node (the runner checks its limits there, and may raise to stop)."""
        node = begin or self.start
        while node != END:
            if before is not None:
                before(node)
            await self.nodes[node](state)
            node = self.after(node, state)
