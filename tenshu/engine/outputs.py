"""What the engine hands back: RequestOutput with one CompletionOutput per sequence (vLLM's shape)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tenshu.engine.sampling import Logprob


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None = None
    cumulative_logprob: float | None = None
    finish_reason: str | None = None  # "stop", "length", "abort"; None while running
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = False
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    # with SamplingParams.prompt_logprobs: one entry per prompt token (None for the first), in
    # the request's first output only when outputs are deltas
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None
