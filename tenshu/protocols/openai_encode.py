"""The OpenAI wire format, server side out: ChatEvents -> responses and SSE chunks.

`encode_*` build whole responses from a finished request's events; `ChatStream` and
`CompletionStream` turn events into chunks as they arrive (api/openai.py frames them as SSE).
The response models document these shapes in /openapi.json.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any, Literal

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
from tenshu.core.messages import ThinkingBlock, ToolUseBlock
from tenshu.core.models import ModelInfo
from tenshu.protocols.openai import _Wire

# ---------------------------------------------------------------------------------------------
# Responses on the wire (documentation for /openapi.json; the encoders build plain dicts)
# ---------------------------------------------------------------------------------------------


class ModelCard(_Wire):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    max_model_len: int | None = None  # vLLM's addition: the context window
    parent: str | None = None  # vLLM's: the model a LoRA adapter adapts
    # What the model is for, beyond OpenAI's object (see encode_model): LM Studio's `type`
    # and the gateways' `supported_endpoints`
    type: Literal["llm", "embeddings"] | None = None
    supported_endpoints: list[str] | None = None


class ModelList(_Wire):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class CachedTokens(_Wire):
    cached_tokens: int = 0


class UsageOut(_Wire):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int
    prompt_tokens_details: CachedTokens | None = None


class FunctionOut(_Wire):
    name: str
    arguments: str  # JSON


class ToolCallOut(_Wire):
    id: str
    type: Literal["function"] = "function"
    function: FunctionOut


class AssistantMessage(_Wire):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = None
    reasoning_content: str | None = None


class TopLogprob(_Wire):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobOut(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(_Wire):
    content: list[TokenLogprobOut] | None


FinishReason = Literal["stop", "length", "tool_calls"]


class ChatChoice(_Wire):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None
    stop_reason: str | None = None  # vLLM's addition: the stop string that matched


class ChatCompletion(_Wire):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageOut
    system_fingerprint: str | None = None


class LegacyLogprobs(_Wire):
    tokens: list[str]
    token_logprobs: list[float | None]  # None: an echoed prompt's first token
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class PromptLogprob(_Wire):
    logprob: float
    rank: int | None = None
    decoded_token: str


class TextChoice(_Wire):
    index: int
    text: str
    logprobs: LegacyLogprobs | None = None
    finish_reason: FinishReason | None
    stop_reason: str | None = None
    # vLLM's addition, with `prompt_logprobs`: per prompt token (None for the first), the
    # token's and the likeliest ones' logprobs, keyed by token id
    prompt_logprobs: list[dict[str, PromptLogprob] | None] | None = None


class Completion(_Wire):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: UsageOut
    system_fingerprint: str | None = None


class EmbeddingItem(_Wire):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class EmbeddingList(_Wire):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: UsageOut


class ErrorDetail(_Wire):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Wire):
    error: ErrorDetail


FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                  "tool_use": "tool_calls"}


# ---------------------------------------------------------------------------------------------
# Encoding: ChatEvents -> wire responses
# ---------------------------------------------------------------------------------------------


# OpenAI's model object says nothing of what a model does, so clients that list /v1/models for
# a chat picker (Open WebUI) offer the embedder as a chat model. Two extra fields say it, in the
# words clients already read: LM Studio's `type` ("llm" or "embeddings", its /api/v0/models),
# and `supported_endpoints`, the list LiteLLM's model_info and OpenAI-compatible gateways give
# (and the field Open WebUI's filter of non-chat models reads). The OpenAI fields are unchanged.
CHAT_ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/responses"]
EMBEDDING_ENDPOINTS = ["/v1/embeddings"]


def encode_model(info: ModelInfo) -> dict:
    embedder = info.kind == "embedding"
    return {"id": info.name, "object": "model", "created": info.created,
            "owned_by": info.owned_by, "max_model_len": info.context_window,
            "parent": info.parent or None, "type": "embeddings" if embedder else "llm",
            "supported_endpoints": EMBEDDING_ENDPOINTS if embedder else CHAT_ENDPOINTS}


def encode_model_list(infos: list[ModelInfo]) -> dict:
    return {"object": "list", "data": [encode_model(i) for i in infos]}


def encode_embeddings(model: str, vectors: list[list[float]], tokens: int,
                      encoding_format: str = "float") -> dict:
    def encode(v: list[float]):
        if encoding_format == "base64":  # little-endian float32, as OpenAI sends it
            return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
        return v

    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def usage_dict(start: Usage, finishes: list[MessageFinish]) -> dict:
    """OpenAI's usage: the prompt once, the completion tokens of every choice summed."""
    # The finishes' prompt counts win: an upstream stream reports usage only at its end.
    prompt = finishes[0].usage if finishes else start
    completion = sum(f.usage.output_tokens for f in finishes)
    return {"prompt_tokens": prompt.input_tokens, "completion_tokens": completion,
            "total_tokens": prompt.input_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": prompt.cached_tokens}}


def stop_fields(finish: MessageFinish | None) -> dict:
    """finish_reason, and vLLM's `stop_reason`: the stop string that matched, if one did."""
    if finish is None:
        return {"finish_reason": None}
    return {"finish_reason": FINISH_REASONS[finish.stop_reason],
            "stop_reason": finish.stop_sequence}


def _finite(logprob: float) -> float:
    # JSON has no -Infinity; a token the model rules out reads as -9999, as vLLM writes it
    return max(logprob, -9999.0)


def token_logprob(t: TokenLogprob) -> dict:
    return {"token": t.token, "logprob": _finite(t.logprob), "bytes": t.bytes,
            "top_logprobs": [{"token": e.token, "logprob": _finite(e.logprob), "bytes": e.bytes}
                             for e in t.top]}


class _Choice:
    """One choice's content, gathered from its events (the non-streaming responses)."""

    def __init__(self):
        self.kinds: dict[int, Any] = {}  # block index -> its BlockStart block
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, list] = {}  # block index -> [ToolUseBlock, argument parts]
        self.logprobs: list[TokenLogprob] = []
        self.finish: MessageFinish | None = None

    def add(self, event: ChatEvent) -> None:
        if isinstance(event, BlockStart):
            self.kinds[event.index] = event.block
            if isinstance(event.block, ToolUseBlock):
                self.calls[event.index] = [event.block, []]
        elif isinstance(event, BlockDelta):
            block = self.kinds.get(event.index)
            if isinstance(block, ToolUseBlock):
                self.calls[event.index][1].append(event.partial_json)
            elif isinstance(block, ThinkingBlock):
                self.reasoning.append(event.text)
            else:
                self.text.append(event.text)
            self.logprobs.extend(event.logprobs or [])
        elif isinstance(event, MessageFinish):
            self.finish = event

    def tool_calls(self) -> list[dict]:
        return [{"id": b.id, "type": "function", "function": {
            "name": b.name, "arguments": "".join(parts) or json.dumps(b.input)}}
            for b, parts in self.calls.values()]


