"""OpenAI's Responses API (/v1/responses): request -> ChatRequest, ChatEvents -> the response
object and its stream of typed events, and the items a stored response keeps.

What Ollama serves since 0.13.3 and what Codex uses against an Ollama of 0.13.4 or later
(`codex --oss`): `input` as text or items (messages, function calls and their outputs,
reasoning, custom tool calls), `instructions`, function tools, and the event stream Codex reads
(response.created, output_item.added/.done, output_text.delta, function_call_arguments.delta,
reasoning_summary_text.delta, response.completed). Beyond Ollama, the state OpenAI keeps:
`store` (default true) keeps the response with the conversation the model saw, as items
(`conversation_items`), and `previous_response_id` continues one: its input items and output
come before the new input (its instructions do not carry over, as OpenAI documents). The
store itself is the API's (api/responses.py); `conversation` objects are refused.

Codex as a model provider (`tenshu connect codex`) also sends `namespace` tools (its MCP servers'
tools and its sub-agent tools, each group a namespace of function tools) and OpenAI's hosted
`web_search`; see client_tools for what becomes of each. The fields that do not change the answer
(include, prompt_cache_key, client_metadata, service_tier, text.verbosity, reasoning.summary)
are accepted and left unused.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from tenshu.core.errors import InvalidRequestError, TenshuError
from tenshu.core.events import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatEvent,
    MessageFinish,
    MessageStart,
)
from tenshu.core.messages import (
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tenshu.core.request import ChatRequest, ToolChoice
from tenshu.protocols.openai import _image, _Wire

# -- the request ------------------------------------------------------------------------------


class ResponsesRequest(_Wire):
    """POST /v1/responses. Items and tools stay plain objects: parse_request reads them and
    names the one that is wrong."""

    model: str
    input: str | list[dict[str, Any]] = ""
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    stream: bool | None = False
    store: bool | None = None  # None: true, as OpenAI's default
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = None


CLIENT_TOOLS = ("function", "custom")  # the tool types whose calls the client runs itself

# A custom tool (freeform input, Codex's apply_patch for some models) is offered to the model as a
# function of one string, and its call goes back as a custom_tool_call with that string.
_CUSTOM_INPUT = {"type": "object", "properties": {"input": {
    "type": "string", "description": "the tool's whole input, as free text"}},
    "required": ["input"]}


def parse_request(body: ResponsesRequest, history: list[dict] = ()) -> ChatRequest:
    """The request, after `history`: the items of the response it continues (its input items,
    then its output), already read once."""
    if body.conversation is not None:
        raise InvalidRequestError(
            "conversation is not supported: this server keeps no conversation objects; "
            "continue a stored response with previous_response_id, or send the whole "
            "conversation in `input`", field="conversation")
    request = ChatRequest(model=body.model, stream=bool(body.stream))
    request.max_tokens, request.user = body.max_output_tokens, body.user
    request.temperature, request.top_p = body.temperature, body.top_p
    if body.metadata:
        request.metadata = dict(body.metadata)
    if body.instructions:
        request.messages.append(Message.of("system", body.instructions))
    request.messages += parse_input([*history, *as_items(body.input)], known=len(history))
    if not any(m.role != "system" for m in request.messages):
        raise InvalidRequestError("input is empty: give the text or items to answer",
                                  field="input")
    request.tools = [_tool(name, tool) for name, (_, tool) in client_tools(body.tools).items()]
    request.tool_choice = _tool_choice(body, request.tools)
    request.response_format = _text_format(body.text)
    effort = (body.reasoning or {}).get("effort")
    if effort is not None:  # as Ollama maps it onto `think`
        request.thinking = ({"type": "disabled"} if effort in ("none", "minimal") else
                            {"type": "enabled", "effort": effort})
    return request


def as_items(input: str | list[dict]) -> list[dict]:
    """The request's input as items: a string is one user message."""
    if isinstance(input, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": input}]}] if input else []
    return input


def parse_input(items: list[dict], known: int = 0) -> list[Message]:
    """Items -> messages. The first `known` items are a stored response's, so a wrong one is
    named by its place in the request's own `input`."""
    out: list[Message] = []
    thinking: list[ThinkingBlock] = []  # a reasoning item: it belongs to the next assistant turn

    def assistant() -> Message:
        if not (out and out[-1].role == "assistant"):
            out.append(Message("assistant", []))
        out[-1].content[:0] = thinking  # reasoning comes first in its turn
        thinking.clear()
        return out[-1]

    def result(call_id: str, output, field: str) -> None:
        block = ToolResultBlock(call_id, [TextBlock(_output_text(output, field))])
        if out and out[-1].role == "user" and all(
                isinstance(b, ToolResultBlock) for b in out[-1].content):
            out[-1].content.append(block)  # the results of parallel calls share one turn
        else:
            out.append(Message("user", [block]))

    for i, item in enumerate(items):
        field = f"input.{i - known}"
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise InvalidRequestError(
                    f"{field}.role must be user, assistant, system or developer",
                    field=f"{field}.role")
            blocks = _content(item.get("content"), f"{field}.content")
            if role == "assistant":
                assistant().content.extend(blocks)
            else:
                out.append(Message("system" if role == "developer" else role, blocks))
        elif kind in ("function_call", "custom_tool_call"):
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise InvalidRequestError(f"{field}: a {kind} needs call_id and name",
                                          field=field)
            if isinstance(item.get("namespace"), str):  # named as the model was offered it
                name = flat_name(item["namespace"], name)
            args = (_arguments(item.get("arguments"), f"{field}.arguments")
                    if kind == "function_call" else {"input": str(item.get("input") or "")})
            assistant().content.append(ToolUseBlock(call_id, name, args))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            if not isinstance(item.get("call_id"), str):
                raise InvalidRequestError(f"{field}.call_id is required", field=field)
            result(item["call_id"], item.get("output"), f"{field}.output")
        elif kind == "reasoning":
            parts = [*(item.get("content") or []), *(item.get("summary") or [])]
            text = "\n".join(p.get("text", "") for p in parts if isinstance(p, dict))
            if text:
                thinking.append(ThinkingBlock(text))
        else:
            raise InvalidRequestError(
                f"{field}: input items of type {kind!r} are not supported; this server reads "
                "message, function_call, function_call_output, reasoning and custom tool "
                "call items", field=f"{field}.type")
    return out


def _content(content, field: str) -> list:
    if content is None or isinstance(content, str):
        return [TextBlock(content or "")]
    if not isinstance(content, list):
        raise InvalidRequestError(f"{field} must be a string or a list of parts", field=field)
    blocks: list = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "refusal"):
            text = part.get("refusal" if kind == "refusal" else "text")
            if not isinstance(text, str):
                raise InvalidRequestError(f"{field}.{j}: a {kind} part needs its text",
                                          field=f"{field}.{j}")
            blocks.append(TextBlock(text))
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            blocks.append(_image(part["image_url"]))
        else:
            raise InvalidRequestError(
                f"{field}.{j}: parts of type {kind!r} are not supported here; send input_text "
                "(or output_text), or input_image with an image_url", field=f"{field}.{j}")
    return blocks


