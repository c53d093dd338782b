"""The OpenAI wire format, client side: ChatRequest -> request body, responses -> ChatEvents.

For an upstream OpenAI-compatible server (vLLM, LM Studio, OpenAI itself, another tenshu):
`encode_chat_request` / `encode_completion_request` write the body, `StreamDecoder` turns its
SSE chunks (chat or legacy text) back into the ChatEvent sequence, `decode_response` does the
same for a whole response, and `error_from_body` maps its errors to core errors.
"""

from __future__ import annotations

import json
from typing import Any

from tenshu.core.errors import ContextLengthError, TenshuError, error_for_status
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

_SAMPLING = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "presence_penalty",
             "frequency_penalty", "repetition_penalty", "seed", "user")
_STATUS_OF_TYPE = {"invalid_request_error": 400, "authentication_error": 401,
                   "permission_error": 403, "not_found_error": 404, "rate_limit_error": 429}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                 "function_call": "tool_use", "content_filter": "end_turn"}


# -- requests ---------------------------------------------------------------------------------


def encode_chat_request(request: ChatRequest) -> dict:
    body: dict[str, Any] = {"model": request.model, "messages": encode_messages(request.messages)}
    body |= _sampling(request)
    if request.logprobs:
        body["logprobs"] = True
        if request.top_logprobs:
            body["top_logprobs"] = request.top_logprobs
    if request.tools:
        body["tools"] = [{"type": "function", "function": {
            "name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in request.tools]
    if (choice := request.tool_choice) is not None:
        body["tool_choice"] = ({"type": "function", "function": {"name": choice.name}}
                               if choice.mode == "tool" else choice.mode)
        if not choice.parallel:
            body["parallel_tool_calls"] = False
    if request.response_format is not None:
        body["response_format"] = request.response_format
    return body


def encode_completion_request(request: ChatRequest) -> dict:
    """A completions body. `echo` is left out: tenshu's own encoder adds the prompt back."""
    body: dict[str, Any] = {"model": request.model, "prompt": request.prompt}
    body |= _sampling(request)
    if request.logprobs:
        body["logprobs"] = request.top_logprobs
    return body


def _sampling(request: ChatRequest) -> dict:
    body = {name: getattr(request, name) for name in _SAMPLING
            if getattr(request, name) is not None}
    if request.stop:
        body["stop"] = list(request.stop)
    if request.n != 1:
        body["n"] = request.n
    if request.ignore_eos:
        body["ignore_eos"] = True
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def encode_messages(messages: list[Message]) -> list[dict]:
    out: list[dict] = []
    for m in messages:
        results = [b for b in m.content if isinstance(b, ToolResultBlock)]
        # tool results go first: they answer the calls of the assistant turn before
        out += [{"role": "tool", "tool_call_id": r.tool_use_id, "content": r.text}
                for r in results]
        calls = [b for b in m.content if isinstance(b, ToolUseBlock)]
        rest = [b for b in m.content if isinstance(b, (TextBlock, ImageBlock))]
        if results and not rest:
            continue
        entry: dict[str, Any] = {"role": m.role, "content": _content(rest)}
        if calls:
            entry["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.name, "arguments": json.dumps(c.input)}} for c in calls]
            entry["content"] = entry["content"] or None
        out.append(entry)
    return out


def _content(blocks: list) -> str | list[dict]:
    if all(isinstance(b, TextBlock) for b in blocks):
        return "".join(b.text for b in blocks)
    parts = []
    for b in blocks:
        if isinstance(b, TextBlock):
            parts.append({"type": "text", "text": b.text})
        else:
            url = b.url or f"data:{b.media_type};base64,{b.data}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


# -- responses --------------------------------------------------------------------------------


def error_from_body(body: Any, status: int | None = None) -> TenshuError:
    """An upstream's error (a response body, or an in-stream `error` chunk, which has no HTTP
    status: its `type` stands in) as a core error."""
    error = body.get("error", body) if isinstance(body, dict) else {}
    error = error if isinstance(error, dict) else {"message": str(error)}
    message = str(error.get("message") or "the upstream server reported an error")
    param = error.get("param")
    status = status or _STATUS_OF_TYPE.get(error.get("type"), 500)
    if error.get("code") == "context_length_exceeded":
        return ContextLengthError(message, field=param)
    return error_for_status(status, message, field=param)


class StreamDecoder:
    """OpenAI chunks -> ChatEvents. Call `feed` per chunk, then `end` once the stream is done.

    The finishes wait for the usage chunk (it comes after the last finish_reason), or for `end`.
    """

    def __init__(self):
        self.started = False
        self.open: dict[int, tuple[str, int]] = {}  # choice -> (kind, block index)
        self.blocks: dict[int, int] = {}  # choice -> blocks opened so far
        self.calls: dict[tuple[int, int], int] = {}  # (choice, tool call index) -> block index
        self.finished: dict[int, tuple[str, str | None]] = {}  # choice -> (reason, stop string)
        self.usage: dict | None = None
        self.choices: set[int] = set()  # every choice a chunk has named
        self.done = False

    def feed(self, chunk: dict) -> list[ChatEvent]:
        if chunk.get("error"):
            raise error_from_body(chunk)
        events: list[ChatEvent] = []
        if not self.started:
            self.started = True
            events.append(MessageStart(str(chunk.get("id", "")), str(chunk.get("model", "")),
                                       Usage(), int(chunk.get("created") or 0)))
        for c in chunk.get("choices") or []:
            i = int(c.get("index", 0))
            self.choices.add(i)
            delta = c.get("delta") or c.get("message") or {}
            if "text" in c:  # a legacy completion
                delta = {"content": c["text"]}
            events += self._content(i, delta, c.get("logprobs"))
            if c.get("finish_reason"):
                events += self._close(i)
                stop = c.get("stop_reason")
                self.finished[i] = (c["finish_reason"], stop if isinstance(stop, str) else None)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
            # Usage normally comes alone, after the last finish; with continuous usage stats
            # (vLLM) a running count rides on every chunk, and only the last one may end it.
            if not chunk.get("choices") or self.choices <= set(self.finished):
                events += self.end()
        return events

    def end(self) -> list[ChatEvent]:
        if self.done or not self.started:
            return []
        self.done = True
        events: list[ChatEvent] = []
        for i in sorted(set(self.open) | set(self.blocks) | set(self.finished)):
            events += self._close(i)
            reason, stop = self.finished.get(i, ("stop", None))
            kind = "stop_sequence" if stop else _STOP_REASONS.get(reason, "end_turn")
            events.append(MessageFinish(kind, self._usage(i), stop_sequence=stop, choice=i))
        return events

    def _usage(self, choice: int) -> Usage:
        u = self.usage or {}
        cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        # OpenAI reports one total for all choices: the first carries it, so sums stay right
        out = u.get("completion_tokens", 0) if choice == min(self.finished or {0: 0}) else 0
        return Usage(u.get("prompt_tokens", 0), out, cached)

    def _content(self, i: int, delta: dict, logprobs: dict | None) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            events += self._open(i, "thinking", ThinkingBlock(""))
            events.append(BlockDelta(self.open[i][1], text=reasoning, choice=i))
        tokens = _logprobs(logprobs)
        if delta.get("content") or tokens:
            events += self._open(i, "text", TextBlock(""))
            events.append(BlockDelta(self.open[i][1], text=delta.get("content") or "",
                                     logprobs=tokens, choice=i))
        for position, call in enumerate(delta.get("tool_calls") or []):
            key = (i, int(call.get("index", position)))  # whole messages carry no index
            function = call.get("function") or {}
            if key not in self.calls:
                block = ToolUseBlock(call.get("id") or "", function.get("name") or "")
                events += self._open(i, f"tool{key[1]}", block)
                self.calls[key] = self.open[i][1]
            if function.get("arguments"):
                arguments = function["arguments"]
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments)
                events.append(BlockDelta(self.calls[key], partial_json=arguments, choice=i))
        return events

    def _open(self, i: int, kind: str, block) -> list[ChatEvent]:
        if i in self.open and self.open[i][0] == kind:
            return []
        events = self._close(i)
        index = self.blocks.get(i, 0)
        self.blocks[i] = index + 1
        self.open[i] = (kind, index)
        return [*events, BlockStart(index, block, choice=i)]

    def _close(self, i: int) -> list[ChatEvent]:
        if i not in self.open:
            return []
        return [BlockStop(self.open.pop(i)[1], choice=i)]


def decode_response(body: dict) -> list[ChatEvent]:
    """A whole (non-streaming) chat or text completion as the ChatEvent sequence."""
    decoder = StreamDecoder()
    return decoder.feed(body) + decoder.end()


def _logprobs(value: dict | None) -> list[TokenLogprob] | None:
    if not value:
        return None
    if "content" in value:
        return [TokenLogprob(t["token"], t["logprob"], t.get("bytes"), [
            TokenLogprob(e["token"], e["logprob"], e.get("bytes"))
            for e in t.get("top_logprobs") or []]) for t in value["content"] or []] or None
    tops = value.get("top_logprobs") or [{}] * len(value.get("tokens", []))
    return [TokenLogprob(t, lp, list(t.encode()),
                         [TokenLogprob(k, v, list(k.encode())) for k, v in (top or {}).items()])
            for t, lp, top in zip(value["tokens"], value["token_logprobs"], tops, strict=False)]
