"""The engine's correctness contract: greedy output equals transformers', token for token."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tenshu import LLM, SamplingParams
from tests.conftest import FAMILIES
from tests.engine.reference import hf_greedy, hf_logprobs, logprob_gaps, random_prompts

# 1 to several hundred tokens, block-aligned and not, shared by every scenario below
LENGTHS = [1, 7, 16, 33, 100, 257, 300]
MAX_TOKENS = 12


def _check(llm: LLM, path, prompts, max_tokens: int = MAX_TOKENS):
    params = SamplingParams(temperature=0, max_tokens=max_tokens)
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    for prompt, out in zip(prompts, outputs, strict=True):
        assert out.outputs[0].token_ids == hf_greedy(path, prompt, max_tokens), len(prompt)
    return outputs


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_matches_transformers_cold_and_with_prefix_hits(checkpoint, family):
    path = checkpoint(family)
    llm = LLM(path, dtype="float32", block_size=16)
    prompts = random_prompts(llm.engine.vocab_size, LENGTHS)
    cold = _check(llm, path, prompts)
    assert all(o.num_cached_tokens == 0 for o in cold)
    # the same prompts again, and extensions of them: served from the prefix cache
    tails = random_prompts(llm.engine.vocab_size, [5] * len(prompts), 1)
    longer = [p + q for p, q in zip(prompts, tails, strict=True)]
    warm = _check(llm, path, prompts + longer)
    assert sum(o.num_cached_tokens for o in warm) >= 2 * sum(len(p) // 16 * 16 - 16 for p in prompts)
    assert llm.engine.block_manager.num_free_blocks == llm.engine.block_manager.num_blocks


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_matches_transformers_with_small_prefill_chunks(checkpoint, family):
    path = checkpoint(family)
    llm = LLM(path, dtype="float32", max_num_batched_tokens=24, block_size=8)
    _check(llm, path, random_prompts(llm.engine.vocab_size, LENGTHS, seed=2))


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_greedy_matches_transformers_under_preemption(checkpoint, family):
    path = checkpoint(family)
    # 32 blocks of 8 tokens: every prompt is admitted at once, but they cannot all grow by
    # 40 tokens together, so some are preempted and recomputed
    llm = LLM(path, dtype="float32", block_size=8, num_kv_blocks=32, max_num_seqs=8)
    prompts = random_prompts(llm.engine.vocab_size, [1, 7, 16, 33, 60, 100], seed=3)
    _check(llm, path, prompts, max_tokens=40)
    assert llm.engine.scheduler.num_preemptions > 0
    assert llm.engine.block_manager.num_free_blocks == llm.engine.block_manager.num_blocks


def test_head_dim_and_tied_variants(checkpoint):
    for kwargs in ({"family": "llama", "tied": True}, {"family": "qwen2", "tied": False}):
        path = checkpoint(**kwargs)
        llm = LLM(path, dtype="float32")
        _check(llm, path, random_prompts(llm.engine.vocab_size, [5, 40], seed=4))


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_logprobs_match_transformers_log_softmax(checkpoint, family):
    path = checkpoint(family)
    llm = LLM(path, dtype="float32")
    prompt = random_prompts(llm.engine.vocab_size, [20], seed=5)[0]
    params = SamplingParams(temperature=0.8, seed=1, max_tokens=10, logprobs=5, ignore_eos=True)
    out = llm.generate({"prompt_token_ids": prompt}, params)[0].outputs[0]
    reference = hf_logprobs(path, prompt + out.token_ids)
    for i, (token, entry) in enumerate(zip(out.token_ids, out.logprobs, strict=True)):
        ref = reference[len(prompt) - 1 + i]
        assert entry[token].logprob == pytest.approx(float(ref[token]), abs=1e-4)
        assert entry[token].rank == int((ref > ref[token]).sum()) + 1
        assert entry[token].decoded_token == llm.get_tokenizer().decode([token])
        top = ref.topk(5).indices.tolist()
        assert set(top) <= set(entry)
        for t in top:
            assert entry[t].logprob == pytest.approx(float(ref[t]), abs=1e-4)


@pytest.mark.parametrize("chunk", [512, 24])
def test_prompt_logprobs_match_transformers_chunked_and_after_a_cached_prefix(checkpoint, chunk):
    """vLLM's prompt_logprobs, as evaluation harnesses read them: every prompt token after the
    first, given the ones before it; right across chunked prefill, and for a prompt whose blocks
    are in the prefix cache (it must skip the cache: those logits were never computed)."""
    path = checkpoint("qwen2")
    llm = LLM(path, dtype="float32", block_size=16, max_num_batched_tokens=chunk)
    prompt = random_prompts(llm.engine.vocab_size, [70], seed=9)[0]
    llm.generate({"prompt_token_ids": prompt}, SamplingParams(max_tokens=1))  # now cached
    params = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=3)
    out = llm.generate({"prompt_token_ids": prompt}, params)[0]
    assert out.num_cached_tokens == 0
    assert len(out.prompt_logprobs) == len(prompt) and out.prompt_logprobs[0] is None
    reference = hf_logprobs(path, prompt)
    tokenizer = llm.get_tokenizer()
    for i, entry in enumerate(out.prompt_logprobs[1:], 1):
        token, ref = prompt[i], reference[i - 1]
        assert entry[token].logprob == pytest.approx(float(ref[token]), abs=1e-4)
        assert entry[token].rank == int((ref > ref[token]).sum()) + 1
        assert entry[token].decoded_token == tokenizer.decode([token])
        assert set(ref.topk(3).indices.tolist()) <= set(entry)
    # the first generated token is still the model's greedy choice after the whole prompt
    assert out.outputs[0].token_ids == [int(reference[-1].argmax())]


def test_a_bf16_kv_cache_holds_twice_the_context_and_stays_close(checkpoint):
    # a float32 model with its keys and values stored in bf16: the same budget holds twice the
    # blocks; log-probabilities stay within bf16's rounding of transformers' float32 ones, through
    # a cold prefill, decode steps, and a prefill that reads cached blocks (small chunks)
    path = checkpoint("qwen3")
    budget = dict(dtype="float32", kv_cache_memory_gib=0.001, max_num_batched_tokens=24)
    wide = LLM(path, **budget)
    narrow = LLM(path, kv_cache_dtype="bfloat16", **budget)
    assert narrow.engine.runner.kv_caches[0][0].dtype == torch.bfloat16
    assert narrow.engine.runner.num_blocks // 2 == wide.engine.runner.num_blocks  # floors
    prompt = random_prompts(narrow.engine.vocab_size, [60], seed=6)[0]
    params = SamplingParams(temperature=0.8, seed=1, max_tokens=12, logprobs=1, ignore_eos=True)
    out = narrow.generate({"prompt_token_ids": prompt}, params)[0].outputs[0]
    diffs = logprob_gaps(path, prompt, out)
    assert max(diffs) < 0.05 and sum(diffs) / len(diffs) < 0.01
    with pytest.raises(ValueError, match="kv_cache_dtype must be auto or one of"):
        LLM(path, kv_cache_dtype="fp8")
    with pytest.raises(ValueError, match="float16 KV cache is supported on CUDA only"):
        LLM(path, kv_cache_dtype="float16", device="cpu")


def _resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_cpu_kv_cache_takes_memory_only_as_its_blocks_are_used(checkpoint):
    # a server starts at the size of its weights, not of its cache budget: the cache's pages
    # become resident as blocks are written, and they start zeroed all the same
    path = checkpoint("qwen3")
    probe = LLM(path, device="cpu", num_kv_blocks=1).engine.runner
    block_bytes = probe.kv_bytes_per_token * probe.block_size
    blocks = (1 << 30) // block_bytes  # a 1 GiB cache
    before = _resident_bytes()
    llm = LLM(path, device="cpu", num_kv_blocks=blocks)
    assert _resident_bytes() - before < (1 << 30) // 4
    assert not llm.engine.runner.kv_caches[0][0][:probe.block_size].any()
    _check(llm, path, random_prompts(llm.engine.vocab_size, [40, 300], seed=8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_norm_is_transformers_norm(dtype):
    # bf16, and float32 without the CPU kernels (torch's one-call rms_norm), give the floats
    # transformers' norm does, bit for bit; the kernel adds float32's sum of squares in another
    # order: within a few units in the last place
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    from tenshu.engine import kernels
    from tenshu.engine.layers.norm import RMSNorm

    g = torch.Generator().manual_seed(4)
    kernel = dtype == torch.float32 and kernels.ops() is not None
    # (40, 1024): more than 2^15 values, which the kernel splits between threads
    for size, lead in [(16, (1,)), (128, (3, 16)), (704, (7,)), (1024, (33,)), (3584, (2,)),
                       (1024, (40,)), (128, (0,))]:
        ours, theirs = RMSNorm(size, 1e-6), Qwen3RMSNorm(size, eps=1e-6)
        with torch.no_grad():
            ours.weight.copy_(torch.rand(size, generator=g) + 0.5)
            theirs.weight.copy_(ours.weight)
        x = (torch.randn(*lead, size, generator=g) * 3).to(dtype)
        with torch.no_grad():
            got, expected = ours(x), theirs(x)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        if kernel:
            assert torch.allclose(got, expected, rtol=1e-6, atol=0), (size, lead)
        else:
            assert torch.equal(got, expected), (size, lead)
    # a bf16 checkpoint's weight with float32 rows (the engine's CPU activations): the kernel
    # multiplies by the weight in float32, exactly, as transformers' promotion does; a changed
    # weight is seen at once
    if dtype == torch.float32:
        ours, theirs = RMSNorm(256, 1e-6).to(torch.bfloat16), Qwen3RMSNorm(256, eps=1e-6)
        x = torch.randn(5, 256, generator=g) * 3
        for _ in range(2):
            with torch.no_grad():
                ours.weight.copy_((torch.rand(256, generator=g) + 0.5).to(torch.bfloat16))
                theirs.weight = torch.nn.Parameter(ours.weight.detach().clone())
                got, expected = ours(x), theirs(x)
            assert got.dtype == expected.dtype == torch.float32
            assert torch.allclose(got, expected, rtol=1e-6, atol=0) if kernel else \
                torch.equal(got, expected)
    # with gradients wanted it is torch's composite (the kernel has no backward)
    x = torch.randn(4, 128, dtype=dtype, requires_grad=True)
    RMSNorm(128, 1e-6).to(dtype)(x).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_embeddings_are_transformers_bit_for_bit(checkpoint, dtype):
    # the tables are looked up once a step and the sign of rotate_half is folded into sin:
    # the result must still be transformers' apply_rotary_pos_emb, float for float
    from transformers import AutoConfig
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from tenshu.engine.layers.rotary import RotaryEmbedding

    config = AutoConfig.from_pretrained(checkpoint("qwen3"))
    head_dim, heads, kv_heads = 32, 4, 2
    rotary = RotaryEmbedding(config, head_dim, 512)
    freqs = torch.arange(512, dtype=torch.float)[:, None] * rotary.inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos() * rotary.scaling, emb.sin() * rotary.scaling  # transformers' tables
    g = torch.Generator().manual_seed(9)
    positions = torch.randint(0, 512, (37,), generator=g)
    q = torch.randn(37, heads, head_dim, generator=g).to(dtype)
    k = torch.randn(37, kv_heads, head_dim, generator=g).to(dtype)
    ours = rotary(rotary.tables(positions, dtype), q, k)
    theirs = apply_rotary_pos_emb(q, k, cos[positions].to(dtype), sin[positions].to(dtype),
                                  unsqueeze_dim=1)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
