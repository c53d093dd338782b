"""Agents, the MCP servers they use, and who must approve what: [agents.*], [mcp.servers.*] and
[approvals] in tenshu.toml, and agent files in $TENSHU_HOME/agents/NAME.toml.

    [mcp.servers.notes]
    command = ["python3", "notes_server.py"]   # a stdio server; or url = "http://.../mcp"
    env = { NOTES_DIR = "/srv/notes" }         # all a stdio server sees of an environment,
    pass_env = ["GITHUB_TOKEN"]                # with these copied from tenshu's own

    [agents.researcher]
    model = "qwen"                             # a model or route the server serves
    instructions = "Answer from my notes."
    tools = ["memory_search", "files", "mcp:notes"]   # built-ins, groups, a server's tools
    # and a connected service's: "integration:gmail" (all), "integration:gmail__search_mail"
    max_steps = 20

    [approvals]                                # per tool class: allow, ask or deny
    write = "ask"
    [approvals.users.guest]                    # a user's own (the stricter one wins)
    exec = "deny"

Validated here, once; the runner (tenshu/agents/) takes these frozen settings as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

CLASSES = ("read", "write", "destructive", "network", "exec")
DECISIONS = ("allow", "ask", "deny")  # in order of strictness
DEFAULT_POLICY = (("read", "allow"), ("write", "ask"), ("destructive", "ask"),
                  ("network", "ask"), ("exec", "ask"))

# tenshu's own tools and their classes (tenshu/agents/builtins.py implements them), and the
# groups an agent may name instead of each tool
BUILTINS = {
    "memory_search": "read", "memory_ingest": "write",
    "list_files": "read", "read_file": "read", "write_file": "write", "delete_file": "destructive",
    "shell": "exec", "python": "exec", "http_fetch": "network",
}
GROUPS = {"memory": ("memory_search", "memory_ingest"),
          "files": ("list_files", "read_file", "write_file", "delete_file")}
TOOL_CHOICES = ("auto", "none", "required")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
SEPARATOR = "__"  # an MCP tool is offered as SERVER__TOOL, an integration's as NAME__TOOL
INTEGRATION = "integration:"


@dataclass(frozen=True)
class McpServerSpec:
    """One MCP server: a stdio command or a Streamable HTTP url."""

    name: str
    command: tuple[str, ...] = ()
    url: str = ""
    env: tuple[tuple[str, str], ...] = ()
    pass_env: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    cwd: str = ""
    start_timeout_s: float = 30.0
    # a tool's class when its hints are wrong or missing (an unhinted tool is destructive,
    # as MCP's destructiveHint defaults to true)
    classes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or SEPARATOR in self.name:
            raise ValueError(f"{self.name!r}: a server's name is letters, digits, - and _ "
                             f"(no {SEPARATOR})")
        if bool(self.command) == bool(self.url):
            raise ValueError("give either command (a stdio server) or url (Streamable HTTP)")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url: {self.url!r} is not an http(s) URL")
        if self.start_timeout_s <= 0:
            raise ValueError("start_timeout_s: must be > 0")
        for tool, cls in self.classes:
            if cls not in CLASSES:
                raise ValueError(f"classes.{tool}: {cls!r} is not one of {', '.join(CLASSES)}")


@dataclass(frozen=True)
class AgentSpec:
    """One agent. `force_tools`: its first model steps must call these tools, in order (for
    small local models that do not call tools on their own); then `tool_choice` holds."""

    name: str
    model: str
    instructions: str = ""
    description: str = ""
    tools: tuple[str, ...] = ()
    force_tools: tuple[str, ...] = ()
    tool_choice: str = "auto"
    max_steps: int = 20  # model steps in a run
    max_tokens: int = 1024  # output tokens of one model step
    max_total_tokens: int = 100_000  # input and output tokens of the whole run
    max_seconds: float = 600.0  # the whole run, not counting waits for an approval
    tool_timeout_s: float = 60.0  # one tool call
    approvals: tuple[tuple[str, str], ...] = ()  # class -> decision, over [approvals]
    approval_timeout_s: float = 3600.0  # then the call is denied
    http_allow: tuple[str, ...] = ()  # hosts http_fetch may reach ("*.example.com" allowed)
    sandbox_network: bool = False  # whether shell and python may use the network
    memory: tuple[str, ...] = ()  # collections memory_search looks in (default: all of the user's)
    on_tool_error: str = "continue"  # continue: the model sees the error; fail: the run ends
    temperature: float | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"{self.name!r}: an agent's name is letters, digits, - and _")
        if not self.model:
            raise ValueError("model: the model or route the agent uses")
        if self.tool_choice not in TOOL_CHOICES:
            raise ValueError(f"tool_choice: one of {', '.join(TOOL_CHOICES)}")
        if self.on_tool_error not in ("continue", "fail"):
            raise ValueError("on_tool_error: continue or fail")
        for key in ("max_steps", "max_tokens", "max_total_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be at least 1")
        for key in ("max_seconds", "tool_timeout_s", "approval_timeout_s"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: must be > 0")
        _check_policy(self.approvals, "approvals")
        for name in self.force_tools:
            if not self.offers(name):
                raise ValueError(f"force_tools: {name!r} is not among the agent's tools")

    def offers(self, tool: str) -> bool:
        """Whether the agent may use the tool named `tool` (a built-in or SERVER__TOOL)."""
        for entry in self.tools:
            if entry == tool or tool in GROUPS.get(entry, ()):
                return True
            if entry.startswith("mcp:") and tool.startswith(entry[4:] + SEPARATOR):
                return True
            if entry.startswith(INTEGRATION):
                named = entry[len(INTEGRATION):]
                if tool == named or SEPARATOR not in named and tool.startswith(named + SEPARATOR):
                    return True
        return False

    def builtins(self) -> list[str]:
        return [t for t in BUILTINS if self.offers(t)]

    def servers(self) -> list[str]:
        """The MCP servers whose tools the agent uses."""
        out = []
        for entry in self.tools:
            if entry.startswith(INTEGRATION):
                continue
            server = entry[4:] if entry.startswith("mcp:") else entry.partition(SEPARATOR)[0]
            if (entry.startswith("mcp:") or SEPARATOR in entry) and server not in out:
                out.append(server)
        return out

    def integrations(self) -> list[str]:
        """The integrations whose tools the agent uses."""
        out = []
        for entry in self.tools:
            name = entry[len(INTEGRATION):].partition(SEPARATOR)[0]
            if entry.startswith(INTEGRATION) and name not in out:
                out.append(name)
        return out


@dataclass(frozen=True)
class AgentsSettings:
    agents: tuple[AgentSpec, ...] = ()
    servers: tuple[McpServerSpec, ...] = ()
    approvals: tuple[tuple[str, str], ...] = DEFAULT_POLICY
    user_approvals: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    home_agents: Path | None = field(default=None, compare=False)  # where agent files were

    def __post_init__(self) -> None:
        _check_policy(self.approvals, "approvals")
        servers = {s.name for s in self.servers}
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ValueError("agents: two agents share a name")
        for agent in self.agents:
            for entry in agent.tools:
                if entry.startswith(INTEGRATION):
                    continue  # checked against [integrations.*]: check_integrations
                server = entry[4:] if entry.startswith("mcp:") else entry.partition(SEPARATOR)[0]
                if entry.startswith("mcp:") or SEPARATOR in entry:
                    if server not in servers:
                        raise ValueError(f"agents.{agent.name}.tools: {entry!r} names no "
                                         f"configured MCP server ([mcp.servers.{server}])")
                elif entry not in BUILTINS and entry not in GROUPS:
                    known = ", ".join([*BUILTINS, *GROUPS, "mcp:SERVER", "SERVER__TOOL",
                                       "integration:NAME", "integration:NAME__TOOL"])
                    raise ValueError(f"agents.{agent.name}.tools: unknown tool {entry!r}; "
                                     f"known: {known}")

    def check_integrations(self, integrations) -> None:
        """Every `integration:NAME` an agent names is configured ([integrations.NAME]); which
        tools NAME has is its provider's, checked when the agents start."""
        names = {spec.name for spec in integrations.integrations}
        for agent in self.agents:
            for name in agent.integrations():
                if name not in names:
                    raise ValueError(f"agents.{agent.name}.tools: 'integration:{name}' names no "
                                     f"configured integration ([integrations.{name}])")

    def agent(self, name: str) -> AgentSpec | None:
        return next((a for a in self.agents if a.name == name), None)

    def server(self, name: str) -> McpServerSpec | None:
        return next((s for s in self.servers if s.name == name), None)

    def policy(self, agent: AgentSpec, user: str) -> dict[str, str]:
        """Each tool class's decision for this agent acting for this user: the stricter of the
        agent's (over the defaults) and the user's own."""
        mine = dict(self.approvals) | dict(agent.approvals)
        for who, rules in self.user_approvals:
            if who == user:
                for cls, decision in rules:
                    if DECISIONS.index(decision) > DECISIONS.index(mine[cls]):
                        mine[cls] = decision
        return mine


