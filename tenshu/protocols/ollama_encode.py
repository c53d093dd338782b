"""The Ollama wire format, server side out: ChatEvents -> Ollama's replies, and the listings.

`ReplyEncoder` turns one reply's events into NDJSON chunks (api/ollama.py streams them) and
gathers the whole reply for `stream: false`; the listing functions write /api/tags, /api/ps and
/api/show entries from the models' ModelInfo.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from tenshu.core.errors import TenshuError
from tenshu.core.events import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatEvent,
    MessageFinish,
    MessageStart,
    TokenLogprob,
)
from tenshu.core.messages import ThinkingBlock, ToolUseBlock, loads_arguments
from tenshu.core.models import ModelInfo

_DONE_REASONS = {"max_tokens": "length"}  # end_turn, stop_sequence, tool_use: Ollama says "stop"


def timestamp(at: datetime | float | None = None) -> str:
    """RFC 3339 in UTC, as Ollama writes `created_at` and `modified_at`."""
    if at is None:
        at = datetime.now(UTC)
    elif not isinstance(at, datetime):
        at = datetime.fromtimestamp(at, UTC)
    return at.isoformat().replace("+00:00", "Z")


class ReplyEncoder:
    """One reply's ChatEvents -> Ollama chunks. `kind` "chat" puts text in `message.content`,
    "generate" in `response`. It also gathers the whole reply, for `stream: false`."""

    def __init__(self, model: str, kind: Literal["chat", "generate"],
                 started_ns: int | None = None, clock: Callable[[], int] = time.perf_counter_ns):
        self.model, self.kind, self.clock = model, kind, clock
        self.started_ns = clock() if started_ns is None else started_ns
        self.text: list[str] = []
        self.thinking: list[str] = []
        self.tool_calls: list[dict] = []
        self.logprobs: list[dict] = []
        self.final: dict | None = None
        self._blocks: dict[int, Any] = {}
        self._args: dict[int, list[str]] = {}
        self.sources: list[dict] | None = None  # what memory gave the model

    def chunks(self, event: ChatEvent) -> list[dict]:
        """The NDJSON lines this event becomes (often none)."""
        if isinstance(event, MessageStart):
            self.sources = event.sources
        elif isinstance(event, BlockStart):
            self._blocks[event.index] = event.block
            self._args[event.index] = []
        elif isinstance(event, BlockDelta):
            block = self._blocks.get(event.index)
            if isinstance(block, ToolUseBlock):
                self._args[event.index].append(event.partial_json)
                return []
            logprobs = _wire_logprobs(event.logprobs)
            self.logprobs.extend(logprobs or [])
            if isinstance(block, ThinkingBlock):
                self.thinking.append(event.text)
                return [self._chunk(thinking=event.text, logprobs=logprobs)]
            self.text.append(event.text)
            if event.text or logprobs:
                return [self._chunk(content=event.text, logprobs=logprobs)]
        elif isinstance(event, BlockStop):
            block = self._blocks.get(event.index)
            if isinstance(block, ToolUseBlock):
                arguments = "".join(self._args[event.index])
                if event.input is not None:  # parsed by the backend, even when cut short
                    block, arguments = ToolUseBlock(block.id, block.name, event.input), ""
                call = _wire_tool_call(block, arguments, len(self.tool_calls))
                self.tool_calls.append(call)
                return [self._chunk(tool_calls=[call])]
        elif isinstance(event, MessageFinish):
            self.final = self._stats(event)
            return [{**self._chunk(), **self.final}]
        return []

    def response(self) -> dict:
        """The whole reply as one object (after every event went through `chunks`)."""
        if self.final is None:
            raise TenshuError("the model's reply ended before it finished")
        return {**self._chunk("".join(self.text), "".join(self.thinking), self.tool_calls,
                              self.logprobs), **self.final}

    def _chunk(self, content: str = "", thinking: str | None = None,
               tool_calls: list[dict] | None = None, logprobs: list[dict] | None = None) -> dict:
        chunk: dict[str, Any] = {"model": self.model, "created_at": timestamp()}
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if tool_calls:
                message["tool_calls"] = tool_calls
            chunk["message"] = message
        else:
            chunk["response"] = content
            if thinking:
                chunk["thinking"] = thinking
        if logprobs:
            chunk["logprobs"] = logprobs
        chunk["done"] = False
        return chunk

    def _stats(self, finish: MessageFinish) -> dict:
        total = max(0, self.clock() - self.started_ns)
        stats = {
            "done": True,
            "done_reason": _DONE_REASONS.get(finish.stop_reason, "stop"),
            "total_duration": total,
            # Ollama counts the wait for a loaded runner here. tenshu's models are always
            # loaded, so this is the time spent queueing and in the request's own handling.
            "load_duration": max(0, total - finish.prompt_ns - finish.decode_ns),
            "prompt_eval_count": finish.usage.input_tokens,
            "prompt_eval_duration": finish.prompt_ns,
            "eval_count": finish.usage.output_tokens,
            "eval_duration": finish.decode_ns,
        }
        if self.sources:
            stats["sources"] = self.sources  # tenshu's extension, on the last line
        if self.kind == "generate":
            # Ollama's tokenized history for the next call: api/ollama.py fills it in where
            # it knows the ids (a model tenshu runs itself); an upstream's reply has none.
            stats["context"] = []
        return stats


def load_reply(model: str, kind: Literal["chat", "generate"], reason: str) -> dict:
    """The answer to a load (or unload) call: done at once, nothing generated."""
    body: dict[str, Any] = {"model": model, "created_at": timestamp()}
    if kind == "chat":
        body["message"] = {"role": "assistant", "content": ""}
    else:
        body["response"] = ""
    return {**body, "done": True, "done_reason": reason}


def _wire_tool_call(block: ToolUseBlock, partial_json: str, index: int) -> dict:
    """One call as Ollama writes it: arguments as an object, `index` its place in the reply
    (and the `id` newer Ollama releases add, which tool results may answer by)."""
    arguments: Any = block.input
    if partial_json:
        try:
            arguments = loads_arguments(partial_json)
        except ValueError:
            arguments = partial_json  # a backend's malformed JSON, shown rather than dropped
    return {"id": block.id,
            "function": {"index": index, "name": block.name, "arguments": arguments}}


def _wire_logprobs(logprobs: list[TokenLogprob] | None) -> list[dict] | None:
    if not logprobs:
        return None
    return [{"token": lp.token, "logprob": lp.logprob, "bytes": lp.bytes,
             "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": t.bytes}
                              for t in lp.top]} for lp in logprobs]


# Embeddings.


def shorten(vector: list[float], dimensions: int | None) -> list[float]:
    """Ollama's `dimensions`: keep the first N, then scale back to unit length."""
    if not dimensions or dimensions >= len(vector):
        return vector
    head = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in head)) or 1.0
    return [x / norm for x in head]


