"""A tool an agent may call: its name, description, JSON Schema, class, and how it is called.

Every tool, tenshu's own (builtins.py) or an MCP server's (mcp.py), is one of these, so the
runner treats them alike: it checks a call's arguments against the schema, asks the approval
policy about the tool's class (read, write, destructive, network, exec), and calls it with a
timeout. A tool's failure is a ToolOutput with is_error set: the model sees it and may try
again (or the run fails, as the agent's on_tool_error says).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenshu.config.agents import CLASSES
from tenshu.core.messages import ToolSpec

if TYPE_CHECKING:
    from tenshu.config.agents import AgentSpec
    from tenshu.memory import Memory
    from tenshu.store.people import Principal

MAX_OUTPUT_CHARS = 20_000  # a tool's text as the model sees it; the rest is cut, and said so


@dataclass(frozen=True)
class ToolOutput:
    text: str
    is_error: bool = False
    data: Any = None  # structured content, where the tool gives it

    def to_json(self) -> dict:
        return {"text": self.text, "is_error": self.is_error, "data": self.data}

    @classmethod
    def error(cls, message: str) -> ToolOutput:
        return cls(message, is_error=True)


@dataclass(frozen=True)
class ToolContext:
    """What a call may use: whom the run acts for, its agent, its workspace and services."""

    principal: Principal
    agent: AgentSpec
    workspace: Path
    memory: Memory | None = None
    timeout_s: float = 60.0


Call = Callable[[dict, ToolContext], Awaitable[ToolOutput]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict
    cls: str  # one of config.agents.CLASSES
    call: Call = field(compare=False, repr=False)
    source: str = "tenshu"  # "tenshu", or the MCP server's name

    def __post_init__(self) -> None:
        if self.cls not in CLASSES:
            raise ValueError(f"tool {self.name}: class {self.cls!r} is not one of {CLASSES}")

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)

    def check(self, arguments: Any) -> str | None:
        """Why `arguments` do not fit the tool's schema (None: they do)."""
        if not isinstance(arguments, dict):
            return "the arguments must be a JSON object"
        import jsonschema  # where first used: a server whose agents call no tool never needs it

        error = jsonschema.exceptions.best_match(self._validator.iter_errors(arguments))
        if error is None:
            return None
        where = ".".join(str(p) for p in error.absolute_path)
        return f"{where + ': ' if where else ''}{error.message}"

    @cached_property
    def _validator(self):
        """Built once: jsonschema.validate would check the schema itself on every call.
        (Schemas are checked when a tool is made: schema_problem.)"""
        import jsonschema  # see check

        cls = jsonschema.validators.validator_for(self.parameters)
        return cls(self.parameters)


def schema_problem(schema: Any) -> str | None:
    """Why `schema` cannot be a tool's input schema (None: it can)."""
    if not isinstance(schema, dict):
        return "the input schema is not a JSON object"
    import jsonschema  # see Tool.check

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"the input schema is not valid JSON Schema: {exc.message}"
    if schema.get("type", "object") != "object":
        return "the input schema must describe an object"
    return None


def clip(text: str, most: int = MAX_OUTPUT_CHARS) -> str:
    if len(text) <= most:
        return text
    return text[:most] + f"\n[... {len(text) - most} more characters cut]"
