"""The reference the engine is held to: transformers on the same checkpoint, one prompt at a
time (no padding), greedy."""

from __future__ import annotations

import functools

import torch
from transformers import AutoModelForCausalLM


@functools.lru_cache(maxsize=8)
def hf_model(path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.inference_mode()
def hf_greedy(path, prompt: list[int], max_new_tokens: int) -> list[int]:
    model = hf_model(path)
    out = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        do_sample=False,
    )  # stops after an end-of-sequence token, as the engine does by default
    return out[0, len(prompt) :].tolist()


@torch.inference_mode()
def hf_logprobs(path, token_ids: list[int]) -> torch.Tensor:
    """[len(token_ids), V] log-softmax of the logits at every position."""
    logits = hf_model(path)(torch.tensor([token_ids])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def logprob_gaps(path, prompt: list[int], completion) -> list[float]:
    """|engine - transformers| for the log-prob of each token a completion sampled (its
    `logprobs` entries), transformers scoring the prompt and the completion in one pass."""
    expected = hf_logprobs(path, prompt + completion.token_ids)
    return [abs(entry[token].logprob - float(expected[len(prompt) - 1 + i][token]))
            for i, (token, entry) in enumerate(zip(completion.token_ids, completion.logprobs,
                                                   strict=True))]


def random_prompts(vocab: int, lengths: list[int], seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    # skip the special tokens at the end of the tiny vocabularies' first ids
    return [torch.randint(8, vocab, (n,), generator=g).tolist() for n in lengths]
