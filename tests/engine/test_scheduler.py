"""Continuous batching: requests join and leave at step boundaries, long prompts are chunked
so running decodes keep producing, and limits hold."""

from __future__ import annotations

import pytest

from tenshu.engine import EngineConfig, LLMEngine, SamplingParams
from tests.engine.reference import random_prompts


def engine(path, **kwargs) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(path), dtype="float32", **kwargs))


@pytest.mark.parametrize("long_first", [False, True])
def test_a_long_prompt_does_not_stall_a_running_decode(checkpoint, long_first):
    e = engine(checkpoint("qwen3"), max_num_batched_tokens=16, block_size=8)
    short, long = random_prompts(e.vocab_size, [4, 200])
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    first, second = (("long", long), ("short", short)) if long_first else (("short", short), ("long", long))
    e.add_request(first[0], {"prompt_token_ids": first[1]}, params)
    e.step()
    e.add_request(second[0], {"prompt_token_ids": second[1]}, params)
    if long_first:
        e.step()  # the short prompt is admitted and prefilled beside a chunk of the long one
    decoding = e.requests["short"].seqs[0]
    prefilling = e.requests["long"].seqs[0]
    produced = []
    while prefilling.num_computed_tokens < len(long):
        before = decoding.num_output_tokens
        e.step()
        produced.append(decoding.num_output_tokens - before)
    assert len(produced) >= 150 // 16  # the long prompt took many steps ...
    assert all(n == 1 for n in produced)  # ... and the decode made progress in every one


def test_requests_join_a_running_batch_and_max_num_seqs_holds(checkpoint):
    e = engine(checkpoint("qwen3"), max_num_seqs=2)
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    for i, p in enumerate(random_prompts(e.vocab_size, [5, 9, 13])):
        e.add_request(str(i), {"prompt_token_ids": p}, params)
    finished, most_running = [], 0
    while e.has_unfinished_requests():
        finished += [o.request_id for o in e.step() if o.finished]
        most_running = max(most_running, len(e.scheduler.running))
    assert most_running == 2
    assert sorted(finished) == ["0", "1", "2"]
    assert e.block_manager.num_free_blocks == e.block_manager.num_blocks


def test_preemption_loses_no_request_and_leaks_no_block(checkpoint):
    e = engine(checkpoint("llama"), num_kv_blocks=12, block_size=4, max_num_seqs=6)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    for i, p in enumerate(random_prompts(e.vocab_size, [3, 6, 9, 12, 2, 5])):
        e.add_request(str(i), {"prompt_token_ids": p}, params)
    done = {}
    while e.has_unfinished_requests():
        for out in e.step():
            if out.finished:
                done[out.request_id] = out
    assert e.scheduler.num_preemptions > 0
    assert sorted(done) == [str(i) for i in range(6)]
    assert all(len(o.outputs[0].token_ids) == 24 for o in done.values())
    assert e.block_manager.num_free_blocks == e.block_manager.num_blocks


def test_aborting_frees_every_block(checkpoint):
    e = engine(checkpoint("qwen3"))
    params = SamplingParams(temperature=0, max_tokens=50, n=3)
    e.add_request("a", {"prompt_token_ids": random_prompts(e.vocab_size, [70])[0]}, params)
    e.add_request("b", {"prompt_token_ids": random_prompts(e.vocab_size, [3])[0]}, params)
    for _ in range(4):
        e.step()
    assert e.block_manager.num_free_blocks < e.block_manager.num_blocks
    e.abort_request("a")
    e.abort_request("b")
    assert not e.has_unfinished_requests()
    assert e.block_manager.num_free_blocks == e.block_manager.num_blocks
    assert e.step() == []


def test_a_request_that_cannot_fit_the_kv_cache_is_refused_up_front(checkpoint):
    e = engine(checkpoint("qwen3"), num_kv_blocks=4, block_size=8)  # 32 tokens
    prompt = {"prompt_token_ids": random_prompts(e.vocab_size, [10])[0]}
    with pytest.raises(ValueError, match="KV cache") as err:
        e.add_request("big", prompt, SamplingParams(max_tokens=30))
    assert err.value.field == "max_tokens"
    # without max_tokens it runs until the cache is full, then ends with "length"
    e.add_request("fits", prompt, SamplingParams(temperature=0, ignore_eos=True, max_tokens=None))
    while e.has_unfinished_requests():
        outs = e.step()
    assert outs[0].outputs[0].finish_reason == "length"
    assert len(outs[0].outputs[0].token_ids) == 22