def _output_text(output, field: str) -> str:
    """A tool's output: a string, or content parts whose text is joined (as Ollama reads it)."""
    if output is None or isinstance(output, str):
        return output or ""
    return "".join(b.text for b in _content(output, field) if isinstance(b, TextBlock))


def _arguments(arguments, field: str) -> dict:
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError as exc:
        raise InvalidRequestError(f"{field} is not valid JSON: {exc}", field=field) from exc
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{field} must be a JSON object", field=field)
    return value


def client_tools(tools: list[dict] | None) -> dict[str, tuple[str | None, dict]]:
    """The tools the client runs, by the name the model is offered each one: its namespace (None
    for a top-level tool) and its definition, in the request's order.

    A `namespace` tool groups function (or custom) tools under one name; Codex sends each MCP
    server's tools, and its sub-agent tools, this way. The model sees each as a plain function
    named `{namespace}__{name}` (as vLLM names them), and its call goes back with `name` and
    `namespace` apart, as OpenAI's do: Codex finds a tool by the two together.

    Every other tool is left out of what the model sees: OpenAI's hosted tools (web_search,
    file_search, code_interpreter, image_generation, mcp, ...), which run on OpenAI's servers and
    this server has none of, and types it does not read (Codex's tool_search). Offering a tool
    lets the model call it and never makes it, so an answer without them is one OpenAI's API may
    give too. Refusing them instead would fail every request Codex makes, since it offers
    web_search on every turn (llama.cpp leaves them out as well; Ollama runs web_search through
    its own cloud service, which a self-hosted server has no counterpart of). Only a request that
    requires one (tool_choice) is refused, in _tool_choice: that answer cannot be given here."""
    offered: dict[str, tuple[str | None, dict]] = {}
    for i, tool in enumerate(tools or []):
        kind = tool.get("type")
        if kind in CLIENT_TOOLS:
            offered[_name(tool, f"tools.{i}")] = (None, tool)
        elif kind == "namespace":
            namespace = _name(tool, f"tools.{i}")
            inner = tool.get("tools")
            if not isinstance(inner, list):
                raise InvalidRequestError(f"tools.{i}.tools must be a list of function tools",
                                          field=f"tools.{i}.tools")
            for j, member in enumerate(inner):
                field = f"tools.{i}.tools.{j}"
                if not isinstance(member, dict) or member.get("type") not in CLIENT_TOOLS:
                    raise InvalidRequestError(f"{field}: a namespace holds function or custom "
                                              "tools", field=f"{field}.type")
                offered[flat_name(namespace, _name(member, field))] = (namespace, member)
    return offered


