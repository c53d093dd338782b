"""The Ollama API wire format (/api/chat, /api/generate, /api/embed, ...), requests side.

The request bodies as pydantic models and their translation into core types (`parse_chat`,
`parse_generate`, `parse_embed`), and Ollama's error body. The rest of the format is split by
direction: ollama_encode.py writes tenshu's replies (ChatEvents -> NDJSON chunks, the model
listings); ollama_client.py is the client side for an upstream Ollama server.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tenshu.core.errors import InvalidRequestError, TenshuError
from tenshu.core.keep_alive import keep_alive_seconds
from tenshu.core.messages import (
    ImageBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tenshu.core.request import ChatRequest, stop_strings

# The Ollama version /api/version reports. Clients gate features on it: VS Code's Copilot wants
# at least 0.6.4, and Codex (`codex --oss`) 0.13.4, the release it takes to serve OpenAI's
# Responses API (added in 0.13.3, ollama#13351), which it then talks to instead of Chat
# Completions. tenshu speaks the API of that release: what 0.12.x added (tool call ids in
# /api/chat replies in 0.12.10, logprobs and top_logprobs in 0.12.11) and stateless
# /v1/responses (api/responses.py); Codex's other calls are /v1/models or /api/tags to find the
# model and /api/pull when it is not listed (api/ollama.py). Tools, structured outputs, `think`
# and `tool_name` predate all this.
OLLAMA_VERSION = "0.13.4"

# The wire requests.


class _Wire(BaseModel):
    # Real clients send fields tenshu has no use for; NaN and infinity are never a valid number.
    # Types are strict, as Ollama's (Go's) decoding is: "10" is not a num_predict.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)


class OllamaOptions(_Wire):
    """`options`: the sampling knobs tenshu honours are typed, so a wrong type is a 400 that
    names it. Ollama's other options (mirostat, num_thread, ...) are accepted and ignored, as
    Ollama itself ignores options its runner does not use."""

    temperature: float | None = None
    num_predict: int | None = Field(None, description="-1 or -2: until the context is full")
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    seed: int | None = Field(None, description="negative: random")
    stop: list[str] | str | None = None
    num_ctx: int | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class OllamaToolCallFunction(_Wire):
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class OllamaToolCall(_Wire):
    id: str | None = None
    function: OllamaToolCallFunction


class OllamaMessage(_Wire):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[str] | None = Field(None, description="base64-encoded images")
    thinking: str | None = None
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class OllamaToolFunction(_Wire):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class OllamaTool(_Wire):
    type: str = "function"
    function: OllamaToolFunction


Format = Literal["", "json"] | dict[str, Any] | None
KeepAlive = float | str | None


class _Generation(_Wire):
    model: str = Field(min_length=1)
    format: Format = Field(None, description='"json", or a JSON schema the reply must match')
    options: OllamaOptions | None = None
    stream: bool | None = Field(None, description="default true: NDJSON chunks")
    keep_alive: KeepAlive = Field(None, description='how long the model stays loaded after '
                                  'the request: "5m", seconds, 0 (unload), -1 (forever)')
    think: bool | Literal["low", "medium", "high"] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)


class ChatBody(_Generation):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[OllamaTool] | None = None


class GenerateBody(_Generation):
    prompt: str | None = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    # Ollama's tokenized history from an earlier reply (deprecated by Ollama, still sent by
    # clients of its conversational generate): the prompt goes on from it (continue_from)
    context: list[int] | None = None
    raw: bool | None = None
    images: list[str] | None = None


class EmbedBody(_Wire):
    model: str = Field(min_length=1)
    input: str | list[str] = ""
    truncate: bool | None = None
    options: OllamaOptions | None = None
    keep_alive: KeepAlive = None
    dimensions: int | None = Field(None, ge=1)


class EmbeddingsBody(_Wire):
    model: str = Field(min_length=1)
    prompt: str = ""
    options: OllamaOptions | None = None
    keep_alive: KeepAlive = None


class PullBody(_Wire):
    """/api/pull: `model` (or `name`); tenshu downloads nothing (see api/ollama.py's pull)."""

    model: str | None = None
    name: str | None = None
    insecure: bool | None = None
    stream: bool | None = None

    @property
    def model_name(self) -> str:
        if not (self.model or self.name):
            raise InvalidRequestError("model is required", field="model")
        return self.model or self.name  # type: ignore[return-value]


class ShowBody(_Wire):
    """/api/show: `model`, or `name` as older clients send it."""

    model: str | None = None
    name: str | None = None

    @property
    def model_name(self) -> str:
        if not (self.model or self.name):
            raise InvalidRequestError("model is required", field="model")
        return self.model or self.name  # type: ignore[return-value]


# Server direction: wire -> ChatRequest.


def parse_chat(body: ChatBody) -> ChatRequest:
    request = _base_request(body)
    request.messages = parse_messages(body.messages)
    # no parameters: a function of none (`properties` spelled out, as chat templates loop on it)
    request.tools = [
        ToolSpec(t.function.name, t.function.description or "",
                 t.function.parameters or {"type": "object", "properties": {}})
        for t in body.tools or []
    ]
    return request


def parse_generate(body: GenerateBody) -> ChatRequest:
    """`raw`: the prompt goes to the model as is; otherwise it is a user turn (after `system`)
    rendered with the model's chat template, as Ollama does."""
    if body.suffix:
        raise InvalidRequestError(
            "suffix (fill-in-the-middle) is not supported by tenshu's models", field="suffix")
    if body.template:
        raise InvalidRequestError(
            "template overrides are not supported; tenshu prompts each model with its own chat "
            "template (or send raw: true with a prompt you formatted yourself)", field="template")
    request = _base_request(body)
    images = _images(body.images or [], "images")
    if body.raw:
        if images:
            raise InvalidRequestError("a raw prompt cannot carry images", field="images")
        request.prompt = body.prompt or ""
        return request
    if body.system:
        request.messages.append(Message.of("system", body.system))
    if body.prompt or images:
        request.messages.append(Message("user", [*images, TextBlock(body.prompt or "")]))
    return request


def continue_from(request: ChatRequest, context: list[int], turn: list[int],
                  vocab_size: int) -> ChatRequest:
    """A generate that sends back an earlier reply's `context`: the model reads those token ids,
    then this turn's (`turn`: the system and prompt rendered with the chat template, as
    parse_generate made them), as Ollama puts the detokenized context before the templated
    turn. The prompt is token ids, so it is not templated again."""
    if any(not 0 <= t < vocab_size for t in context):
        raise InvalidRequestError(
            f"context holds token ids outside this model's vocabulary (0 to {vocab_size - 1}); "
            "send back the `context` of a reply from the same model", field="context")
    request.prompt, request.messages = [*context, *turn], []
    return request


def is_load_request(body: ChatBody | GenerateBody) -> bool:
    """Ollama's "load the model" call: a chat with no messages, a generate with no prompt."""
    if isinstance(body, ChatBody):
        return not body.messages
    return not body.prompt and not body.system and not body.images


def keep_alive(value: KeepAlive) -> float | None:
    """A request's keep_alive in seconds (FOREVER for a negative one); None when not sent."""
    if value is None:
        return None
    try:
        return keep_alive_seconds(value)
    except ValueError as exc:
        raise InvalidRequestError(f"keep_alive: {exc}", field="keep_alive") from None


def load_reason(value: KeepAlive) -> str:
    """What a load call does: keep_alive 0 unloads the model, anything else loads it."""
    return "unload" if keep_alive(value) == 0 else "load"


def parse_messages(messages: list[OllamaMessage]) -> list[Message]:
    out: list[Message] = []
    pending: list[ToolUseBlock] = []  # the last assistant turn's calls not yet answered
    for i, m in enumerate(messages):
        field = f"messages.{i}"
        text = m.content or ""
        if m.role == "tool":
            result = ToolResultBlock(_answered_call(m, pending, i), [TextBlock(text)])
            if out and out[-1].role == "user" and isinstance(out[-1].content[-1], ToolResultBlock):
                out[-1].content.append(result)  # parallel calls: their results share one turn
            else:
                out.append(Message("user", [result]))
            continue
        blocks: list = _images(m.images or [], f"{field}.images")
        if m.role == "assistant" and m.thinking:
            blocks.append(ThinkingBlock(m.thinking))
        if text or not (m.tool_calls or blocks):
            blocks.append(TextBlock(text))
        if m.role == "assistant":
            pending = [_tool_use(call, f"call_{i}_{j}")
                       for j, call in enumerate(m.tool_calls or [])]
            blocks.extend(pending)
        elif m.tool_calls:
            raise InvalidRequestError("only assistant messages carry tool_calls",
                                      field=f"{field}.tool_calls")
        out.append(Message(m.role, blocks))
    return out


def _answered_call(m: OllamaMessage, pending: list[ToolUseBlock], index: int) -> str:
    """The id of the call a tool message answers: its tool_call_id, else the first unanswered
    call of that tool name (Ollama's clients send only `tool_name`), else the next one."""
    match = next((c for c in pending if c.id == m.tool_call_id), None) if m.tool_call_id else None
    if match is None and m.tool_name:
        match = next((c for c in pending if c.name == m.tool_name), None)
    if match is None and pending and not m.tool_call_id:
        match = pending[0]
    if match is None:
        return m.tool_call_id or f"call_{index}"
    pending.remove(match)
    return match.id


def _tool_use(call: OllamaToolCall, default_id: str) -> ToolUseBlock:
    args = call.function.arguments
    if isinstance(args, str):  # some clients send OpenAI-style JSON text; kept if it is not JSON
        return ToolUseBlock.from_arguments(call.id or default_id, call.function.name, args)
    return ToolUseBlock(call.id or default_id, call.function.name, args)


_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
          (b"RIFF", "image/webp"))