def _gather(events: list[ChatEvent]) -> tuple[MessageStart, dict[int, _Choice]]:
    start = next((e for e in events if isinstance(e, MessageStart)), None)
    if start is None:
        raise TenshuError("the backend sent no reply")
    choices: dict[int, _Choice] = {}
    for e in events:
        if not isinstance(e, MessageStart):
            choices.setdefault(e.choice, _Choice()).add(e)
    return start, dict(sorted(choices.items()))


def _finishes(choices: dict[int, _Choice]) -> list[MessageFinish]:
    return [c.finish for c in choices.values() if c.finish]


def encode_chat_completion(events: list[ChatEvent], id: str, n: int = 1) -> dict:
    start, choices = _gather(events)
    out = []
    for index in range(max(n, len(choices))):
        c = choices.get(index, _Choice())
        message: dict = {"role": "assistant", "content": "".join(c.text)}
        if c.calls:
            message["tool_calls"] = c.tool_calls()
            message["content"] = message["content"] or None
        if c.reasoning:
            message["reasoning_content"] = "".join(c.reasoning)
        logprobs = {"content": [token_logprob(t) for t in c.logprobs]} if c.logprobs else None
        out.append({"index": index, "message": message, "logprobs": logprobs,
                    **stop_fields(c.finish)})
    body = {"id": id, "object": "chat.completion", "created": start.created,
            "model": start.model, "choices": out, "system_fingerprint": None,
            "usage": usage_dict(start.usage, _finishes(choices))}
    if start.sources:
        body["sources"] = start.sources  # tenshu's extension: what memory gave the model
    return body


