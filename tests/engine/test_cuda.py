"""The same engine on CUDA: greedy output equals transformers' there too. Skipped without a GPU;
on CPU the same code path (SDPA over paged blocks) is what every other test exercises."""

from __future__ import annotations

import pytest
import torch

from tenshu import LLM, SamplingParams
from tests.engine.reference import hf_greedy, random_prompts

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("family", ["llama", "qwen3", "mistral"])
def test_greedy_on_cuda_matches_transformers_on_cpu(checkpoint, family):
    path = checkpoint(family)
    llm = LLM(path, dtype="float32", device="cuda", block_size=16, max_num_batched_tokens=64)
    prompts = random_prompts(llm.engine.vocab_size, [1, 17, 100, 300])
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=12))
    for prompt, out in zip(prompts, outs, strict=True):
        assert out.outputs[0].token_ids == hf_greedy(path, prompt, 12)
    assert llm.engine.block_manager.num_free_blocks == llm.engine.block_manager.num_blocks


def test_bfloat16_and_float16_run_on_cuda(checkpoint):
    for dtype in ("bfloat16", "float16"):
        llm = LLM(checkpoint("qwen3"), dtype=dtype, device="cuda")
        out = llm.generate("Hello", SamplingParams(max_tokens=8, ignore_eos=True, seed=0))
        assert len(out[0].outputs[0].token_ids) == 8
