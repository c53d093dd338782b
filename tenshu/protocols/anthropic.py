"""The Anthropic Messages wire format, server side in: request bodies -> ChatRequest; errors.

The pydantic models of the request body (`MessagesRequest`, `CountTokensRequest`; they document
/openapi.json), `parse_request` (body -> ChatRequest), the model list for Anthropic clients and
the error body. Responses and streams are written by anthropic_encode.py; the client direction
(an upstream that speaks Anthropic) is anthropic_client.py.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from itertools import takewhile
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from tenshu.core.errors import ContextLengthError, InvalidRequestError, TenshuError
from tenshu.core.messages import (
    Block,
    ImageBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tenshu.core.request import ChatRequest, ToolChoice, stop_strings

# -- the request body ---------------------------------------------------------------------------


def _text_to_blocks(value):
    """Content given as a string is one text block (so a bad block is reported as
    `messages.0.content.1.text.text`, the path Anthropic's own errors name)."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}] if value else []
    return value


def _or_a_string(schema: dict) -> None:
    """Document that the list may also be given as a string."""
    blocks = dict(schema)
    title = blocks.pop("title", None)
    schema.clear()
    schema["anyOf"] = [{"type": "string"}, blocks]
    if title:
        schema["title"] = title


def Blocks(item):  # noqa: N802 (a type alias with a parameter)
    return Annotated[
        list[item], BeforeValidator(_text_to_blocks), Field(json_schema_extra=_or_a_string)
    ]


class _Wire(BaseModel):
    # Real clients send many fields we do not use (cache_control, citations, betas...). Types
    # are strict, as Anthropic's API is: "10" is not a max_tokens.
    model_config = ConfigDict(extra="allow", strict=True)


class TextParam(_Wire):
    type: Literal["text"]
    text: str


class Base64Source(_Wire):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(_Wire):
    type: Literal["url"]
    url: str


class ImageParam(_Wire):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]


class ToolUseParam(_Wire):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


ToolResultContent = Annotated[TextParam | ImageParam, Field(discriminator="type")]


class ToolResultParam(_Wire):
    type: Literal["tool_result"]
    tool_use_id: str
    content: Blocks(ToolResultContent) = Field(default_factory=list)
    is_error: bool = False


class ThinkingParam(_Wire):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingParam(_Wire):
    type: Literal["redacted_thinking"]
    data: str


ContentParam = Annotated[
    TextParam | ImageParam | ToolUseParam | ToolResultParam | ThinkingParam | RedactedThinkingParam,
    Field(discriminator="type"),
]


class MessageParam(_Wire):
    role: Literal["user", "assistant"]
    content: Blocks(ContentParam)


class ToolParam(_Wire):
    name: str
    description: str = ""
    # chat templates loop over `properties`, so a tool without a schema gets an empty one
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )


class ToolChoiceParam(_Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class MetadataParam(_Wire):
    user_id: str | None = None


class ThinkingEnabled(_Wire):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1)


class ThinkingOther(_Wire):
    type: Literal["disabled", "adaptive"]  # adaptive: the model decides (Claude Code sends it)


ThinkingConfig = Annotated[ThinkingEnabled | ThinkingOther, Field(discriminator="type")]


class CountTokensRequest(_Wire):
    """POST /v1/messages/count_tokens: the prompt part of a Messages request."""

    model: str
    messages: list[MessageParam]
    system: Blocks(TextParam) = Field(default_factory=list)
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingConfig | None = None  # checked; the local models do not think on demand


class MessagesRequest(CountTokensRequest):
    """POST /v1/messages."""

    max_tokens: int = Field(ge=1)
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    # bounded: the engine's sampler holds top_k in an int64 tensor
    top_k: int | None = Field(default=None, ge=0, le=2**31 - 1)
    metadata: MetadataParam | None = None
    # structured outputs: {"format": {"type": "json_schema", "schema": {...}}}; its `effort`
    # is accepted and ignored (the local models do not think on demand)
    output_config: dict[str, Any] | None = None
    output_format: dict[str, Any] | None = None  # the beta's name for output_config.format


def parse_request(body: CountTokensRequest) -> ChatRequest:
    """The ChatRequest a Messages (or count_tokens) body asks for."""
    _check_roles(body.messages)
    _check_tool_pairs(body.messages)
    messages = []
    if body.system:
        messages.append(Message("system", [TextBlock(b.text) for b in body.system]))
    messages += [Message(m.role, _parse_content(m.content)) for m in body.messages]
    tools = [ToolSpec(t.name, t.description, t.input_schema) for t in body.tools or []]
    request = ChatRequest(
        model=body.model,
        messages=messages,
        tools=tools,
        tool_choice=_parse_tool_choice(body.tool_choice, tools),
        thinking=body.thinking.model_dump() if body.thinking is not None else None,
    )
    if isinstance(body, MessagesRequest):
        request.max_tokens = body.max_tokens
        request.stop = stop_strings(body.stop_sequences, "stop_sequences")
        request.stream = body.stream
        request.temperature, request.top_p, request.top_k = body.temperature, body.top_p, body.top_k
        if body.metadata is not None:
            request.metadata = body.metadata.model_dump(exclude_none=True)
            request.user = body.metadata.user_id
        request.response_format = _response_format(body)
    return request