def legacy_logprobs(tokens: list[TokenLogprob], offset: int) -> dict:
    """Completions' logprobs: parallel lists; `text_offset` counts from `offset`. A prompt's
    first token has no logprob: null, as OpenAI and vLLM write it."""
    out: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for t in tokens:
        out["tokens"].append(t.token)
        if t.logprob is None:
            out["token_logprobs"].append(None)
            out["top_logprobs"].append(None)
        else:
            out["token_logprobs"].append(_finite(t.logprob))
            out["top_logprobs"].append({t.token: _finite(t.logprob)}
                                       | {e.token: _finite(e.logprob) for e in t.top})
        out["text_offset"].append(offset)
        offset += len(t.token)
    return out


def prompt_logprobs(tokens: list[TokenLogprob]) -> list[dict | None]:
    """vLLM's prompt_logprobs: per prompt token, {token id: {logprob, rank, decoded_token}}."""
    return [None if t.logprob is None else {
        str(e.id): {"logprob": _finite(e.logprob), "rank": e.rank, "decoded_token": e.token}
        for e in (t, *t.top)} for t in tokens]


class Echo:
    """What a completion's choices carry of the prompt: with `echo`, its text first (the
    backend's decoding of it, or `text`, the prompt the client sent), and with `logprobs` too
    its tokens' legacy logprobs; with `scores`, vLLM's prompt_logprobs field."""

    def __init__(self, echo: bool | str = False, logprobs: bool = False, scores: bool = False):
        self.echo, self.logprobs, self.scores = bool(echo), logprobs, scores
        self.fallback = echo if isinstance(echo, str) else None

    def text(self, start: MessageStart) -> str:
        if not self.echo:
            return ""
        text = start.prompt_text if start.prompt_text is not None else self.fallback
        if text is None:
            raise InvalidRequestError(f"{start.model} cannot echo a prompt of token ids",
                                      field="echo")
        return text

    def tokens(self, start: MessageStart) -> list[TokenLogprob]:
        """The prompt's tokens as they go first in the logprobs (none without echo)."""
        if not (self.echo and self.logprobs):
            return []
        return self._scored(start)

    def fields(self, start: MessageStart) -> dict:
        return {"prompt_logprobs": prompt_logprobs(self._scored(start))} if self.scores else {}

    @staticmethod
    def _scored(start: MessageStart) -> list[TokenLogprob]:
        if start.prompt_tokens is None:
            raise InvalidRequestError(
                f"{start.model} does not score prompts: echo with logprobs and prompt_logprobs "
                "need a model tenshu runs itself", field="logprobs")
        return start.prompt_tokens


def encode_completion(events: list[ChatEvent], id: str, n: int = 1, echo: Echo | None = None,
                      logprobs: bool = False) -> dict:
    start, choices = _gather(events)
    echo = echo or Echo()
    text, prompt = echo.text(start), echo.tokens(start)
    out = []
    for index in range(max(n, len(choices))):
        c = choices.get(index, _Choice())
        lp = legacy_logprobs(prompt + c.logprobs, 0) if logprobs else None
        out.append({"index": index, "text": text + "".join(c.text), "logprobs": lp,
                    **stop_fields(c.finish), **echo.fields(start)})
    return {"id": id, "object": "text_completion", "created": start.created,
            "model": start.model, "choices": out, "system_fingerprint": None,
            "usage": usage_dict(start.usage, _finishes(choices))}


