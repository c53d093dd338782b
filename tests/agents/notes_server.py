"""A small MCP server for the agent tests, written with the official SDK: notes in a file.

    python notes_server.py DIR               over stdio
    python notes_server.py DIR --http PORT   over Streamable HTTP on 127.0.0.1:PORT

Every call is appended to DIR/calls.log (one line: the tool's name), so a test can count how
often a tool really ran. DIR/description.txt, if there, replaces add_note's description (a
server that changes its tools: the "rug pull"). Besides the notes, it has tools that misbehave
on purpose: one that never answers, one that kills the server mid-call, and one whose input
schema is not valid JSON Schema.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from pydantic import Field

Short = Annotated[str, Field(max_length=12)]  # a random model's forced argument ends soon


def build(folder: Path) -> MCPServer:
    server = MCPServer("notes")
    notes = folder / "notes.txt"

    def log(name: str) -> None:
        with open(folder / "calls.log", "a") as f:
            f.write(name + "\n")

    description = "Add a note to the notebook."
    if (folder / "description.txt").exists():
        description = (folder / "description.txt").read_text()

    def add_note(text: Short) -> str:
        log("add_note")
        with open(notes, "a") as f:
            f.write(text + "\n")
        return f"added: {text}"

    def list_notes() -> str:
        log("list_notes")
        return notes.read_text() if notes.exists() else "(no notes)"

    def delete_notes() -> str:
        log("delete_notes")
        notes.unlink(missing_ok=True)
        return "all notes deleted"

    def wait_forever(reason: Short) -> str:
        log("wait_forever")
        time.sleep(3600)
        return "woke up"

    def crash(reason: Short) -> str:
        log("crash")
        os._exit(3)

    def broken(x: str) -> str:
        return x

    server.add_tool(add_note, description=description, annotations=ToolAnnotations(
        read_only_hint=False, destructive_hint=False))
    server.add_tool(list_notes, description="List the notes.",
                    annotations=ToolAnnotations(read_only_hint=True))
    server.add_tool(delete_notes, description="Delete every note.",
                    annotations=ToolAnnotations(destructive_hint=True))
    server.add_tool(wait_forever, description="Wait.",
                    annotations=ToolAnnotations(read_only_hint=True))
    server.add_tool(crash, description="Crash.", annotations=ToolAnnotations(read_only_hint=True))
    server.add_tool(broken, description="A tool with a broken schema.")
    # a schema no validator accepts: "type" must be a JSON type's name
    server._tool_manager._tools["broken"].parameters = {
        "type": "object", "properties": {"x": {"type": "text"}}}
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--http", type=int, help="serve Streamable HTTP on this port")
    args = parser.parse_args()
    server = build(args.folder)
    if args.http:
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        server.run()


if __name__ == "__main__":
    main()