def flat_name(namespace: str, name: str) -> str:
    """The one name the model knows a namespace's tool by: mcp__tenshu, memory_search ->
    mcp__tenshu__memory_search (a namespace that already ends in _ is not given more)."""
    return f"{namespace.rstrip('_') or namespace}__{name}"


def _name(tool: dict, field: str) -> str:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError(f"{field}.name is required", field=f"{field}.name")
    return name


def _tool(name: str, tool: dict) -> ToolSpec:
    """A function tool, or a custom one (free text, offered as a function of one string)."""
    description = tool.get("description") or ""
    if tool.get("type") == "custom":
        return ToolSpec(name, description, _CUSTOM_INPUT)
    return ToolSpec(name, description,
                    tool.get("parameters") or {"type": "object", "properties": {}})


def _tool_choice(body: ResponsesRequest, tools: list[ToolSpec]) -> ToolChoice | None:
    choice, parallel = body.tool_choice, body.parallel_tool_calls
    if choice is None and parallel is None:
        return None
    if isinstance(choice, dict):
        if choice.get("type", "function") not in CLIENT_TOOLS:
            raise InvalidRequestError(
                f"tool_choice of type {choice.get('type')!r} is not supported here: this server "
                "runs no hosted tools; choose auto, none, required, or a function tool by name",
                field="tool_choice")
        name = choice.get("name")
        if isinstance(choice.get("namespace"), str) and isinstance(name, str):
            name = flat_name(choice["namespace"], name)
        if name not in {t.name for t in tools}:
            raise InvalidRequestError(f"tool_choice names {name!r}, which is not in tools",
                                      field="tool_choice")
        result = ToolChoice("tool", name)
    elif choice in (None, "auto", "none", "required"):
        if choice == "required" and not tools:
            raise InvalidRequestError(
                "tool_choice 'required' needs function tools (hosted tools are not run here)",
                field="tool_choice")
        result = ToolChoice(choice or "auto")
    else:
        raise InvalidRequestError("tool_choice must be auto, none, required or a function",
                                  field="tool_choice")
    result.parallel = parallel is not False
    return result


