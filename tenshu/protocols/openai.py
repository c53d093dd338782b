"""The OpenAI wire format, server side in: request models and parsing into a ChatRequest.

api/openai.py takes these pydantic models as its request bodies (so /openapi.json documents
them) and hands `parse_*` results to the gateway; openai_encode.py writes the responses and
openai_client.py is the other direction, for upstream OpenAI-compatible servers. Names and
limits follow vLLM's OpenAI-compatible server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    WithJsonSchema,
)
from pydantic.json_schema import SkipJsonSchema

from tenshu.core.errors import InvalidRequestError, TenshuError
from tenshu.core.messages import (
    ImageBlock,
    Message,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tenshu.core.request import ChatRequest, ToolChoice, stop_strings

MAX_N = 8
MAX_STOPS = 4  # OpenAI's limit
MAX_LOGPROBS = 20  # the engine's limit (engine/sampling.py)

# ---------------------------------------------------------------------------------------------
# Requests on the wire
# ---------------------------------------------------------------------------------------------


class _Wire(BaseModel):
    # Real clients send many fields we do not use. Types are strict, as OpenAI's own API is:
    # "10" or true is not a max_tokens, "yes" is not a stream.
    model_config = ConfigDict(extra="allow", strict=True)


# What /openapi.json documents for the fields that are validated here, in parse_*, rather than
# by pydantic: so a bad value gets a message that names it, instead of a list of union errors.
def _obj(required: list[str], **properties) -> dict:
    return {"type": "object", "properties": properties, "required": required}


def _content(*parts: dict, null: bool = False) -> dict:
    kinds = [{"type": "string"}, {"type": "array", "items": {"anyOf": list(parts)}}]
    return {"anyOf": kinds + ([{"type": "null"}] if null else [])}


_STR, _TEXT = {"type": "string"}, _obj(["type", "text"], type={"const": "text"},
                                       text={"type": "string"})
_IMAGE = _obj(["type", "image_url"], type={"const": "image_url"},
              image_url=_obj(["url"], url={"type": "string", "minLength": 1}, detail=_STR))
_CALL = _obj(["id", "type", "function"], id=_STR, type={"const": "function"}, function=_obj(
    ["name", "arguments"], name=_STR, arguments={**_STR, "description": "a JSON object"}))
MESSAGE_SCHEMA = {"oneOf": [
    _obj(["role", "content"], role={"enum": ["system", "developer"]}, content=_content(_TEXT),
         name=_STR),
    _obj(["role", "content"], role={"const": "user"}, content=_content(_TEXT, _IMAGE),
         name=_STR),
    _obj(["role"], role={"const": "assistant"}, name=_STR, tool_calls={
        "type": "array", "items": _CALL}, content=_content(_TEXT, null=True)),
    _obj(["role", "content", "tool_call_id"], role={"const": "tool"}, tool_call_id=_STR,
         content=_content(_TEXT)),
]}
def _token_id(value: int | float) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("token ids are integers")
    return int(value)


# JSON's 7.0 is an integer, "7" and true are not (pydantic's lax int would take all three)
_Token = Annotated[StrictInt | StrictFloat, AfterValidator(_token_id)]
_TOKENS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
_TEXT_PROMPT = {"type": "string", "minLength": 1}
PROMPT_SCHEMA = {"anyOf": [
    _TEXT_PROMPT, {"type": "array", "items": _TEXT_PROMPT, "minItems": 1, "maxItems": 1}, _TOKENS,
    {"type": "array", "items": _TOKENS, "minItems": 1, "maxItems": 1}],
    "description": "one prompt: text or token ids (a list of one is accepted too)"}
INPUT_SCHEMA = {"anyOf": [_STR, {"type": "array", "items": _STR, "minItems": 1,
                                 "maxItems": 2048}]}
RESPONSE_FORMAT_SCHEMA = {"anyOf": [
    _obj(["type"], type={"enum": ["text", "json_object"]}),
    _obj(["type", "json_schema"], type={"const": "json_schema"}, json_schema=_obj(
        ["name", "schema"], name={"type": "string", "minLength": 1},
        schema={"type": "object", "description": "a JSON Schema"}, strict={"type": "boolean"})),
    {"type": "null"}]}


class FunctionCall(_Wire):
    name: str
    arguments: str | dict[str, Any] = ""  # a JSON string by the spec; some clients send objects


class ToolCall(_Wire):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDef(_Wire):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(_Wire):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(_Wire):
    name: str


class NamedToolChoice(_Wire):
    type: Literal["function"] = "function"
    function: NamedFunction


class StreamOptions(_Wire):
    include_usage: bool | None = None


class _Sampling(_Wire):
    """The sampling fields Chat Completions and Completions share (plus vLLM's extras)."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0)
    n: int | None = Field(1, ge=1, le=MAX_N)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logit_bias: SkipJsonSchema[dict[str, float] | None] = None  # refused unless empty
    ignore_eos: bool | None = None  # vLLM's extension
    user: str | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[Annotated[ChatMessage, WithJsonSchema(MESSAGE_SCHEMA)]] = Field(
        min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: Annotated[dict[str, Any] | None,
                               WithJsonSchema(RESPONSE_FORMAT_SCHEMA)] = None


class CompletionRequest(_Sampling):
    prompt: Annotated[str | list[str] | list[_Token] | list[list[_Token]],
                      WithJsonSchema(PROMPT_SCHEMA)]
    max_tokens: int | None = Field(16, ge=1)  # the legacy endpoint's default, as vLLM's
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool | None = False
    prompt_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)  # vLLM's extension
    suffix: SkipJsonSchema[str | None] = None  # refused: no fill-in-the-middle
    best_of: SkipJsonSchema[int | None] = None  # refused unless it equals n


class EmbeddingRequest(_Wire):
    model: str
    input: Annotated[str | list[str] | list[_Token] | list[list[_Token]],
                     WithJsonSchema(INPUT_SCHEMA)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

# OpenAI's error `type` for each core error kind (its SDK picks exception classes by status).
_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "context_length_exceeded": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "invalid_request_error",
    "model_not_found": "invalid_request_error",
    "rate_limit_error": "rate_limit_error",
}


def error_body(exc: TenshuError) -> dict:
    code = {"model_not_found": "model_not_found",
            "context_length_exceeded": "context_length_exceeded"}.get(exc.kind)
    return {"error": {
        "message": str(exc),
        "type": _TYPES.get(exc.kind, "server_error" if exc.status >= 500 else exc.kind),
        "param": getattr(exc, "field", None),
        "code": code,
    }}


# ---------------------------------------------------------------------------------------------
# Parsing: wire request -> ChatRequest
# ---------------------------------------------------------------------------------------------


def parse_chat_request(body: ChatCompletionRequest) -> ChatRequest:
    if body.top_logprobs and not body.logprobs:
        raise InvalidRequestError("top_logprobs needs logprobs set to true", field="top_logprobs")
    request = _sampling(body, ChatRequest(model=body.model))
    request.max_tokens = body.max_completion_tokens or body.max_tokens
    request.messages = parse_messages(body.messages)
    request.logprobs = bool(body.logprobs)
    request.top_logprobs = body.top_logprobs or 0
    request.tools = [_tool_spec(t) for t in body.tools or []]
    request.tool_choice = _tool_choice(body, request.tools)
    request.response_format = _response_format(body.response_format)
    return request


MAX_PROMPTS = 256  # prompts in one completions request


def parse_completion_requests(body: CompletionRequest) -> list[ChatRequest]:
    """One ChatRequest per prompt: `prompt` may be a list of texts or of token-id lists, and
    each is answered with `n` choices, as vLLM does (lm-eval sends its batches so)."""
    prompts = body.prompt
    if not (isinstance(prompts, list) and prompts and isinstance(prompts[0], (str, list))):
        prompts = [prompts]
    if not 1 <= len(prompts) <= MAX_PROMPTS:
        raise InvalidRequestError(
            f"prompt: from 1 to {MAX_PROMPTS} prompts per request, not {len(prompts)}",
            field="prompt")
    return [parse_completion_request(body, prompt) for prompt in prompts]


def parse_completion_request(body: CompletionRequest,
                             prompt: str | list[int] | None = None) -> ChatRequest:
    """The request for `prompt`, or for the body's only prompt."""
    if prompt is None:
        requests = parse_completion_requests(body)
        if len(requests) != 1:
            raise InvalidRequestError(f"{len(requests)} prompts where one was expected",
                                      field="prompt")
        return requests[0]
    if body.suffix:
        raise InvalidRequestError("suffix (fill-in-the-middle) is not supported", field="suffix")
    if body.best_of is not None and body.best_of != (body.n or 1):
        raise InvalidRequestError("best_of is not supported; use n", field="best_of")
    if isinstance(prompt, list) and any(t < 0 for t in prompt):
        raise InvalidRequestError("token ids must be non-negative", field="prompt")
    request = _sampling(body, ChatRequest(model=body.model, prompt=prompt))
    request.logprobs = body.logprobs is not None
    request.top_logprobs = body.logprobs or 0
    request.echo = bool(body.echo)
    if body.echo and body.logprobs is not None:  # the prompt is scored, as OpenAI did
        request.prompt_logprobs = max(body.logprobs, body.prompt_logprobs or 0)
    elif body.prompt_logprobs is not None:
        request.prompt_logprobs = body.prompt_logprobs
    return request


def _sampling(body: _Sampling, request: ChatRequest) -> ChatRequest:
    if body.logit_bias:
        raise InvalidRequestError("logit_bias is not supported", field="logit_bias")
    stop = stop_strings(body.stop, "stop", MAX_STOPS)
    for name in ("max_tokens", "temperature", "top_p", "top_k", "min_p", "presence_penalty",
                 "frequency_penalty", "repetition_penalty", "seed", "user"):
        setattr(request, name, getattr(body, name))
    request.stop = stop
    request.n = body.n or 1
    request.stream = bool(body.stream)
    request.ignore_eos = bool(body.ignore_eos)
    return request


def parse_messages(messages: list[ChatMessage]) -> list[Message]:
    out: list[Message] = []
    for i, m in enumerate(messages):
        where = f"messages.{i}"
        if m.role == "tool":
            if not m.tool_call_id:
                raise InvalidRequestError("a tool message needs tool_call_id",
                                          field=f"{where}.tool_call_id")
            result = ToolResultBlock(m.tool_call_id, [TextBlock(_text_of(m.content, where))])
            if out and out[-1].role == "user" and all(
                    isinstance(b, ToolResultBlock) for b in out[-1].content):
                out[-1].content.append(result)  # one user turn answers all parallel calls
            else:
                out.append(Message("user", [result]))
        elif m.role in ("system", "developer"):
            out.append(Message.of("system", _text_of(m.content, where)))
        elif m.role == "user":
            out.append(Message("user", _user_blocks(m.content, where)))
        else:
            text = _text_of(m.content, where)
            blocks: list = [TextBlock(text)] if text else []
            for call in m.tool_calls or []:
                # arguments that do not parse (a call cut short) go to the model as written
                args = call.function.arguments
                blocks.append(ToolUseBlock(call.id, call.function.name, args)
                              if isinstance(args, dict)
                              else ToolUseBlock.from_arguments(call.id, call.function.name, args))
            out.append(Message("assistant", blocks))
    return out


def _text_of(content: str | list[dict] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(_text_part(part, f"{where}.content.{j}") for j, part in enumerate(content))


def _text_part(part: dict, field: str) -> str:
    kind = part.get("type")
    key = {"text": "text", "input_text": "text", "refusal": "refusal"}.get(kind)
    if key is None:
        raise InvalidRequestError(
            f"{field}: a content part of type {kind!r} is not accepted here; this server reads "
            "text parts (and image_url parts in user messages)", field=field)
    if not isinstance(part.get(key), str):
        raise InvalidRequestError(f"{field}: a {kind} part needs a `{key}` string", field=field)
    return part[key]


def _user_blocks(content: str | list[dict] | None, where: str) -> list:
    if content is None or isinstance(content, str):
        return [TextBlock(content or "")]
    blocks: list = []
    for j, part in enumerate(content):
        field = f"{where}.content.{j}"
        if part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise InvalidRequestError(f"{field}: an image_url part needs image_url.url",
                                          field=f"{field}.image_url")
            blocks.append(_image(url))
        else:
            blocks.append(TextBlock(_text_part(part, field)))
    return blocks


def _image(url: str) -> ImageBlock:
    if url.startswith("data:") and ";base64," in url:
        head, _, data = url.partition(";base64,")
        return ImageBlock(media_type=head.removeprefix("data:") or None, data=data)
    return ImageBlock(url=url)


def _tool_spec(tool: ToolDef) -> ToolSpec:
    # No parameters is a function of none. `properties` is spelled out: chat templates loop
    # over it.
    f = tool.function
    return ToolSpec(f.name, f.description or "",
                    f.parameters or {"type": "object", "properties": {}})


def _tool_choice(body: ChatCompletionRequest, tools: list[ToolSpec]) -> ToolChoice | None:
    choice, parallel = body.tool_choice, body.parallel_tool_calls
    if choice is None and parallel is None:
        return None
    if isinstance(choice, NamedToolChoice):
        name = choice.function.name
        if name not in {t.name for t in tools}:
            raise InvalidRequestError(f"tool_choice names {name!r}, which is not in tools",
                                      field="tool_choice")
        result = ToolChoice("tool", name)
    else:
        if choice == "required" and not tools:
            raise InvalidRequestError("tool_choice 'required' needs tools",
                                      field="tool_choice")
        result = ToolChoice(choice or "auto")
    result.parallel = parallel is not False
    return result


def _response_format(value: dict | None) -> dict | None:
    if value is None or value.get("type") == "text":
        return None
    kind = value.get("type")
    if kind not in ("json_object", "json_schema"):
        raise InvalidRequestError(
            "response_format.type must be 'text', 'json_object' or 'json_schema'",
            field="response_format.type")
    if kind == "json_schema":
        _json_schema(value.get("json_schema"))
    return value


def _json_schema(spec) -> None:
    """response_format.json_schema: a `name`, the JSON Schema itself, and optionally `strict`."""
    field = "response_format.json_schema"
    if not isinstance(spec, dict):
        raise InvalidRequestError(
            f"{field} must be an object with a name and a schema", field=field)
    if not isinstance(spec.get("name"), str) or not spec["name"]:
        raise InvalidRequestError(f"{field}.name is required: a name for the schema",
                                  field=f"{field}.name")
    if not isinstance(spec.get("schema"), dict):
        raise InvalidRequestError(
            f"{field}.schema is required: the JSON Schema the reply must match, as an object "
            '(for any JSON object, send response_format {"type": "json_object"})',
            field=f"{field}.schema")
    if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
        raise InvalidRequestError(f"{field}.strict must be true or false",
                                  field=f"{field}.strict")


def embedding_inputs(body: EmbeddingRequest) -> list[str]:
    value = body.input
    if isinstance(value, str):
        return [value]
    if any(not isinstance(v, str) for v in value):
        raise InvalidRequestError("input must be a string or a list of strings; token ids are "
                                  "not accepted", field="input")
    return list(value)