# Model listings.


def tagged(name: str) -> str:
    """Ollama names carry a tag; tenshu's do not (the gateway strips `:latest` again)."""
    return name if ":" in name else f"{name}:latest"


def digest(info: ModelInfo) -> str:
    """A stable identity for the weights: sha256 of their path and size in bytes. It changes
    when the checkpoint is replaced, which is what clients use the digest to notice."""
    return hashlib.sha256(f"{info.path}:{info.size_bytes}".encode()).hexdigest()


def parameter_size(count: int) -> str:
    """Ollama's human number: 7B, 7.6B, 494.03M, 22M, 3K."""
    for unit, scale, decimals in (("B", 1e9, 1), ("M", 1e6, 2), ("K", 1e3, 0)):
        if count >= scale:
            value = count / scale
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.{decimals}f}{unit}"
    return str(count)


def model_details(info: ModelInfo) -> dict:
    quant = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}.get(info.dtype, info.dtype)
    return {
        "parent_model": info.parent,
        "format": "safetensors",
        "family": info.family,
        "families": [info.family] if info.family else None,
        "parameter_size": parameter_size(info.parameters) if info.parameters else "",
        "quantization_level": quant.upper(),
    }


def model_entry(info: ModelInfo) -> dict:
    """One model in /api/tags."""
    return {"name": tagged(info.name), "model": tagged(info.name),
            "modified_at": timestamp(info.created), "size": info.size_bytes,
            "digest": digest(info), "details": model_details(info)}


# keep_alive -1 in Ollama: the model never unloads, and its expiry is centuries away.
NEVER_EXPIRES = "2318-01-01T00:00:00Z"


def running_entry(info: ModelInfo, expires_in: float = math.inf) -> dict:
    """One loaded model in /api/ps, unloaded in `expires_in` seconds (inf: never); size_vram
    is not tracked (0)."""
    expires = NEVER_EXPIRES if math.isinf(expires_in) else timestamp(time.time() + expires_in)
    return {**model_entry(info), "expires_at": expires, "size_vram": 0,
            "context_length": info.context_window}


def show_response(info: ModelInfo) -> dict:
    arch = info.family or "unknown"
    # every chat model takes tools: one whose template knows none gets tenshu's generic format
    capabilities = ["embedding"] if info.kind == "embedding" else ["completion", "tools"]
    model_info: dict[str, Any] = {"general.architecture": arch,
                                  "general.basename": info.name,
                                  f"{arch}.context_length": info.context_window}
    if info.parameters:
        model_info["general.parameter_count"] = info.parameters
    parameters = f"num_ctx {info.context_window}"
    template = info.chat_template.replace('"""', '\\"\\"\\"')
    # FROM names the model, not its directory: where files live on the server is not a client's
    modelfile = (f"# Modelfile generated by tenshu\nFROM {info.name}\n"
                 + (f'TEMPLATE """{template}"""\n' if template else "")
                 + f"PARAMETER {parameters}\n")
    return {"modelfile": modelfile, "parameters": parameters, "template": info.chat_template,
            "details": model_details(info), "model_info": model_info,
            "capabilities": capabilities, "modified_at": timestamp(info.created)}
