"""OpenAI's Responses API, client side: ChatRequest -> a /responses body, its events -> ChatEvents.

For an upstream that serves POST {base}/responses (OpenAI, vLLM, Ollama >= 0.13.3, LM Studio,
another tenshu): `encode_request` writes the body, `StreamDecoder` turns the typed SSE events
back into the ChatEvent sequence, and `decode_response` does the same for a whole response
object (from a server that ignored `stream`). Error bodies are OpenAI's (openai_client's
error_from_body). The server side of the same API is protocols/openai_responses.py; this module
is its mirror.

What goes over:
  the first message, when it is a system prompt -> `instructions`; any later system message ->
    a system message item, in its place
  user and assistant text (input_text / output_text parts) and user images (input_image)
    -> message items; tool calls -> function_call items (call_id, name, arguments as JSON
    text); tool results -> function_call_output items, by call_id
  tools -> function tools with `strict: false`: ToolSpec carries no strictness, and the
    Responses API (unlike Chat Completions) would otherwise make every tool strict, which
    refuses most schemas written for Chat Completions
  tool_choice and parallel_tool_calls; response_format -> text.format; max_tokens ->
    max_output_tokens; temperature, top_p, user; logprobs -> top_logprobs with `include`
    message.output_text.logprobs; a thinking effort -> reasoning {effort, summary: auto}
  always `store: false`: tenshu keeps its own records, and nothing is kept upstream

What does not:
  thinking blocks in the history are left out: the API takes back only the reasoning items it
    made itself (by id, or encrypted), which no other backend's thinking is
  sampling settings the API lacks (top_k, min_p, the penalties, seed, ignore_eos) are not sent:
    the upstream's defaults apply, as for a request that leaves them unset
  refused, with an InvalidRequestError naming the field: a completion prompt (the API has
    chat only), n > 1 (one output per response), and stop sequences. The API has no `stop`,
    and a stop changes what the client receives, so it is not dropped like a sampling setting;
    nor is it applied here, since cutting the stream tenshu-side ends the reply before the
    upstream's usage arrives (the token count would be lost) or else waits for the upstream
    to generate to its own end (the client would wait for text it never gets).
"""

from __future__ import annotations

import json
from typing import Any

