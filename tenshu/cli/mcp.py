"""Offer tenshu's MCP tools over stdio, to MCP clients that start their servers themselves.

  tenshu mcp                                  relay to the server at http://127.0.0.1:7311
  tenshu mcp --url http://10.0.0.5:7311       to another one (its /mcp)
  tenshu mcp --key tsk-...                    with this key (default: TENSHU_API_KEY)

The tools (memory_search, memory_ingest, list_models, list_routes, get_trace, route_stats) live
in the running server, at /mcp; this command passes the client's tool listings and calls on to
it, and its answers back, so they act for the key's user. A key is needed even on loopback.
Only the protocol is written to stdout; errors and logs go to stderr. A server that cannot be
reached is an error (exit 1) before any tool is offered.

In a client's settings (Claude Desktop's claude_desktop_config.json, Claude Code's .mcp.json):

  {"mcpServers": {"tenshu": {"command": "tenshu", "args": ["mcp"],
                             "env": {"TENSHU_API_KEY": "tsk-..."}}}}

A client that speaks Streamable HTTP can use the server's /mcp directly instead, e.g.
  claude mcp add --transport http tenshu http://127.0.0.1:7311/mcp \\
      --header "Authorization: Bearer tsk-..."
"""

from __future__ import annotations

import logging
import sys
from contextlib import AsyncExitStack

from tenshu.config import DEFAULT_PORT, api_key_from_env

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
log = logging.getLogger("tenshu.mcp")


def add_arguments(parser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL,
                        help=f"the tenshu server (default {DEFAULT_URL}); /mcp is added")
    parser.add_argument("--key", help="its API key (default: TENSHU_API_KEY)")


def main(args) -> int:
    import anyio

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="tenshu mcp: %(levelname)s: %(message)s")
    key = args.key or api_key_from_env()
    if not key:
        raise ValueError("an API key is needed, even on loopback: pass --key or set "
                         "TENSHU_API_KEY (create one with `tenshu keys create --name NAME`)")
    return anyio.run(relay, endpoint(args.url), key)


def endpoint(url: str) -> str:
    """The server's MCP endpoint: `url` itself if it names /mcp, else url + /mcp."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        raise ValueError(f"--url {url!r}: give the server's address, like {DEFAULT_URL}")
    return url if url.endswith("/mcp") else url + "/mcp"


async def relay(url: str, key: str) -> int:
    """Connect to the server's /mcp, then serve stdio until the client leaves."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.server.stdio import stdio_server

    refusals: list[str] = []  # the server's own words, where it answered with an error

    async def note(response) -> None:
        if response.status_code >= 400:
            await response.aread()
            refusals.append(f"{response.status_code} {_message(response)}")

    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {key}"}, event_hooks={"response": [note]},
            timeout=httpx2.Timeout(30.0, read=300.0)))  # a large ingest takes a while
        try:
            upstream = await stack.enter_async_context(
                Client(streamable_http_client(url, http_client=http)))
        except Exception as exc:  # any failure here: no server to relay to
            why = refusals[-1] if refusals else f"{_why(exc)} (is `tenshu serve` running?)"
            print(f"tenshu mcp: error: cannot use tenshu's MCP server at {url}: {why}",
                  file=sys.stderr)
            return 1
        http.event_hooks = {}  # connected: what the server says now goes to the client
        server = proxy(upstream, url)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    return 0


def proxy(upstream, url: str):
    """A stdio-side MCP server whose tools are the upstream's: listings and calls are passed
    on as they are, with the SDK's types on both sides."""
    import mcp.types as types
    from mcp.server.lowlevel import Server
    from mcp.shared.exceptions import MCPError

    async def list_tools(_ctx, params: types.PaginatedRequestParams | None):
        return await upstream.list_tools(cursor=params.cursor if params else None)

    async def call_tool(_ctx, params: types.CallToolRequestParams):
        try:
            return await upstream.call_tool(params.name, params.arguments)
        except MCPError:
            raise  # the server's protocol error (an unknown tool, say), passed on as one
        except Exception as exc:  # the server went away: the call's error
            log.warning("calling %s at %s failed: %s", params.name, url, _why(exc))
            return types.CallToolResult(is_error=True, content=[types.TextContent(
                type="text", text=f"tenshu at {url} did not answer: {_why(exc)}")])

    info = upstream.server_info
    return Server(info.name if info else "tenshu", version=info.version if info else "",
                  instructions=upstream.instructions, on_list_tools=list_tools,
                  on_call_tool=call_tool)


def _message(response) -> str:
    """An error response's message: tenshu's JSON error, else the start of its text."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def _why(exc: BaseException) -> str:
    """The innermost cause worth reading (task groups wrap what failed in groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__
