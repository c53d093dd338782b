"""ChatRequest: one generation request, as every protocol hands it to the gateway.

Sampling fields left as None mean "the backend's default" (the model's generation_config for
the embedded engine), so a protocol never invents a value the client did not send.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from tenshu.core.errors import InvalidRequestError
from tenshu.core.messages import (
    ImageBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)

# Stop strings are matched against the reply after every token, each at a cost that grows with
# its length, so a request may carry only so many (OpenAI allows 4; its protocol keeps to that).
MAX_STOPS = 16
MAX_STOP_CHARS = 256


def stop_strings(value: str | list[str] | None, field: str, most: int = MAX_STOPS) -> list[str]:
    """A request's stop strings, checked: at most `most`, each at most MAX_STOP_CHARS long.
    Empty strings are dropped (one would end every reply at once)."""
    stops = [value] if isinstance(value, str) else list(value or [])
    stops = [s for s in stops if s]
    if len(stops) > most:
        raise InvalidRequestError(f"{field}: at most {most} stop sequences, not {len(stops)}",
                                  field=field)
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise InvalidRequestError(
            f"{field}: a stop sequence may be at most {MAX_STOP_CHARS} characters long",
            field=field)
    return stops


@dataclass
class ToolChoice:
    """auto: the model decides; none: no calls; required: at least one call; tool: `name`."""

    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None
    parallel: bool = True


@dataclass
class ChatRequest:
    model: str
    messages: list[Message] = field(default_factory=list)
    # A completion prompt (OpenAI /v1/completions, Ollama raw generate): sent to the model as
    # is, with no chat template. When set, `messages` is empty.
    prompt: str | list[int] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    stream: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    echo: bool = False  # completions: the prompt is repeated before the answer
    # completions: score the prompt too (vLLM's prompt_logprobs): each prompt token's logprob
    # and this many likeliest alternatives, in MessageStart.prompt_tokens
    prompt_logprobs: int | None = None
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever the model says
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    response_format: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    num_ctx: int | None = None  # Ollama's per-request context window
    # Ollama's keep_alive, in seconds (math.inf: forever, 0: unload after this request); None:
    # the model's own (core/keep_alive.py parses the wire's "10m", -1, ...)
    keep_alive: float | None = None
    user: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_completion(self) -> bool:
        return self.prompt is not None


# What Anthropic bills for an image at the largest size it keeps.
_IMAGE_TOKENS = 1600


def estimate_tokens(request: ChatRequest) -> int:
    """A cheap guess at the prompt's size in tokens: a quarter of its characters (messages,
    system, tool specs as JSON), and a flat allowance per image."""
    if request.is_completion:
        prompt = request.prompt
        return len(prompt) if isinstance(prompt, list) else math.ceil(len(prompt) / 4)
    chars = images = 0
    for message in request.messages:
        for block in message.content:
            if isinstance(block, TextBlock):
                chars += len(block.text)
            elif isinstance(block, ThinkingBlock):
                chars += len(block.thinking)
            elif isinstance(block, ToolUseBlock):
                chars += len(block.name) + len(json.dumps(block.input))
            elif isinstance(block, ToolResultBlock):
                chars += len(block.text)
                images += sum(isinstance(b, ImageBlock) for b in block.content)
            elif isinstance(block, ImageBlock):
                images += 1
    if request.tools:
        chars += len(json.dumps([dataclasses.asdict(t) for t in request.tools]))
    return math.ceil(chars / 4) + images * _IMAGE_TOKENS
