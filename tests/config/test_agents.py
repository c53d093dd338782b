"""[agents.*], [mcp.servers.*], [approvals] and agent files: read from tenshu.toml as a person
writes it, every mistake an error that names it, and the approval policy's stricter-wins rule."""

from __future__ import annotations

import pytest

from tenshu.config import load_server_settings

TOML = """
[mcp.servers.notes]
command = ["python3", "notes.py"]
env = { NOTES_DIR = "/srv/notes" }
pass_env = ["GITHUB_TOKEN"]

[mcp.servers.web]
url = "http://127.0.0.1:9000/mcp"
headers = { Authorization = "Bearer x" }
classes = { fetch = "network" }

[agents.researcher]
model = "tenshu-tiny"
instructions = "Answer from my notes."
tools = ["memory_search", "files", "mcp:notes", "web__fetch"]
force_tools = ["memory_search"]
approvals = { exec = "deny" }

[approvals]
write = "allow"

[approvals.users.guest]
write = "ask"
read = "deny"
"""


def settings(tmp_path, text: str, files: dict[str, str] | None = None):
    (tmp_path / "tenshu.toml").write_text(text)
    for name, body in (files or {}).items():
        (tmp_path / "agents").mkdir(exist_ok=True)
        (tmp_path / "agents" / name).write_text(body)
    return load_server_settings(tmp_path / "tenshu.toml").agents


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSHU_HOME", str(tmp_path))


def test_agents_servers_and_approvals_are_read(tmp_path):
    agents = settings(tmp_path, TOML, {"writer.toml": 'model = "tenshu-tiny"\ntools = ["files"]'})
    researcher = agents.agent("researcher")
    assert researcher.builtins() == ["memory_search", "list_files", "read_file", "write_file",
                                     "delete_file"]
    assert researcher.servers() == ["notes", "web"]
    assert researcher.offers("notes__anything") and researcher.offers("web__fetch")
    assert not researcher.offers("web__other") and not researcher.offers("shell")
    assert agents.agent("writer").tools == ("files",)  # from agents/writer.toml
    assert dict(agents.server("notes").env) == {"NOTES_DIR": "/srv/notes"}
    assert dict(agents.server("web").classes) == {"fetch": "network"}
    mine = agents.policy(researcher, "owner")
    assert mine == {"read": "allow", "write": "allow", "destructive": "ask",
                    "network": "ask", "exec": "deny"}
    guest = agents.policy(researcher, "guest")  # the stricter of the agent's and the user's
    assert guest["write"] == "ask" and guest["read"] == "deny" and guest["exec"] == "deny"


@pytest.mark.parametrize(("change", "message"), [
    ('tools = ["memory_search", "telepathy"]', "unknown tool 'telepathy'"),
    ('tools = ["mcp:nowhere"]', "'mcp:nowhere' names no configured MCP server"),
    ('tools = ["files"]\nforce_tools = ["shell"]', "'shell' is not among the agent's tools"),
    ('tools = ["files"]\ntool_choice = "sometimes"', "tool_choice: one of auto, none, required"),
    ('tools = ["files"]\nmax_steps = 0', "max_steps: must be at least 1"),
    ('tools = ["files"]\napprovals = { exec = "maybe" }', "'maybe' is not one of allow, ask"),
    ('tools = ["files"]\nwings = 2', "unknown key(s) wings"),
])
def test_a_bad_agent_is_an_error_that_names_it(tmp_path, change, message):
    text = f'[agents.bad]\nmodel = "tenshu-tiny"\n{change}\n'
    with pytest.raises(ValueError, match="agents.bad") as caught:
        settings(tmp_path, text)
    assert message in str(caught.value)


@pytest.mark.parametrize(("table", "message"), [
    ('[mcp.servers.x]\ncommand = ["a"]\nurl = "http://h/mcp"', "either command"),
    ('[mcp.servers.x]\nurl = "ftp://h/mcp"', "is not an http(s) URL"),
    ('[mcp.servers.a__b]\ncommand = ["a"]', "a server's name"),
    ('[mcp.servers.x]\ncommand = ["a"]\nclasses = { t = "scary" }', "'scary' is not one of"),
    ('[approvals]\nteleport = "allow"', "'teleport' is no tool class"),
])
def test_a_bad_server_or_policy_is_an_error_that_names_it(tmp_path, table, message):
    with pytest.raises(ValueError) as caught:
        settings(tmp_path, table)
    assert message in str(caught.value) and str(tmp_path / "tenshu.toml") in str(caught.value)


def test_a_broken_agent_file_names_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"agents/bad\.toml: not valid TOML"):
        settings(tmp_path, "", {"bad.toml": "model = "})
    (tmp_path / "agents" / "bad.toml").write_text('model = "m"\ntools = ["nope"]')
    with pytest.raises(ValueError, match=r"unknown tool 'nope'"):
        settings(tmp_path, "")