class ChatStream:
    """ChatEvents -> chat.completion.chunk dicts, in the order vLLM sends them."""

    object = "chat.completion.chunk"

    def __init__(self, id: str, n: int = 1, include_usage: bool = False):
        self.id, self.n, self.include_usage = id, n, include_usage
        self.start: MessageStart | None = None
        self.blocks: dict[tuple[int, int], Any] = {}  # (choice, block index) -> block
        self.calls: dict[tuple[int, int], int] = {}  # (choice, block index) -> tool call index
        self.argued: set[tuple[int, int]] = set()  # the calls that sent some arguments
        self.finishes: list[MessageFinish] = []

    def chunk(self, choices: list[dict], **extra) -> dict:
        return {"id": self.id, "object": self.object, "created": self.start.created,
                "model": self.start.model, "system_fingerprint": None, "choices": choices,
                **extra}

    def choice(self, index: int, delta: dict, logprobs=None,
               finish: MessageFinish | None = None) -> dict:
        return {"index": index, "delta": delta, "logprobs": logprobs, **stop_fields(finish)}

    def opening(self, index: int) -> dict:
        return self.choice(index, {"role": "assistant", "content": ""})

    def encode(self, event: ChatEvent) -> list[dict]:
        if isinstance(event, MessageStart):
            self.start = event
            extra = {"sources": event.sources} if event.sources else {}
            return [self.chunk([self.opening(i)], **extra) for i in range(self.n)]
        key = (event.choice, getattr(event, "index", 0))
        if isinstance(event, BlockStart):
            self.blocks[key] = event.block
            if not isinstance(event.block, ToolUseBlock):
                return []
            index = self.calls[key] = sum(1 for k in self.calls if k[0] == event.choice)
            call = {"index": index, "id": event.block.id, "type": "function",
                    "function": {"name": event.block.name, "arguments": ""}}
            return [self.chunk([self.choice(event.choice, {"tool_calls": [call]})])]
        if isinstance(event, BlockDelta):
            return self.delta(event, self.blocks.get(key))
        if isinstance(event, BlockStop) and key in self.calls and key not in self.argued:
            # a call that streamed no arguments still ends with a JSON object, as it would
            # in the whole response
            arguments = json.dumps(self.blocks[key].input)
            call = {"index": self.calls[key], "function": {"arguments": arguments}}
            return [self.chunk([self.choice(event.choice, {"tool_calls": [call]})])]
        if isinstance(event, MessageFinish):
            self.finishes.append(event)
            return [self.chunk([self.choice(event.choice, {}, finish=event)])]
        return []

    def delta(self, event: BlockDelta, block) -> list[dict]:
        if isinstance(block, ToolUseBlock):
            if not event.partial_json:
                return []
            self.argued.add((event.choice, event.index))
            call = {"index": self.calls[(event.choice, event.index)],
                    "function": {"arguments": event.partial_json}}
            return [self.chunk([self.choice(event.choice, {"tool_calls": [call]})])]
        if not event.text and not event.logprobs:
            return []
        field = "reasoning_content" if isinstance(block, ThinkingBlock) else "content"
        logprobs = ({"content": [token_logprob(t) for t in event.logprobs]}
                    if event.logprobs else None)
        return [self.chunk([self.choice(event.choice, {field: event.text}, logprobs)])]

    def end(self) -> list[dict]:
        """The usage chunk (choices empty), when the client asked for it."""
        if not self.include_usage or self.start is None:
            return []
        return [self.chunk([], usage=usage_dict(self.start.usage, self.finishes))]


class CompletionStream(ChatStream):
    """ChatEvents -> legacy text_completion chunks; `echo` is sent first in each choice."""

    object = "text_completion"

    def __init__(self, id: str, n: int = 1, include_usage: bool = False,
                 echo: Echo | None = None, logprobs: bool = False):
        super().__init__(id, n, include_usage)
        self.echo, self.logprobs = echo or Echo(), logprobs
        self.offsets = [0] * n

    def choice(self, index: int, delta: dict, logprobs=None,
               finish: MessageFinish | None = None) -> dict:
        return {"index": index, "text": delta.get("content", ""), "logprobs": logprobs,
                **stop_fields(finish)}

    def opening(self, index: int) -> dict:
        """The echoed prompt, with its logprobs and vLLM's prompt_logprobs where asked."""
        text, tokens = self.echo.text(self.start), self.echo.tokens(self.start)
        self.offsets[index] = len(text)
        logprobs = legacy_logprobs(tokens, 0) if self.logprobs and tokens else None
        return {**self.choice(index, {"content": text}, logprobs), **self.echo.fields(self.start)}

    def encode(self, event: ChatEvent) -> list[dict]:
        chunks = super().encode(event)
        if isinstance(event, MessageStart) and not (self.echo.echo or self.echo.scores):
            return []  # no role chunk in the legacy stream
        return chunks

    def delta(self, event: BlockDelta, block) -> list[dict]:
        if not event.text and not event.logprobs:
            return []
        logprobs = None
        if self.logprobs:
            logprobs = legacy_logprobs(event.logprobs or [], self.offsets[event.choice])
            self.offsets[event.choice] += sum(len(t.token) for t in event.logprobs or [])
        return [self.chunk([self.choice(event.choice, {"content": event.text}, logprobs)])]

