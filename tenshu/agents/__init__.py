"""Agents: runs of a model with tools, as journaled state graphs, under approvals and a sandbox.

    tools.py      a tool: its class (read, write, destructive, network, exec) and how it is called
    builtins.py   tenshu's own tools: memory, files in the workspace, shell and Python, HTTP fetch
    mcp.py        tools from configured MCP servers (stdio and Streamable HTTP), pinned by hash
    sandbox.py    bubblewrap (Linux) and sandbox-exec (macOS) for the exec tools
    graph.py      a small state graph: nodes, edges, conditions
    runner.py     one run: the agent's graph over its state, each step journaled; approvals
    service.py    the server's agents: start, follow, approve, cancel, resume after a restart
"""
