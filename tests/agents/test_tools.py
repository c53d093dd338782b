"""tenshu's own tools, called as the runner calls them: files stay in the workspace (symlinks
too), HTTP fetch keeps to the agent's allowlist (redirects too), shell and Python run in the
sandbox; and what decides a tool's class and whether its arguments fit."""

from __future__ import annotations

import asyncio
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tenshu.agents.builtins import builtin_tools
from tenshu.agents.mcp import tool_class, tool_list_digest
from tenshu.agents.sandbox import find_sandbox
from tenshu.agents.tools import ToolContext, schema_problem
from tenshu.config.agents import AgentSpec, McpServerSpec
from tenshu.store.people import Principal

OWNER = Principal(1, "owner", "admin")


def call(name: str, args: dict, workspace, **agent_options):
    tool = builtin_tools([name])[0]
    agent = AgentSpec("t", "m", tools=(name,), **agent_options)
    problem = tool.check(args)
    assert problem is None, problem
    return asyncio.run(tool.call(args, ToolContext(OWNER, agent, workspace, timeout_s=10)))


def test_files_are_read_written_and_deleted_only_inside_the_workspace(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (tmp_path / "secret.txt").write_text("outside")
    assert not call("write_file", {"path": "a/b.txt", "text": "hello"}, workspace).is_error
    assert call("read_file", {"path": "a/b.txt"}, workspace).text == "hello"
    assert call("list_files", {}, workspace).data == {"files": ["a/", "a/b.txt"]}
    for path in ("../secret.txt", str(tmp_path / "secret.txt"), "a/../../secret.txt"):
        read = call("read_file", {"path": path}, workspace)
        assert read.is_error and "outside the workspace" in read.text
        assert call("delete_file", {"path": path}, workspace).is_error
        assert call("write_file", {"path": path, "text": "x"}, workspace).is_error
    os.symlink(tmp_path / "secret.txt", workspace / "link.txt")  # as a sandboxed shell could
    assert call("read_file", {"path": "link.txt"}, workspace).is_error
    assert call("delete_file", {"path": "link.txt"}, workspace).is_error
    assert (tmp_path / "secret.txt").read_text() == "outside"
    assert not call("delete_file", {"path": "a/b.txt"}, workspace).is_error
    assert not (workspace / "a" / "b.txt").exists()


class _Site(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the standard library's name)
        if self.path == "/away":
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_port}/page")
            self.end_headers()
            return
        body = b"the page"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def site():
    server = HTTPServer(("127.0.0.1", 0), _Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()


def test_http_fetch_reaches_only_the_allowed_hosts_even_through_redirects(tmp_path, site):
    allowed = ("127.0.0.1",)
    page = call("http_fetch", {"url": f"http://127.0.0.1:{site}/page"}, tmp_path,
                http_allow=allowed)
    assert not page.is_error and page.text.endswith("the page") and page.data["status"] == 200
    refused = call("http_fetch", {"url": f"http://localhost:{site}/page"}, tmp_path,
                   http_allow=allowed)
    assert refused.is_error and "not in this agent's http_allow list" in refused.text
    bounced = call("http_fetch", {"url": f"http://127.0.0.1:{site}/away"}, tmp_path,
                   http_allow=allowed)
    assert bounced.is_error and "redirected to localhost" in bounced.text
    nothing = call("http_fetch", {"url": "file:///etc/passwd"}, tmp_path, http_allow=("*",))
    assert nothing.is_error


@pytest.mark.skipif(find_sandbox() is None, reason="no sandbox here (apt install bubblewrap)")
def test_shell_and_python_run_in_the_sandbox(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSHU_TEST_SECRET", "s3cret")
    shell = call("shell", {"command": "echo hi > made.txt; id -u; ls /root; "
                                      "echo ${TENSHU_TEST_SECRET:-none}"}, tmp_path)
    assert (tmp_path / "made.txt").read_text() == "hi\n"
    assert "none" in shell.text and "s3cret" not in shell.text
    assert not shell.text.startswith("0\n")  # not root inside
    python = call("python", {"code": "print(open('made.txt').read().strip() * 2)"}, tmp_path)
    assert python.text.strip() == "hihi" and not python.is_error
    failed = call("python", {"code": "raise SystemExit(3)"}, tmp_path)
    assert failed.is_error and "[exit code 3]" in failed.text


def test_arguments_are_checked_against_the_schema():
    tool = builtin_tools(["read_file"])[0]
    assert tool.check({"path": "a"}) is None
    assert "required property" in tool.check({})
    assert "Additional properties" in tool.check({"path": "a", "mode": "w"})
    assert tool.check([1]) == "the arguments must be a JSON object"


def test_a_tool_schema_must_be_valid_json_schema_of_an_object():
    assert schema_problem({"type": "object", "properties": {"x": {"type": "string"}}}) is None
    assert "not valid JSON Schema" in schema_problem({"type": "object", "properties": {
        "x": {"type": "text"}}})
    assert "must describe an object" in schema_problem({"type": "string"})
    assert schema_problem([]) == "the input schema is not a JSON object"


def test_an_mcp_tool_class_follows_its_hints_as_mcp_defines_them():
    spec = McpServerSpec("s", command=("x",), classes=(("shout", "network"),))

    def described(name, **hints):
        return {"name": name, "annotations": hints}
    assert tool_class(spec, described("look", read_only_hint=True)) == "read"
    assert tool_class(spec, described("add", destructive_hint=False)) == "write"
    assert tool_class(spec, described("anything")) == "destructive"  # MCP's default
    assert tool_class(spec, described("shout", read_only_hint=True)) == "network"  # config wins


def test_a_tool_list_digest_changes_with_any_description_and_not_with_order():
    a = {"name": "a", "description": "adds", "input_schema": {}, "annotations": {}}
    b = {"name": "b", "description": "b", "input_schema": {}, "annotations": {}}
    assert tool_list_digest([a, b]) == tool_list_digest([b, a])
    assert tool_list_digest([a, b]) != tool_list_digest([{**a, "description": "adds. Also"}, b])
