"""One sequence of a request: its tokens, how many of them are in the KV cache, its block table.

A request with `n > 1` has n sequences; the later ones are forked from the first once its
prompt is in the cache, and share the prompt's full blocks.
"""

from __future__ import annotations

import enum
from itertools import count

import torch

from tenshu.engine.sampling import Logprob, SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(enum.Enum):
    STOP = "stop"  # an end-of-sequence token, a stop token id or a stop string
    LENGTH = "length"  # max_tokens or the context window
    ABORT = "abort"


_ids = count()


class Sequence:
    def __init__(
        self,
        request_id: str,
        index: int,
        prompt_token_ids: list[int],
        params: SamplingParams,
        max_tokens: int,
        generator: torch.Generator | None,
    ):
        self.seq_id = next(_ids)
        self.request_id = request_id
        self.index = index  # position among the request's n sequences
        self.token_ids = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.max_tokens = max_tokens  # params.max_tokens resolved against the context window
        self.generator = generator
        # each of a request's sequences walks the grammar on its own
        self.constraint = params.constraint.new() if params.constraint is not None else None
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0  # tokens whose K/V are in the cache
        self.num_cached_tokens = 0  # prompt tokens found in the prefix cache at admission
        self.block_table: list[int] = []
        self.block_hashes: list[bytes] = []  # content hashes of the full, computed blocks
        self.pending_forks: list[Sequence] = []  # siblings waiting for this prompt's blocks
        self.output_logprobs: list[dict[int, Logprob]] = []
        # with params.prompt_logprobs: one entry per prompt token, None for the first (nothing
        # comes before it); filled in as the prompt is computed
        self.prompt_logprobs: list[dict[int, Logprob] | None] = [None]
        self.cumulative_logprob = 0.0
        self.finish_reason: FinishReason | None = None
        self.stop_reason: int | str | None = None
        self.lora = None  # the adapter (lora.LoRAWeights) it runs with; None: the base model
        self.cache_salt = b""  # seeds its prefix-cache hashes: an adapter version's own

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def prompt_done(self) -> bool:
        return self.num_computed_tokens >= self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def __repr__(self) -> str:
        return (
            f"Sequence({self.request_id}#{self.index}, tokens={self.num_tokens}, "
            f"computed={self.num_computed_tokens}, {self.status.value})"
        )