def _images(images: list[str], field: str) -> list[ImageBlock]:
    """Ollama's images are bare base64; the media type is read from the data's first bytes."""
    blocks = []
    for i, data in enumerate(images):
        try:
            head = base64.b64decode(data[:16], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError("an image is not valid base64",
                                      field=f"{field}.{i}") from None
        media = next((t for magic, t in _MAGIC if head.startswith(magic)), None)
        blocks.append(ImageBlock(media_type=media, data=data))
    return blocks


def _base_request(body: _Generation) -> ChatRequest:
    request = ChatRequest(model=body.model, stream=body.stream is not False,
                          keep_alive=keep_alive(body.keep_alive))
    apply_options(request, body.options)
    if body.format == "json":
        request.response_format = {"type": "json_object"}
    elif isinstance(body.format, dict):
        request.response_format = {"type": "json_schema",
                                   "json_schema": {"name": "response", "schema": body.format}}
    if body.think is not None:
        request.thinking = ({"type": "disabled"} if body.think is False else
                            {"type": "enabled"} if body.think is True else
                            {"type": "enabled", "effort": body.think})
    if body.logprobs:
        request.logprobs, request.top_logprobs = True, body.top_logprobs or 0
    return request


def apply_options(request: ChatRequest, options: OllamaOptions | None) -> None:
    """Ollama's option names and sentinels -> ChatRequest fields."""
    if options is None:
        return
    o = options
    request.temperature, request.top_p, request.min_p = o.temperature, o.top_p, o.min_p
    request.presence_penalty, request.frequency_penalty = o.presence_penalty, o.frequency_penalty
    request.repetition_penalty = o.repeat_penalty
    # Ollama's runner treats num_predict <= 0 as "no limit" (-1) or "fill the context" (-2):
    # both mean generating until the context window is full.
    request.max_tokens = o.num_predict if o.num_predict and o.num_predict > 0 else None
    request.top_k = max(o.top_k, 0) if o.top_k is not None else None  # <= 0: disabled
    request.seed = o.seed if o.seed is not None and o.seed >= 0 else None  # -1: random
    request.num_ctx = o.num_ctx if o.num_ctx and o.num_ctx > 0 else None
    request.stop = stop_strings(o.stop, "options.stop")


# Embeddings.


def parse_embed(body: EmbedBody) -> list[str]:
    """The texts to embed; empty for Ollama's load call (`input` "" or []). keep_alive is
    checked, not used: the embedder stays loaded from its first use (it is small)."""
    keep_alive(body.keep_alive)
    return [body.input] if isinstance(body.input, str) and body.input else list(body.input or [])


def error_body(exc: TenshuError) -> dict:
    return {"error": str(exc)}
