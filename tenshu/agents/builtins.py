"""tenshu's own tools for agents: the person's memory, files in the run's workspace, shell and
Python in the sandbox, and HTTP fetch within the agent's allowlist.

Files are confined to the workspace by resolving every path and refusing any that leaves it
(symlinks included); shell and Python run only inside the sandbox (sandbox.py), and are refused
with its install hint where there is none; http_fetch reaches only the hosts the agent's
`http_allow` names. Their classes are config.agents.BUILTINS.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
from pathlib import Path
from urllib.parse import urlsplit

from tenshu.agents.tools import Tool, ToolContext, ToolOutput, clip
from tenshu.config.agents import BUILTINS
from tenshu.core.errors import TenshuError

MAX_FILE_BYTES = 1_000_000  # what read_file returns and write_file takes
MAX_FETCH_BYTES = 2_000_000


def _object(properties: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False}


_STRING = {"type": "string"}
# bounded where a real value is short: a forced call's grammar then ends the string in time
_QUERY = {"type": "string", "maxLength": 1000}
_PATH = {"type": "string", "maxLength": 1000}
_NAME = {"type": "string", "maxLength": 200}


# -- memory ------------------------------------------------------------------------------------

async def memory_search(args: dict, ctx: ToolContext) -> ToolOutput:
    if ctx.memory is None:
        return ToolOutput.error("memory is not available on this server")
    names = list(ctx.agent.memory)
    if not names:
        names = [c.name for c in await asyncio.to_thread(
            ctx.memory.store.collections.list, ctx.principal)]
    if not names:
        return ToolOutput("no memory collections yet: nothing to search", data={"hits": []})
    hits = await ctx.memory.search(ctx.principal, args["query"], names, k=args.get("k"))
    data = {"hits": [{"collection": h.collection, "title": h.title, "source": h.source,
                      "score": round(h.score, 4), "text": h.text} for h in hits]}
    text = "\n\n".join(f"[{i}] {h.title or h.source} ({h.collection})\n{h.text}"
                       for i, h in enumerate(hits, 1)) or "no hits"
    return ToolOutput(clip(text), data=data)


async def memory_ingest(args: dict, ctx: ToolContext) -> ToolOutput:
    if ctx.memory is None:
        return ToolOutput.error("memory is not available on this server")
    source = f"agent:{ctx.agent.name}/{args['title']}"
    summary = await ctx.memory.ingest_text(ctx.principal, args["collection"], args["text"],
                                           source)
    if summary.failed:
        return ToolOutput.error(summary.failed[0].error)
    return ToolOutput(f"saved {args['title']!r} in {summary.collection}",
                      data=summary.to_json())


# -- files in the workspace ----------------------------------------------------------------------

def inside(workspace: Path, path: str) -> Path:
    """`path` (relative to the workspace, or absolute within it) resolved; ValueError if it
    leaves the workspace, through `..` or a symlink."""
    root = workspace.resolve()
    target = (root / path).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"{path!r} is outside the workspace")
    return target


async def list_files(args: dict, ctx: ToolContext) -> ToolOutput:
    def run() -> list[str]:
        base = inside(ctx.workspace, args.get("path") or ".")
        if not base.is_dir():
            raise ValueError(f"{args.get('path')!r} is not a folder in the workspace")
        root = ctx.workspace.resolve()
        return sorted(str(p.relative_to(root)) + ("/" if p.is_dir() else "")
                      for p in base.rglob("*"))[:1000]
    try:
        names = await asyncio.to_thread(run)
    except ValueError as exc:
        return ToolOutput.error(str(exc))
    return ToolOutput("\n".join(names) or "(empty)", data={"files": names})


async def read_file(args: dict, ctx: ToolContext) -> ToolOutput:
    def run() -> str:
        path = inside(ctx.workspace, args["path"])
        if not path.is_file():
            raise ValueError(f"no file {args['path']!r} in the workspace")
        data = path.read_bytes()[:MAX_FILE_BYTES]
        return data.decode("utf-8", errors="replace")
    try:
        return ToolOutput(clip(await asyncio.to_thread(run)))
    except ValueError as exc:
        return ToolOutput.error(str(exc))


async def write_file(args: dict, ctx: ToolContext) -> ToolOutput:
    text = args["text"]
    if len(text.encode()) > MAX_FILE_BYTES:
        return ToolOutput.error(f"the text is over {MAX_FILE_BYTES // 1000} kB")

    def run() -> None:
        path = inside(ctx.workspace, args["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    try:
        await asyncio.to_thread(run)
    except (ValueError, OSError) as exc:
        return ToolOutput.error(str(exc))
    return ToolOutput(f"wrote {len(text)} characters to {args['path']}")


async def delete_file(args: dict, ctx: ToolContext) -> ToolOutput:
    def run() -> None:
        path = inside(ctx.workspace, args["path"])
        if path == ctx.workspace.resolve() or not path.is_file():
            raise ValueError(f"no file {args['path']!r} in the workspace")
        path.unlink()
    try:
        await asyncio.to_thread(run)
    except (ValueError, OSError) as exc:
        return ToolOutput.error(str(exc))
    return ToolOutput(f"deleted {args['path']}")


# -- the sandbox -------------------------------------------------------------------------------

async def _sandboxed(ctx: ToolContext, run, source: str) -> ToolOutput:
    from tenshu.agents.sandbox import Limits, require_sandbox

    try:
        sandbox = require_sandbox()
    except TenshuError as exc:
        return ToolOutput.error(str(exc))
    result = await run(sandbox, source, workspace=ctx.workspace,
                       network=ctx.agent.sandbox_network,
                       limits=Limits(timeout_s=ctx.timeout_s, cpu_s=max(1, int(ctx.timeout_s))))
    parts = []
    if result.stdout:
        parts.append(result.stdout)
    if result.stderr:
        parts.append(f"[stderr]\n{result.stderr}")
    if result.timed_out:
        parts.append(f"[killed after {ctx.timeout_s:g} s]")
    elif result.exit_code:
        parts.append(f"[exit code {result.exit_code}]")
    failed = result.timed_out or bool(result.exit_code)
    return ToolOutput(clip("\n".join(parts) or "(no output)"), is_error=failed,
                      data={"exit_code": result.exit_code, "timed_out": result.timed_out})


async def shell(args: dict, ctx: ToolContext) -> ToolOutput:
    from tenshu.agents.sandbox import run_shell

    return await _sandboxed(ctx, run_shell, args["command"])


async def python(args: dict, ctx: ToolContext) -> ToolOutput:
    from tenshu.agents.sandbox import run_python

    return await _sandboxed(ctx, run_python, args["code"])


# -- the web -----------------------------------------------------------------------------------

def allowed(host: str, patterns: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, p.lower()) for p in patterns)


async def http_fetch(args: dict, ctx: ToolContext) -> ToolOutput:
    import httpx

    url = args["url"]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ToolOutput.error(f"{url!r} is not an http(s) URL")
    if not allowed(parts.hostname, ctx.agent.http_allow):
        return ToolOutput.error(f"{parts.hostname} is not in this agent's http_allow list")
    try:
        # redirects are followed by hand, so that each hop is checked against the allowlist
        async with httpx.AsyncClient(timeout=ctx.timeout_s, follow_redirects=False,
                                     trust_env=False) as client:
            for _ in range(5):
                response = await client.get(url)
                if response.is_redirect and "location" in response.headers:
                    url = str(response.url.join(response.headers["location"]))
                    host = urlsplit(url).hostname or ""
                    if not allowed(host, ctx.agent.http_allow):
                        return ToolOutput.error(f"redirected to {host}, which is not in this "
                                                "agent's http_allow list")
                    continue
                break
    except httpx.HTTPError as exc:
        return ToolOutput.error(f"{url}: cannot be fetched ({type(exc).__name__}: {exc})")
    body = response.content[:MAX_FETCH_BYTES].decode(response.encoding or "utf-8", "replace")
    data = {"status": response.status_code, "url": str(response.url),
            "content_type": response.headers.get("content-type", "")}
    return ToolOutput(clip(f"HTTP {response.status_code}\n\n{body}"),
                      is_error=response.status_code >= 400, data=data)


_TOOLS = {
    "memory_search": (memory_search, "Search the person's memory (their documents) for passages "
                      "relevant to a query.",
                      _object({"query": _QUERY, "k": {"type": "integer", "minimum": 1,
                                                       "maximum": 20}}, ["query"])),
    "memory_ingest": (memory_ingest, "Save a text into one of the person's memory collections.",
                      _object({"collection": _NAME, "title": _NAME, "text": _STRING},
                              ["collection", "title", "text"])),
    "list_files": (list_files, "List the files in the workspace (or in one of its folders).",
                   _object({"path": _PATH}, [])),
    "read_file": (read_file, "Read a text file from the workspace.",
                  _object({"path": _PATH}, ["path"])),
    "write_file": (write_file, "Write a text file in the workspace (replacing it).",
                   _object({"path": _PATH, "text": _STRING}, ["path", "text"])),
    "delete_file": (delete_file, "Delete a file from the workspace.",
                    _object({"path": _PATH}, ["path"])),
    "shell": (shell, "Run a shell command in a sandbox whose working folder is the workspace.",
              _object({"command": _STRING}, ["command"])),
    "python": (python, "Run Python 3 code in a sandbox whose working folder is the workspace; "
               "print what you want to see.", _object({"code": _STRING}, ["code"])),
    "http_fetch": (http_fetch, "Fetch a web page or API response by URL (GET).",
                   _object({"url": {"type": "string", "maxLength": 2000}}, ["url"])),
}


def builtin_tools(names: list[str]) -> list[Tool]:
    """The built-in tools named, in that order."""
    out = []
    for name in names:
        call, description, schema = _TOOLS[name]
        out.append(Tool(name, description, json.loads(json.dumps(schema)), BUILTINS[name], call))
    return out