def _text_format(text: dict | None) -> dict | None:
    fmt = (text or {}).get("format")
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return {"type": "json_schema", "json_schema": {
            "name": fmt.get("name") or "response", "schema": fmt["schema"]}}
    raise InvalidRequestError(
        "text.format must be text, json_object, or json_schema with a schema object",
        field="text.format")


# -- the response and its stream ----------------------------------------------------------------


class ResponseStream:
    """One reply's ChatEvents -> the Responses API's stream events, each {"type", ...,
    "sequence_number"}; `response` is the whole object (status, output items, usage), which
    the last event carries and a `stream: false` request gets alone."""

    def __init__(self, id: str, body: ResponsesRequest, created: int, *, store: bool = False):
        self.id, self.body, self.created, self.store = id, body, created, store
        self.tools = client_tools(body.tools)  # the name the model calls -> (namespace, tool)
        self.model = body.model
        self.output: list[dict] = []  # finished items, in order
        self.open: dict[int, dict] = {}  # block index -> the item it is writing
        self.arguments: dict[int, list[str]] = {}
        self.sequence = 0
        self.status, self.usage, self.incomplete = "in_progress", None, None

    def event(self, kind: str, **data) -> dict:
        out = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return out

    def encode(self, event: ChatEvent) -> list[dict]:
        if isinstance(event, MessageStart):
            self.model = event.model
            return [self.event("response.created", response=self.response()),
                    self.event("response.in_progress", response=self.response())]
        if isinstance(event, BlockStart):
            return self._start(event.index, event.block)
        if isinstance(event, BlockDelta):
            return self._delta(event)
        if isinstance(event, BlockStop):
            return self._stop(event)
        if isinstance(event, MessageFinish) and event.choice == 0:
            self.usage = {
                "input_tokens": event.usage.input_tokens,
                "input_tokens_details": {"cached_tokens": event.usage.cached_tokens},
                "output_tokens": event.usage.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": event.usage.input_tokens + event.usage.output_tokens}
            if event.stop_reason == "max_tokens":  # OpenAI's own ending for a cut reply
                self.status = "incomplete"
                self.incomplete = {"reason": "max_output_tokens"}
                return [self.event("response.incomplete", response=self.response())]
            self.status = "completed"
            return [self.event("response.completed", response=self.response())]
        return []

    def failed(self, exc: TenshuError) -> dict:
        """The event that ends a stream that failed after it started."""
        self.status = "failed"
        return self.event("response.failed", response={
            **self.response(), "error": {"code": exc.kind, "message": str(exc)}})

    def _where(self, index: int) -> dict:
        return {"output_index": len(self.output), "item_id": self.open[index]["id"]}

    def _start(self, index: int, block) -> list[dict]:
        n = len(self.output)
        if isinstance(block, ToolUseBlock):
            namespace, tool = self.tools.get(block.name, (None, {}))
            custom = tool.get("type") == "custom"
            item = {"id": f"{'ctc' if custom else 'fc'}_{self.id}_{n}",
                    "type": "custom_tool_call" if custom else "function_call",
                    "status": "in_progress", "call_id": block.id,
                    "name": tool.get("name", block.name), "input" if custom else "arguments": ""}
            if namespace is not None:
                item["namespace"] = namespace
            self.arguments[index] = []
        elif isinstance(block, ThinkingBlock):
            item = {"id": f"rs_{self.id}_{n}", "type": "reasoning", "summary": []}
        else:
            item = {"id": f"msg_{self.id}_{n}", "type": "message", "status": "in_progress",
                    "role": "assistant", "content": []}
        self.open[index] = item
        events = [self.event("response.output_item.added", output_index=n, item=dict(item))]
        if item["type"] == "message":
            events.append(self.event("response.content_part.added", **self._where(index),
                                     content_index=0, part=_text_part("")))
            item["text"] = ""
        elif item["type"] == "reasoning":
            events.append(self.event("response.reasoning_summary_part.added",
                                     **self._where(index), summary_index=0,
                                     part={"type": "summary_text", "text": ""}))
            item["text"] = ""
        return events

    def _delta(self, event: BlockDelta) -> list[dict]:
        item = self.open.get(event.index)
        if item is None:
            return []
        if item["type"] in ("function_call", "custom_tool_call"):
            if not event.partial_json:
                return []
            self.arguments[event.index].append(event.partial_json)
            if item["type"] == "custom_tool_call":  # its input is known once the call is whole
                return []
            return [self.event("response.function_call_arguments.delta",
                               **self._where(event.index), delta=event.partial_json)]
        if not event.text:
            return []
        item["text"] += event.text
        if item["type"] == "reasoning":
            return [self.event("response.reasoning_summary_text.delta",
                               **self._where(event.index), summary_index=0, delta=event.text)]
        return [self.event("response.output_text.delta", **self._where(event.index),
                           content_index=0, delta=event.text, logprobs=[])]

    def _stop(self, event: BlockStop) -> list[dict]:
        item = self.open.get(event.index)
        if item is None:
            return []
        where = self._where(event.index)
        events = []
        if item["type"] in ("function_call", "custom_tool_call"):
            arguments = "".join(self.arguments.pop(event.index))
            if event.input is not None or not arguments:  # parsed by the backend, or none sent
                arguments = json.dumps(event.input or {})
            item["status"] = "completed"
            if item["type"] == "custom_tool_call":
                try:
                    value = json.loads(arguments)
                except ValueError:
                    value = {}
                text = value.get("input") if isinstance(value, dict) else None
                item["input"] = text if isinstance(text, str) else arguments
            else:
                item["arguments"] = arguments
                events.append(self.event("response.function_call_arguments.done", **where,
                                         arguments=arguments))
        elif item["type"] == "reasoning":
            text = item.pop("text")
            item["summary"] = [{"type": "summary_text", "text": text}]
            events += [self.event("response.reasoning_summary_text.done", **where,
                                  summary_index=0, text=text),
                       self.event("response.reasoning_summary_part.done", **where,
                                  summary_index=0, part=item["summary"][0])]
        else:
            text = item.pop("text")
            item["status"], item["content"] = "completed", [_text_part(text)]
            events += [self.event("response.output_text.done", **where, content_index=0,
                                  text=text, logprobs=[]),
                       self.event("response.content_part.done", **where, content_index=0,
                                  part=_text_part(text))]
        del self.open[event.index]
        self.output.append(item)
        events.append(self.event("response.output_item.done", output_index=where[
            "output_index"], item=item))
        return events

    def response(self) -> dict:
        body = self.body
        text = body.text or {"format": {"type": "text"}}
        return {
            "id": self.id, "object": "response", "created_at": self.created,
            "status": self.status, "error": None, "incomplete_details": self.incomplete,
            "model": self.model, "instructions": body.instructions,
            "output": list(self.output), "usage": self.usage,
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "tool_choice": body.tool_choice or "auto", "tools": body.tools or [],
            "temperature": body.temperature, "top_p": body.top_p,
            "max_output_tokens": body.max_output_tokens, "reasoning": body.reasoning,
            "text": text, "truncation": "disabled",
            "previous_response_id": body.previous_response_id,
            "store": self.store, "metadata": body.metadata or {},
        }


# -- a stored response's items ------------------------------------------------------------------

_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco",
              "custom_tool_call": "ctc", "custom_tool_call_output": "ctco", "reasoning": "rs"}


def conversation_items(history: list[dict], body: ResponsesRequest, id: str) -> list[dict]:
    """What a stored response keeps as its input items: the conversation the model saw, oldest
    first (`history`, then the new input), each item with the id OpenAI lists it by and a
    message's text as content parts."""
    hex_id = id.removeprefix("resp_")
    new = []
    for i, item in enumerate(as_items(body.input)):
        kind = item.get("type") or ("message" if "role" in item else "item")
        item = {"type": kind, **item}
        if kind == "message" and not isinstance(item.get("content"), list):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": item.get("content") or ""}]
        item.setdefault("id", f"{_ID_PREFIX.get(kind, 'item')}_{hex_id}_in{i}")
        new.append(item)
    return [*history, *new]


def _text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
