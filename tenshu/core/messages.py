"""Protocol-neutral conversation content: content blocks, messages and tool specs.

Every wire protocol (OpenAI, Anthropic, Ollama) is translated into these types once, in
`protocols/`, and back. The shapes follow Anthropic's Messages model, the most expressive of the
three: a message is a role and a list of typed blocks, tool results are blocks in a user turn.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass
class TextBlock:
    text: str
    type: Literal["text"] = "text"


@dataclass
class ImageBlock:
    """An image given inline (base64 `data` with its `media_type`) or by `url`."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    type: Literal["image"] = "image"


@dataclass
class ToolUseBlock:
    """A call the assistant made: `input` is the parsed JSON arguments.

    A client may send back a call whose arguments are text that is not a JSON object (one that
    max_tokens cut short, from some server). Such a call keeps that text in `unparsed`, with
    `input` empty, and the model is shown the text as it was, as OpenAI does.
    """

    id: str
    name: str
    input: dict[str, Any] = field(default_factory=dict)
    type: Literal["tool_use"] = "tool_use"
    unparsed: str | None = field(default=None, kw_only=True)

    @classmethod
    def from_arguments(cls, id: str, name: str, arguments: str) -> ToolUseBlock:
        """A call whose arguments come as JSON text (OpenAI's form): blank is no arguments, a
        JSON object is parsed, anything else is kept `unparsed`."""
        if not arguments.strip():
            return cls(id, name)
        try:
            value = loads_arguments(arguments)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return cls(id, name, value)
        return cls(id, name, unparsed=arguments)


@dataclass
class ToolResultBlock:
    """What a tool returned, sent back in a user turn; answers the ToolUseBlock with that id."""

    tool_use_id: str
    content: list[TextBlock | ImageBlock] = field(default_factory=list)
    is_error: bool = False
    type: Literal["tool_result"] = "tool_result"

    @property
    def text(self) -> str:
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))


@dataclass
class ThinkingBlock:
    """Reasoning text. `signature` is set only by Anthropic and must go back to it unchanged."""

    thinking: str
    signature: str | None = None
    type: Literal["thinking"] = "thinking"


Block = TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock
Role = Literal["system", "user", "assistant"]


@dataclass
class Message:
    role: Role
    content: list[Block] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The message's plain text: its text blocks joined."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))

    @classmethod
    def of(cls, role: Role, text: str) -> Message:
        return cls(role, [TextBlock(text)])


@dataclass
class ToolSpec:
    """A tool the model may call; `parameters` is a JSON Schema of its input object."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})


def to_dict(message: Message) -> dict:
    """A message as plain JSON data ({"role", "content": [blocks, each with its "type"]}), as
    recorded conversations keep it. (By hand, not dataclasses.asdict: this runs for every
    recorded request, and asdict's deep copies cost several times more.)"""
    return {"role": message.role, "content": [_block_dict(b) for b in message.content]}


def _block_dict(block: Block) -> dict:
    kind = type(block)
    if kind is TextBlock:
        return {"text": block.text, "type": "text"}
    if kind is ToolUseBlock:
        data = {"id": block.id, "name": block.name, "input": block.input, "type": "tool_use"}
        if block.unparsed is not None:
            data["unparsed"] = block.unparsed
        return data
    if kind is ToolResultBlock:
        return {"tool_use_id": block.tool_use_id, "is_error": block.is_error,
                "content": [_block_dict(b) for b in block.content], "type": "tool_result"}
    return asdict(block)  # images, thinking, and any subclass


def from_dict(data: dict) -> Message:
    """The message `to_dict` wrote."""
    return Message(data["role"], [_block(b) for b in data.get("content", ())])


def _block(data: dict) -> Block:
    values = {k: v for k, v in data.items() if k != "type"}
    kind = data.get("type")
    if kind == "tool_result":
        values["content"] = [_block(b) for b in values.get("content", ())]
    cls = {"text": TextBlock, "image": ImageBlock, "tool_use": ToolUseBlock,
           "tool_result": ToolResultBlock, "thinking": ThinkingBlock}.get(kind)
    if cls is None:
        raise ValueError(f"unknown content block type {kind!r}")
    return cls(**values)


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # e.g. 1e999: valid JSON, beyond a double
        return sys.float_info.max if value > 0 else -sys.float_info.max
    return value


def loads_arguments(text: str) -> Any:
    """A tool call's JSON arguments. Numbers beyond a double's range (a model may write 1e999,
    which is valid JSON) become the largest finite double, since no JSON encoder can send an
    infinity back to a client."""
    return json.loads(text, parse_float=_finite)