def _response_format(body: MessagesRequest) -> dict | None:
    """Anthropic's structured output format, in the OpenAI shape ChatRequest carries."""
    fmt, field = (body.output_config or {}).get("format"), "output_config.format"
    if fmt is None:
        fmt, field = body.output_format, "output_format"
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise InvalidRequestError(f"{field}.type: must be 'json_schema'", field=f"{field}.type")
    if not isinstance(fmt.get("schema"), dict):
        raise InvalidRequestError(
            f"{field}.schema: required, the JSON Schema the reply must match",
            field=f"{field}.schema",
        )
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt["schema"]}}


def _parse_content(content: list) -> list[Block]:
    return [parse_block(b) for b in content]


class RedactedThinkingBlock(ThinkingBlock):
    """Anthropic's redacted_thinking: opaque `data`, kept as the signature of an empty thinking
    block. A subclass, so the rest of tenshu sees reasoning and this module can send it back as
    it came (an empty thinking block with a signature is also what `display: omitted` gives)."""


def parse_block(b) -> Block:
    """One validated content block -> core."""
    if isinstance(b, TextParam):
        return TextBlock(b.text)
    if isinstance(b, ImageParam):
        if isinstance(b.source, Base64Source):
            return ImageBlock(media_type=b.source.media_type, data=b.source.data)
        return ImageBlock(url=b.source.url)
    if isinstance(b, ToolUseParam):
        return ToolUseBlock(b.id, b.name, b.input)
    if isinstance(b, ToolResultParam):
        return ToolResultBlock(b.tool_use_id, _parse_content(b.content), b.is_error)
    if isinstance(b, ThinkingParam):
        return ThinkingBlock(b.thinking, b.signature)
    return RedactedThinkingBlock("", b.data)


# Which blocks each role may carry, as Anthropic's Messages API checks them: the assistant calls
# tools and thinks, the user (and only the user) sends images and tools' results. Anthropic
# answers 400 to a block in the wrong role's turn; tenshu used to take it and generate from a
# conversation no model was trained on. (A first message from the assistant, consecutive turns
# of one role (merged) and a final assistant turn (a prefill) are all accepted, as Anthropic
# accepts them; `system` is not a role here but the top-level field, which the wire model
# already enforces.)
_ROLE_BLOCKS = {
    "user": (TextParam, ImageParam, ToolResultParam),
    "assistant": (TextParam, ToolUseParam, ThinkingParam, RedactedThinkingParam),
}
_WHERE = {"tool_use": "assistant", "thinking": "assistant", "redacted_thinking": "assistant",
          "tool_result": "user", "image": "user"}


def _check_roles(messages: list[MessageParam]) -> None:
    for i, m in enumerate(messages):
        for j, b in enumerate(m.content):
            if not isinstance(b, _ROLE_BLOCKS[m.role]):
                owner = _WHERE[b.type]
                why = (" (a tool's result goes in the user turn that follows the assistant's "
                       "`tool_use`)" if b.type == "tool_result" else "")
                raise InvalidRequestError(
                    f"messages.{i}.content.{j}: `{b.type}` blocks can only be in `{owner}` "
                    f"messages, not `{m.role}` messages{why}.",
                    field=f"messages.{i}.content.{j}")
        if not m.content and not (m.role == "assistant" and i == len(messages) - 1):
            raise InvalidRequestError(
                f"messages.{i}: all messages must have non-empty content except for the "
                "optional final assistant message", field=f"messages.{i}")


