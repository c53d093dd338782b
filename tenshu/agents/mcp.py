"""Tools from MCP servers, through the official SDK's client: stdio commands and Streamable
HTTP URLs from [mcp.servers.*].

A run opens the servers its agent uses and closes them when it ends (a stdio server is started
for the run and stopped after it, so nothing lingers). Each server's tools are offered as
SERVER__TOOL. Its tool list (names, descriptions, schemas, hints) is hashed: the first list
seen is pinned as approved; a different one later withholds the server's tools until an admin
approves the change (`tenshu agent trust SERVER`), so a server cannot swap a harmless tool's
description for a malicious one unnoticed (the "rug pull"). A stdio server's environment is
only what its config names, plus the SDK's few basics (PATH, HOME, USER, LOGNAME, SHELL, TERM).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from tenshu.agents.tools import Tool, ToolContext, ToolOutput, clip, schema_problem
from tenshu.config.agents import SEPARATOR, McpServerSpec
from tenshu.core.errors import UpstreamError

log = logging.getLogger("tenshu.agents.mcp")


class McpServerError(UpstreamError):
    """An MCP server would not start, answer, or list its tools; or its tools changed since
    they were approved."""


def tool_list_digest(tools: list[dict]) -> str:
    canonical = json.dumps(sorted(tools, key=lambda t: t["name"]), sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _described(tool) -> dict:
    """What of a listed tool is pinned: everything the model or the policy reads."""
    hints = tool.annotations.model_dump(exclude_none=True) if tool.annotations else {}
    return {"name": tool.name, "description": tool.description or "",
            "input_schema": tool.input_schema, "annotations": hints}


def tool_class(spec: McpServerSpec, described: dict) -> str:
    """read, write or destructive, from the server's hints unless its config says otherwise.
    MCP's defaults: not read-only, and destructive unless it says it is not."""
    override = dict(spec.classes).get(described["name"])
    if override:
        return override
    hints = described["annotations"]
    if hints.get("read_only_hint"):
        return "read"
    if hints.get("destructive_hint", True):
        return "destructive"
    return "write"


def _transport(spec: McpServerSpec, errlog):
    import httpx2
    from mcp import StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamable_http_client

    if spec.url:
        client = httpx2.AsyncClient(headers=dict(spec.headers), trust_env=False,
                                    timeout=httpx2.Timeout(spec.start_timeout_s, read=None))
        return streamable_http_client(spec.url, http_client=client)
    env = dict(spec.env)
    for name in spec.pass_env:
        if (value := os.environ.get(name)) is not None:
            env[name] = value
    params = StdioServerParameters(command=spec.command[0], args=list(spec.command[1:]),
                                   env=env, cwd=spec.cwd or None)
    return stdio_client(params, errlog=errlog)


class McpServers:
    """The configured servers, and their pins in the store."""

    def __init__(self, specs: tuple[McpServerSpec, ...], runs_store, logs: Path | None = None):
        self.specs = {s.name: s for s in specs}
        self.store = runs_store
        self.logs = logs  # a stdio server's stderr goes to logs/SERVER.log

    async def open(self, name: str, stack: AsyncExitStack, *, call_timeout_s: float
                   ) -> list[Tool]:
        """Start or reach server `name` for a run (closed with `stack`) and return its tools.
        McpServerError if it does not start, or its tools changed since they were approved;
        a tool whose input schema is not valid JSON Schema is left out, with a warning."""
        from mcp import Client

        spec = self.specs[name]
        errlog = None
        if spec.command and self.logs is not None:
            self.logs.mkdir(parents=True, exist_ok=True)
            errlog = stack.enter_context(open(self.logs / f"{name}.log", "a"))  # noqa: SIM115
        client = Client(_transport(spec, errlog), read_timeout_seconds=call_timeout_s,
                        mode="legacy", cache=None)
        try:
            async with asyncio.timeout(spec.start_timeout_s):
                await stack.enter_async_context(client)
                listed = (await client.list_tools()).tools
        except TimeoutError:
            raise McpServerError(f"MCP server {name} did not answer within "
                                 f"{spec.start_timeout_s:g} s (start_timeout_s)") from None
        except Exception as exc:  # the SDK raises many kinds for a server that is not there
            raise McpServerError(f"MCP server {name} could not be started or reached: "
                                 f"{_reason(exc)}") from None
        described = [_described(t) for t in listed]
        await self._check_pin(name, described)
        tools = []
        for item in described:
            if problem := schema_problem(item["input_schema"]):
                log.warning("MCP server %s: tool %s left out: %s", name, item["name"], problem)
                continue
            tools.append(Tool(f"{name}{SEPARATOR}{item['name']}", item["description"],
                              item["input_schema"], tool_class(spec, item),
                              _caller(client, item["name"]), source=name))
        return tools

    async def _check_pin(self, name: str, described: list[dict]) -> None:
        digest = tool_list_digest(described)
        pin = await asyncio.to_thread(self.store.pin, name)
        if pin is None or pin["approved_hash"] is None:
            await asyncio.to_thread(self.store.saw, name, digest, described, approve=True)
            return
        if pin["approved_hash"] == digest:
            if pin["seen_hash"] != digest:
                await asyncio.to_thread(self.store.saw, name, digest, described, approve=False)
            return
        await asyncio.to_thread(self.store.saw, name, digest, described, approve=False)
        raise McpServerError(
            f"MCP server {name} changed its tools since they were approved; they are not "
            f"offered until an admin approves the change (`tenshu agent trust {name}` or POST "
            f"/tenshu/v1/mcp/servers/{name}/approve)")

    def status(self) -> list[dict]:
        """Each server's pin: approved, changed (waiting for approval), or never seen."""
        out = []
        for name, spec in self.specs.items():
            pin = self.store.pin(name)
            state = ("unseen" if pin is None else
                     "approved" if pin["approved_hash"] == pin["seen_hash"] else "changed")
            out.append({"name": name, "transport": "http" if spec.url else "stdio",
                        "state": state, "tools": [t["name"] for t in pin["seen_tools"]]
                        if pin else [], "seen_hash": pin["seen_hash"] if pin else None})
        return out

    def approve(self, name: str) -> bool:
        """Approve the tool list last seen of server `name` (False: nothing to approve)."""
        pin = self.store.pin(name)
        if pin is None:
            return False
        return self.store.approve_pin(name, pin["seen_hash"])


def _caller(client, tool: str):
    async def call(args: dict, ctx: ToolContext) -> ToolOutput:
        try:
            # tenshu's own limit first (the SDK's, later, is a backstop), so the message is ours
            async with asyncio.timeout(ctx.timeout_s):
                result = await client.call_tool(tool, args,
                                                read_timeout_seconds=ctx.timeout_s + 5)
        except TimeoutError:
            return ToolOutput.error(f"the tool did not answer within {ctx.timeout_s:g} s")
        except Exception as exc:  # a crashed server, a protocol error
            return ToolOutput.error(f"the MCP server failed: {_reason(exc)}")
        return _output(result)
    return call


def _output(result) -> ToolOutput:
    parts = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource" and hasattr(block.resource, "text"):
            parts.append(block.resource.text)
        else:
            parts.append(f"[{kind or 'content'}]")
    data: Any = result.structured_content
    text = "\n".join(parts)
    if not text and data is not None:
        text = json.dumps(data, ensure_ascii=False)
    return ToolOutput(clip(text or "(no output)"), is_error=bool(result.is_error), data=data)


def _reason(exc: BaseException) -> str:
    """The innermost message of an exception group (anyio wraps the transport's errors)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return text if len(text) < 500 else text[:500] + "..."