def _check_policy(pairs, where: str) -> None:
    for cls, decision in pairs:
        if cls not in CLASSES:
            raise ValueError(f"{where}: {cls!r} is no tool class ({', '.join(CLASSES)})")
        if decision not in DECISIONS:
            raise ValueError(f"{where}.{cls}: {decision!r} is not one of {', '.join(DECISIONS)}")


def _pairs(value, where: str) -> list[list]:
    """A TOML table of strings as [[key, value], ...] (what config's checker takes)."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: must be a table")
    for key, item in value.items():
        if not isinstance(item, str):
            raise ValueError(f"{where}.{key}: must be a string")
    return [[k, v] for k, v in value.items()]


def parse_agents(data: dict, agent_files: Path | None = None) -> AgentsSettings:
    """[agents.*], [mcp.servers.*] and [approvals] of a read tenshu.toml, plus one agent per
    NAME.toml in `agent_files`. Any problem is a ValueError naming the key or file."""
    import tomllib

    from tenshu.config.routing import _build

    def agent(name: str, table, where: str) -> AgentSpec:
        if not isinstance(table, dict):
            raise ValueError(f"{where}: must be a table")
        table = dict(table)
        if "approvals" in table:
            table["approvals"] = _pairs(table["approvals"], f"{where}.approvals")
        return _build(AgentSpec, table, where, name=name)

    mcp = data.get("mcp", {})
    if not isinstance(mcp, dict) or set(mcp) - {"servers"}:
        raise ValueError("[mcp] takes one table, servers ([mcp.servers.NAME])")
    servers = []
    for name, table in (mcp.get("servers") or {}).items():
        where = f"mcp.servers.{name}"
        if not isinstance(table, dict):
            raise ValueError(f"{where}: must be a table")
        table = dict(table)
        for key in ("env", "headers", "classes"):
            if key in table:
                table[key] = _pairs(table[key], f"{where}.{key}")
        servers.append(_build(McpServerSpec, table, where, name=name))
    agents = [agent(name, table, f"agents.{name}")
              for name, table in (data.get("agents") or {}).items()]
    if agent_files is not None and agent_files.is_dir():
        for file in sorted(agent_files.glob("*.toml")):
            try:
                table = tomllib.loads(file.read_text())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ValueError(f"{file}: not valid TOML: {exc}") from None
            try:
                agents.append(agent(file.stem, table, file.stem))
            except ValueError as exc:
                raise ValueError(f"{file}: {exc}") from None
    approvals = data.get("approvals", {})
    if not isinstance(approvals, dict):
        raise ValueError("approvals: must be a table")
    approvals = dict(approvals)
    users = approvals.pop("users", {})
    if not isinstance(users, dict):
        raise ValueError("approvals.users: must be a table of users")
    policy = dict(DEFAULT_POLICY) | {k: v for k, v in _pairs(approvals, "approvals")}
    per_user = tuple((who, tuple(tuple(p) for p in _pairs(rules, f"approvals.users.{who}")))
                     for who, rules in users.items())
    for who, rules in per_user:
        _check_policy(rules, f"approvals.users.{who}")
    try:
        return AgentsSettings(tuple(agents), tuple(servers), tuple(policy.items()), per_user,
                              home_agents=agent_files)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