def _check_tool_pairs(messages: list[MessageParam]) -> None:
    """Anthropic's rule, in its words: each tool_use of an assistant turn is answered by a
    tool_result at the start of the next turn, and a tool_result answers only a tool_use of the
    turn just before it. Consecutive messages of one role are one turn (Anthropic merges them);
    the errors name the message as it was sent."""
    turns: list[tuple[str, list[tuple[int, int, Any]]]] = []  # (role, [(message, index, block)])
    for i, m in enumerate(messages):
        blocks = [(i, j, b) for j, b in enumerate(m.content)]
        if turns and turns[-1][0] == m.role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((m.role, blocks))
    for k, (role, blocks) in enumerate(turns):
        if role == "assistant":
            if k + 1 == len(turns):
                continue  # the last turn: nothing has answered it yet
            leading = takewhile(lambda x: isinstance(x[2], ToolResultParam), turns[k + 1][1])
            answered = {b.tool_use_id for _, _, b in leading}
            missing = [
                (i, b.id)
                for i, _, b in blocks
                if isinstance(b, ToolUseParam) and b.id not in answered
            ]
            if missing:
                raise InvalidRequestError(
                    f"messages.{missing[0][0]}: `tool_use` ids were found without `tool_result` "
                    f"blocks immediately after: {', '.join(tool_id for _, tool_id in missing)}. Each "
                    "`tool_use` block must have a corresponding `tool_result` block in the next "
                    "message.",
                    field=f"messages.{missing[0][0]}",
                )
            continue
        before = turns[k - 1][1] if k else []
        called = {b.id for _, _, b in before if isinstance(b, ToolUseParam)}
        for i, j, b in blocks:
            if isinstance(b, ToolResultParam) and b.tool_use_id not in called:
                raise InvalidRequestError(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                    f"blocks: {b.tool_use_id}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message.",
                    field=f"messages.{i}.content.{j}",
                )


def _parse_tool_choice(choice: ToolChoiceParam | None, tools: list[ToolSpec]) -> ToolChoice | None:
    if choice is None:
        return None
    if choice.type == "tool" and not choice.name:
        raise InvalidRequestError(
            "tool_choice.name: required when tool_choice.type is 'tool'", field="tool_choice.name"
        )
    if choice.type == "tool" and choice.name not in {t.name for t in tools}:
        raise InvalidRequestError(
            f"tool_choice.name: {choice.name!r} is not one of the tools in `tools`",
            field="tool_choice.name",
        )
    if choice.type == "any" and not tools:
        raise InvalidRequestError(
            "tool_choice: 'any' requires at least one tool in `tools`", field="tool_choice"
        )
    mode = {"any": "required"}.get(choice.type, choice.type)
    return ToolChoice(
        mode, choice.name if mode == "tool" else None, parallel=not choice.disable_parallel_tool_use
    )


# -- models -------------------------------------------------------------------------------------


def encode_model(info) -> dict:
    """One core.models.ModelInfo as an Anthropic model object."""
    created = datetime.fromtimestamp(info.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": "model",
        "id": info.name,
        "display_name": info.name,
        "created_at": created,
        "lifecycle": "active",
        "max_input_tokens": info.context_window - 1,
        "max_tokens": info.context_window - 1,
    }


def encode_model_list(
    infos, limit: int = 20, after_id: str | None = None, before_id: str | None = None
) -> dict:
    """GET /v1/models for Anthropic clients: the chat models (embedders cannot take Messages),
    a page of `limit` after `after_id` or before `before_id`."""
    ids = [i.name for i in infos if i.kind == "chat"]
    models = {i.name: i for i in infos}
    limit = max(1, limit)
    if after_id in ids:
        window = ids[ids.index(after_id) + 1 :]
        page = window[:limit]
    elif before_id in ids:
        window = ids[: ids.index(before_id)]
        page = window[-limit:]
    else:
        window = ids
        page = window[:limit]
    return {
        "data": [encode_model(models[name]) for name in page],
        "has_more": len(window) > len(page),
        "first_id": page[0] if page else None,
        "last_id": page[-1] if page else None,
    }


# -- errors -------------------------------------------------------------------------------------

# Anthropic's error types, by HTTP status (https://docs.anthropic.com: errors).
_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(exc: TenshuError) -> str:
    return _BY_STATUS.get(exc.status, "api_error" if exc.status >= 500 else "invalid_request_error")


def error_body(exc: TenshuError) -> dict:
    return {"type": "error", "error": {"type": error_type(exc), "message": error_message(exc)}}


# ContextLengthError carries its numbers only in its words (backends/embedded.py, engine/).
_PROMPT_TOKENS = re.compile(r"prompt has (?:at least )?(\d+) tokens")
_WINDOW = re.compile(r"context window is (\d+) tokens")


def error_message(exc: TenshuError) -> str:
    """The message, in Anthropic's words where clients parse them: a prompt that does not fit
    reads "prompt is too long: N tokens > M maximum" (Claude Code matches it to compact the
    conversation), M being the most prompt tokens the model takes (its window less one)."""
    message = str(exc)
    if not isinstance(exc, ContextLengthError) or exc.field == "max_tokens":
        return message
    tokens, window = _PROMPT_TOKENS.search(message), _WINDOW.search(message)
    if tokens and window:
        return f"prompt is too long: {tokens[1]} tokens > {int(window[1]) - 1} maximum"
    return f"prompt is too long: {message}"