from tenshu.core.errors import InvalidRequestError, TenshuError
from tenshu.core.events import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatEvent,
    MessageFinish,
    MessageStart,
    TokenLogprob,
    Usage,
)
from tenshu.core.messages import (
    ImageBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from tenshu.core.request import ChatRequest
from tenshu.protocols.openai_client import _logprobs, error_from_body

# The Responses API's error codes that say more than its default (500): rate limits and a
# prompt the model refuses. Others (server_error, ...) stay upstream failures.
_CODE_STATUS = {"rate_limit_exceeded": 429, "invalid_prompt": 400}


# -- requests ---------------------------------------------------------------------------------


def encode_request(request: ChatRequest) -> dict:
    """The /responses body for `request`; InvalidRequestError for what the API cannot carry."""
    _refuse(request)
    messages = request.messages
    body: dict[str, Any] = {"model": request.model}
    if messages and messages[0].role == "system" and all(
            isinstance(b, TextBlock) for b in messages[0].content):
        body["instructions"] = messages[0].text
        messages = messages[1:]
    body["input"] = encode_items(messages)
    for wire, value in (("max_output_tokens", request.max_tokens),
                        ("temperature", request.temperature), ("top_p", request.top_p),
                        ("user", request.user)):
        if value is not None:
            body[wire] = value
    if request.logprobs:
        body["include"] = ["message.output_text.logprobs"]
        body["top_logprobs"] = request.top_logprobs
    if request.tools:
        body["tools"] = [{"type": "function", "name": t.name, "description": t.description,
                          "parameters": t.parameters, "strict": False} for t in request.tools]
        if (choice := request.tool_choice) is not None:
            body["tool_choice"] = ({"type": "function", "name": choice.name}
                                   if choice.mode == "tool" else choice.mode)
            if not choice.parallel:
                body["parallel_tool_calls"] = False
    if request.response_format is not None:
        body["text"] = {"format": _text_format(request.response_format)}
    thinking = request.thinking or {}
    if thinking.get("effort") and thinking.get("type") != "disabled":
        body["reasoning"] = {"effort": thinking["effort"], "summary": "auto"}
    body["stream"] = request.stream
    body["store"] = False
    return body


def _refuse(request: ChatRequest) -> None:
    if request.is_completion:
        raise InvalidRequestError(
            "this model is served over OpenAI's Responses API, which has no completions: send "
            "messages instead of a prompt", field="prompt")
    if request.n != 1:
        raise InvalidRequestError(
            "this model is served over OpenAI's Responses API, which gives one output per "
            f"request: ask for n = 1 (not {request.n}), or send {request.n} requests", field="n")
    if request.stop:
        raise InvalidRequestError(
            "this model is served over OpenAI's Responses API, which has no stop sequences: "
            "leave out stop (or serve the model with backend \"openai\", Chat Completions, "
            "which has them)", field="stop")


def encode_items(messages: list[Message]) -> list[dict]:
    """Messages -> input items, in order; each message's blocks keep theirs."""
    items: list[dict] = []
    for m in messages:
        # tool results go first: they answer the calls of the assistant turn before
        items += [{"type": "function_call_output", "call_id": b.tool_use_id,
                   "output": _output(b)} for b in m.content if isinstance(b, ToolResultBlock)]
        parts: list[dict] = []
        for block in m.content:
            if isinstance(block, ToolUseBlock):
                items += _message(m.role, parts)
                parts = []
                arguments = (block.unparsed if block.unparsed is not None
                             else json.dumps(block.input))
                items.append({"type": "function_call", "call_id": block.id,
                              "name": block.name, "arguments": arguments})
            elif isinstance(block, TextBlock):
                kind = "output_text" if m.role == "assistant" else "input_text"
                parts.append({"type": kind, "text": block.text})
            elif isinstance(block, ImageBlock) and m.role != "assistant":
                parts.append(_image(block))
        items += _message(m.role, parts)
    return items


def _message(role: str, parts: list[dict]) -> list[dict]:
    return [{"type": "message", "role": role, "content": parts}] if parts else []


def _image(block: ImageBlock) -> dict:
    url = block.url or f"data:{block.media_type};base64,{block.data}"
    return {"type": "input_image", "image_url": url, "detail": "auto"}


def _output(result: ToolResultBlock) -> str | list[dict]:
    """A tool's output: its text, or content parts when it returned images."""
    if all(isinstance(b, TextBlock) for b in result.content):
        return result.text
    return [{"type": "input_text", "text": b.text} if isinstance(b, TextBlock) else _image(b)
            for b in result.content]


def _text_format(fmt: dict) -> dict:
    """ChatRequest.response_format (Chat Completions' shape) -> the Responses API's text.format,
    where the json_schema's fields sit on the format itself."""
    if fmt.get("type") != "json_schema":
        return {"type": fmt.get("type", "json_object")}
    spec = fmt.get("json_schema") or {}
    out = {"type": "json_schema", "name": spec.get("name") or "response",
           "schema": spec.get("schema") or {"type": "object"}}
    out |= {key: spec[key] for key in ("description", "strict") if spec.get(key) is not None}
    return out


# -- responses --------------------------------------------------------------------------------


def error_from_event(data: dict) -> TenshuError:
    """An `error` event ({code, message, param}, or those under `error`), or a failed
    response's `error` ({code, message}), as a core error."""
    error = data.get("error") if isinstance(data.get("error"), dict) else data
    code = error.get("code") or error.get("type")
    return error_from_body({"error": {"message": error.get("message"), "type": code,
                                      "code": code, "param": error.get("param")}},
                           _CODE_STATUS.get(code))


class StreamDecoder:
    """Responses API events -> ChatEvents: call `feed` with each event's data, in order.

    A message item becomes a text block, a function_call a tool-use block, a reasoning item a
    thinking block (its summary or its reasoning text), each opened at its first delta and
    closed when its item is done. An item whose content arrives only whole (in
    output_item.done, or in the final response's output) is sent whole. The finish comes with
    response.completed or .incomplete; .failed and `error` events raise their core error.
    """

    def __init__(self):
        self.started = False
        self.blocks = 0  # blocks opened so far
        self.open: tuple[int, str, int] | None = None  # (output index, kind, block index)
        self.streamed: set[int] = set()  # items whose content came as deltas
        self.done: set[int] = set()  # items finished
        self.called = False  # a function call was made: the turn ends for its result

    def feed(self, data: dict) -> list[ChatEvent]:
        kind = data.get("type")
        if kind == "error":
            raise error_from_event(data)
        events: list[ChatEvent] = []
        if not self.started:
            self.started = True
            events.append(_start(data.get("response") or {}))
        at = data.get("output_index", 0)
        if kind == "response.output_item.added":
            item = data.get("item") or {}
            if item.get("type") == "function_call":
                self.called = True
                events += self._open(at, "tool", _call(item))
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            events += self._delta(at, "text", data.get("delta") or "",
                                  _token_logprobs(data.get("logprobs")))
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            events += self._delta(at, "thinking", data.get("delta") or "")
        elif kind == "response.reasoning_summary_part.added":
            if data.get("summary_index") and at in self.streamed:  # a new paragraph
                events += self._delta(at, "thinking", "\n\n")
        elif kind == "response.function_call_arguments.delta":
            events += self._arguments(at, data.get("delta") or "")
        elif kind == "response.function_call_arguments.done":
            if at not in self.streamed:
                events += self._arguments(at, _json_text(data.get("arguments")))
        elif kind == "response.output_item.done":
            events += self._item(at, data.get("item") or {})
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            events += self.finish(data.get("response") or {}, kind.removeprefix("response."))
        return events

    def finish(self, response: dict, status: str = "completed") -> list[ChatEvent]:
        """The end of the reply: the finish with its stop reason and usage, after the output
        items themselves when no event carried them (a whole response, or a server that
        streams only its lifecycle). Items that came as events are not read again: a server
        may number them otherwise than the output list does."""
        status = response.get("status") or status
        if status == "failed" or response.get("error"):
            raise error_from_event(response)
        events: list[ChatEvent] = []
        if not self.blocks and not self.done:
            for i, item in enumerate(response.get("output") or []):
                events += self._item(i, item)
        events += self._close()
        if (status == "incomplete" and (response.get("incomplete_details") or {}).get(
                "reason") == "max_output_tokens"):
            reason = "max_tokens"
        else:
            reason = "tool_use" if self.called else "end_turn"
        return [*events, MessageFinish(reason, _usage(response.get("usage") or {}))]

    def _item(self, at: int, item: dict) -> list[ChatEvent]:
        """An item is done: what of it has not come as deltas comes now, and its block closes."""
        if at in self.done:
            return []
        self.done.add(at)
        kind = item.get("type")
        events: list[ChatEvent] = []
        if kind == "function_call":
            self.called = True
            events += self._open(at, "tool", _call(item))
            if at not in self.streamed:
                events += self._arguments(at, _json_text(item.get("arguments")))
        elif kind in ("message", "reasoning") and at not in self.streamed:
            events += self._delta(at, "text" if kind == "message" else "thinking",
                                  _item_text(item))
        if self.open is not None and self.open[0] == at:
            events += self._close()
        return events

    def _delta(self, at: int, kind: str, text: str,
               logprobs: list[TokenLogprob] | None = None) -> list[ChatEvent]:
        if not text and not logprobs:
            return []
        events = self._open(at, kind, TextBlock("") if kind == "text" else ThinkingBlock(""))
        self.streamed.add(at)
        return [*events, BlockDelta(self.open[2], text=text, logprobs=logprobs)]

    def _arguments(self, at: int, text: str) -> list[ChatEvent]:
        if not text or self.open is None or self.open[:2] != (at, "tool"):
            return []
        self.streamed.add(at)
        return [BlockDelta(self.open[2], partial_json=text)]

    def _open(self, at: int, kind: str, block) -> list[ChatEvent]:
        if self.open is not None and self.open[:2] == (at, kind):
            return []
        events = self._close()  # one block open at a time: items do not interleave
        self.open = (at, kind, self.blocks)
        self.blocks += 1
        return [*events, BlockStart(self.open[2], block)]

    def _close(self) -> list[ChatEvent]:
        if self.open is None:
            return []
        index, self.open = self.open[2], None
        return [BlockStop(index)]


def decode_response(body: dict) -> list[ChatEvent]:
    """A whole (non-streamed) response object as the ChatEvent sequence."""
    decoder = StreamDecoder()
    return decoder.feed({"type": "response.created", "response": body}) + decoder.finish(body)


def _start(response: dict) -> MessageStart:
    return MessageStart(str(response.get("id") or ""), str(response.get("model") or ""),
                        Usage(), int(response.get("created_at") or 0))


def _call(item: dict) -> ToolUseBlock:
    return ToolUseBlock(str(item.get("call_id") or ""), str(item.get("name") or ""))


def _usage(usage: dict) -> Usage:
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
    return Usage(usage.get("input_tokens") or 0, usage.get("output_tokens") or 0, cached)


def _json_text(arguments) -> str:
    """A call's arguments as JSON text (some servers send the object itself)."""
    if arguments is None or isinstance(arguments, str):
        return arguments or ""
    return json.dumps(arguments)


def _item_text(item: dict) -> str:
    """A whole message's text (its output_text and refusal parts), or a whole reasoning item's:
    its reasoning text where the server gives it (vLLM, Ollama), else its summary."""
    if item.get("type") == "message":
        return "".join(p.get("text") or p.get("refusal") or ""
                       for p in item.get("content") or [] if isinstance(p, dict))
    parts = item.get("content") or item.get("summary") or []
    return "\n\n".join(p.get("text") or "" for p in parts if isinstance(p, dict))


def _token_logprobs(logprobs: list | None) -> list[TokenLogprob] | None:
    """An output_text.delta's logprobs: Chat Completions' per-token shape, under another key."""
    return _logprobs({"content": logprobs}) if logprobs else None
