"""bf16 weights computed in float32 (dtype="auto" on a CPU without native bf16): every matmul
path (one row, a few rows, many rows; with and without a float32 copy) gives transformers'
float32 results on the same bf16 weights."""

from __future__ import annotations

import pytest
import torch

from tenshu import LLM, SamplingParams
from tenshu.engine.config import cpu_has_native_bf16
from tests.engine.reference import hf_greedy, hf_logprobs, random_prompts

pytestmark = pytest.mark.skipif(
    cpu_has_native_bf16(), reason="this CPU computes bf16 natively; auto keeps bf16"
)


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
