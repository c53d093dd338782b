"""bf16 weights computed in float32 (dtype="auto" on a CPU): on a CPU without native bf16 every
matmul path (one row, a few rows, many rows; with and without a float32 copy) gives
transformers' float32 results on the same bf16 weights; on one with native bf16, products of
several rows multiply in bf16 (rows rounded), and stay close to them."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tenshu import LLM, SamplingParams
from tenshu.engine.config import cpu_has_native_bf16
from tests.engine.reference import hf_greedy, hf_logprobs, logprob_gaps, random_prompts

# the float32 paths of several rows; a CPU with native bf16 takes bf16 ones instead
float32_batches = pytest.mark.skipif(
    cpu_has_native_bf16(), reason="this CPU multiplies several rows in bf16, rounded: "
    "test_native_bf16_multiplies_batches_in_bf16 covers it")


@float32_batches
def test_auto_keeps_bf16_weights_and_matches_float32_greedy(checkpoint):
    path = checkpoint("qwen2", dtype=torch.bfloat16)
    llm = LLM(path)
    runner = llm.engine.runner
    assert runner.model.model.layers[0].mlp.down_proj.weight.dtype == torch.bfloat16
    assert llm.engine.dtype == torch.float32
    prompts = random_prompts(llm.engine.vocab_size, [3, 40, 90])
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=10))
    for prompt, out in zip(prompts, outs, strict=True):
        assert out.outputs[0].token_ids == hf_greedy(path, prompt, 10)
    single = llm.generate({"prompt_token_ids": prompts[1]}, SamplingParams(temperature=0, max_tokens=10))
    assert single[0].outputs[0].token_ids == outs[1].outputs[0].token_ids


def test_native_bf16_multiplies_batches_in_bf16(checkpoint):
    if not cpu_has_native_bf16():
        pytest.skip("this CPU does not multiply bf16 natively: batches multiply in float32")
    path = checkpoint("qwen2", dtype=torch.bfloat16)
    llm = LLM(path)
    runner = llm.engine.runner
    down = runner.model.model.layers[0].mlp.down_proj
    # bf16 weights, float32 activations, no float32 copy (the bf16 products are faster), and
    # the KV cache in bf16, as a bf16 model's
    assert down.weight.dtype == torch.bfloat16 and down.wide_weight is None
    assert llm.engine.dtype == torch.float32 and runner.kv_dtype == torch.bfloat16
    prompts = random_prompts(llm.engine.vocab_size, [3, 40, 90])
    params = SamplingParams(temperature=0, max_tokens=8, logprobs=0, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    # about as close to transformers' float32 as transformers computing in bf16 is (here 0.07
    # against 0.08 at most; the factor leaves room for another CPU's order of additions, a
    # wrong product is off by whole units)
    bf16 = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    ours, theirs = [], []
    for prompt, out in zip(prompts, outs, strict=True):
        ours += logprob_gaps(path, prompt, out.outputs[0])
        tokens = out.outputs[0].token_ids
        with torch.inference_mode():
            logits = bf16(torch.tensor([prompt + tokens])).logits[0].float()
        expected = hf_logprobs(path, prompt + tokens)
        got = torch.log_softmax(logits, dim=-1)
        theirs += [abs(float(got[len(prompt) - 1 + i][t] - expected[len(prompt) - 1 + i][t]))
                   for i, t in enumerate(tokens)]
    assert max(ours) <= 1.5 * max(theirs) and sum(ours) <= 1.5 * sum(theirs), (ours, theirs)


@float32_batches
def test_without_a_float32_copy_batches_stay_close(checkpoint):
    path = checkpoint("llama", dtype=torch.bfloat16)
    llm = LLM(path, cpu_float32_copy_gib=0)
    assert llm.engine.runner.model.model.layers[0].mlp.down_proj.wide_weight is None
    prompts = random_prompts(llm.engine.vocab_size, [5 + 3 * i for i in range(12)])
    params = SamplingParams(temperature=0, max_tokens=6, logprobs=0, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    for prompt, out in zip(prompts, outs, strict=True):
        tokens = out.outputs[0].token_ids
        reference = hf_logprobs(path, prompt + tokens)
        for i, (token, entry) in enumerate(zip(tokens, out.outputs[0].logprobs, strict=True)):
            assert entry[token].logprob == pytest.approx(
                float(reference[len(prompt) - 1 + i][token]), abs=0.05
            )


def test_single_row_bf16_products_survive_many_weight_shapes():
    # A long-lived process meets many weight shapes (several models, say); the compiled
    # single-row kernel must keep giving right answers past the compiler's recompile limit.
    from tenshu.engine.layers.linear import linear

    g = torch.Generator().manual_seed(0)
    for n in range(3, 23):  # the engine runs these under inference mode; so does this test
        w = torch.randn(n, 16 + n, generator=g).to(torch.bfloat16)
        x = torch.randn(1, 16 + n, generator=g)
        with torch.inference_mode():
            got = linear(x, w)
        torch.testing.assert_close(got, x @ w.float().T, atol=1e-4, rtol=1e-4)
