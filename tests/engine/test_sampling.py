"""Sampling: parameter validation, seeds, truncation (top-k/p, min-p), penalties, n > 1."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tenshu import LLM, SamplingParams
from tenshu.core.errors import ContextLengthError
from tenshu.engine.sampling import Sampler
from tests.engine.reference import random_prompts


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"min_p": 2}, "min_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"logprobs": 50}, "logprobs"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_invalid_values_raise_a_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field) as err:
        SamplingParams(**kwargs)
    assert err.value.field == field


@pytest.fixture(scope="module")
def llm(checkpoint):
    return LLM(checkpoint("qwen3"), dtype="float32")


def test_prompt_plus_max_tokens_beyond_the_context_is_refused(llm):
    prompt = {"prompt_token_ids": random_prompts(llm.engine.vocab_size, [1000])[0]}
    with pytest.raises(ContextLengthError, match="max_tokens") as err:
        llm.generate(prompt, SamplingParams(max_tokens=100))
    assert err.value.field == "max_tokens"
    assert not llm.engine.has_unfinished_requests()


def test_a_bad_prompt_in_a_batch_queues_nothing(llm):
    good = {"prompt_token_ids": [10, 11]}
    with pytest.raises(ValueError, match="prompt"):
        llm.generate([good, {"prompt_token_ids": []}])
    assert not llm.engine.has_unfinished_requests()


def test_same_seed_same_output_whatever_the_batch(llm):
    prompts = [{"prompt_token_ids": p} for p in random_prompts(llm.engine.vocab_size, [6, 30, 11])]
    seeded = SamplingParams(temperature=1.0, seed=1234, max_tokens=20, ignore_eos=True)
    other = SamplingParams(temperature=1.0, max_tokens=20, ignore_eos=True)
    alone = llm.generate(prompts[0], seeded)[0].outputs[0].token_ids
    in_batch = llm.generate(prompts, [seeded, other, other])[0].outputs[0].token_ids
    assert alone == in_batch
    different = SamplingParams(temperature=1.0, seed=4321, max_tokens=20, ignore_eos=True)
    assert llm.generate(prompts[0], different)[0].outputs[0].token_ids != alone


def test_top_k_one_is_greedy(llm):
    prompt = {"prompt_token_ids": random_prompts(llm.engine.vocab_size, [12])[0]}
    greedy = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=15))
    top1 = llm.generate(prompt, SamplingParams(temperature=1.5, top_k=1, max_tokens=15))
    assert top1[0].outputs[0].token_ids == greedy[0].outputs[0].token_ids


def test_n_samples_share_the_prompt_blocks_and_differ(llm):
    engine = llm.engine
    prompt = random_prompts(engine.vocab_size, [64])[0]  # 4 full blocks of 16
    params = SamplingParams(n=4, temperature=1.0, seed=7, max_tokens=8, ignore_eos=True)
    engine.add_request("n", {"prompt_token_ids": prompt}, params)
    used = 0
    while engine.has_unfinished_requests():
        out = engine.step()
        used = max(used, engine.block_manager.num_blocks - engine.block_manager.num_free_blocks)
    # 4 prompt blocks once, plus one recomputed last block and one output block per sample
    assert used <= 4 + 4 * 2
    texts = {tuple(o.token_ids) for o in out[0].outputs}
    assert len(out[0].outputs) == 4 and len(texts) > 1


def test_stop_token_ids_end_the_sequence(llm):
    prompt = {"prompt_token_ids": random_prompts(llm.engine.vocab_size, [9])[0]}
    plain = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))
    tokens = plain[0].outputs[0].token_ids
    stop = tokens[5]
    out = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=20, stop_token_ids=[stop]))
    first = tokens.index(stop)
    assert out[0].outputs[0].token_ids == tokens[: first + 1]
    assert out[0].outputs[0].finish_reason == "stop"
    assert out[0].outputs[0].stop_reason == stop
    assert plain[0].outputs[0].finish_reason == "length"


def _row(params: SamplingParams, tokens: list[int], prompt_len: int, seed: int | None = None):
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return SimpleNamespace(params=params, generator=g, token_ids=tokens, num_prompt_tokens=prompt_len,
                           constraint=None)


def test_truncation_keeps_only_allowed_tokens():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, -1.0]]).repeat(200, 1)
    sampler = Sampler(seed=0)
    for params, allowed in [
        (SamplingParams(temperature=1, top_k=2), {0, 1}),
        (SamplingParams(temperature=1, top_p=0.7), {0, 1}),  # p = .64, .24, ...
        (SamplingParams(temperature=1, min_p=0.3), {0, 1}),  # .24 / .64 >= .3
    ]:
        tokens, _ = sampler(logits, [_row(params, [1], 1)] * 200)
        assert set(tokens) == allowed, params


def test_penalties_follow_their_definitions():
    logits = torch.tensor([[2.0, -1.0, 1.5, 0.0]])
    sampler = Sampler()

    def pick(history: list[int], prompt_len: int, **kwargs) -> int:
        row = _row(SamplingParams(temperature=0, **kwargs), history, prompt_len)
        return sampler(logits, [row])[0][0]

    assert pick([0, 0], 0) == 0
    # repetition: a seen positive logit is divided (2.0 -> 1.0), prompt tokens included
    assert pick([0], 1, repetition_penalty=2.0) == 2
    # frequency: minus penalty x count, output only (2.0 - 0.3 x 2 = 1.4 < 1.5)
    assert pick([0, 0], 0, frequency_penalty=0.3) == 2
    assert pick([0, 0], 2, frequency_penalty=0.3) == 0  # in the prompt: not penalized
    # presence: minus penalty once, however often (2.0 - 0.4 = 1.6 > 1.5; 2.0 - 0.6 < 1.5)
    assert pick([0, 0, 0], 0, presence_penalty=0.4) == 0
    assert pick([0], 0, presence_penalty=0.6) == 2
