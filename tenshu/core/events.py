"""ChatEvent: what every backend streams back, whatever the protocol on either side.

The sequence for one request is always

    MessageStart
    (BlockStart, BlockDelta*, BlockStop)*     blocks by index, one open at a time per choice
    MessageFinish                             once per choice, with stop reason and usage

With n > 1 (OpenAI only) the blocks and finishes of each choice carry its `choice` index and
may interleave. A failure after MessageStart is raised as a core error from the stream; each
protocol turns it into its in-stream error event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tenshu.core.messages import Block

# end_turn: the model finished; max_tokens: the token budget (or the context) ran out;
# stop_sequence: a stop string matched; tool_use: the turn ends with tool calls.
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the prefix cache


@dataclass
class TokenLogprob:
    token: str
    logprob: float | None  # None only for a prompt's first token: nothing comes before it
    bytes: list[int] | None = None
    top: list[TokenLogprob] = field(default_factory=list)
    id: int | None = None  # the token id and its rank (1: the likeliest), where the backend
    rank: int | None = None  # knows them (vLLM's prompt_logprobs are keyed by id)


@dataclass
class MessageStart:
    id: str
    model: str
    usage: Usage
    created: int  # unix seconds
    # what memory gave the model (memory/stage.py): each {source, title, section, page,
    # chunk_id, collection}; protocols put it in the reply as `sources`
    sources: list[dict] | None = None
    # the LoRA adapter version that answers ("NAME@vN"), when a model is one
    adapter: str | None = None
    # a completion that asked for its prompt back (echo, prompt logprobs): the prompt as text,
    # and with ChatRequest.prompt_logprobs its tokens, each scored given those before it
    prompt_text: str | None = None
    prompt_tokens: list[TokenLogprob] | None = None


@dataclass
class BlockStart:
    index: int
    block: Block  # the block's identity (tool id and name); its content arrives as deltas
    choice: int = 0


@dataclass
class BlockDelta:
    """`text` for text and thinking blocks; `partial_json` for a tool call's arguments."""

    index: int
    text: str = ""
    partial_json: str = ""
    logprobs: list[TokenLogprob] | None = None
    choice: int = 0


@dataclass
class BlockStop:
    """`input`, on a tool call's stop, is its arguments as the backend parsed them. Encoders
    that need an object use it rather than re-parsing the deltas, which may not be a whole
    document when max_tokens cut the call short."""

    index: int
    choice: int = 0
    input: dict | None = None


@dataclass
class MessageFinish:
    stop_reason: StopReason
    usage: Usage
    stop_sequence: str | None = None
    choice: int = 0
    # Where the time went (Ollama reports these): prefill until the first token, then decode.
    prompt_ns: int = 0
    decode_ns: int = 0
    # True when max_tokens was lowered to fit the context window: a max_tokens stop then means
    # the context is full, not that the client's budget was spent.
    clamped: bool = False


ChatEvent = MessageStart | BlockStart | BlockDelta | BlockStop | MessageFinish
