"""LoRA adapters in the engine, held to transformers + peft on the same adapter: greedy output
equal token for token for every family, alone and in a batch that mixes the base model and two
adapters; prefix-cache blocks never shared across adapters; and adapters that cannot be used
refused with a clear error, with nothing loaded."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tenshu import LLM, LoRARequest, SamplingParams
from tenshu.engine.lora import LoRAError
from tests.conftest import FAMILIES
from tests.engine.reference import hf_greedy, random_prompts

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MAX_TOKENS = 10


def make_adapter(base, out, *, seed: int, targets=TARGETS, rank: int = 4, **options):
    """A PEFT LoRA adapter for `base` with random (non-zero) A and B, saved into `out`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets,
                        init_lora_weights=False, task_type="CAUSAL_LM", **options)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # big enough to change greedy choices on a random model
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(4.0)
    peft_model.save_pretrained(out)
    return out


@functools.lru_cache(maxsize=16)
def _peft(base, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter).eval()


@torch.inference_mode()
def peft_greedy(base, adapter, prompt: list[int], max_new_tokens: int = MAX_TOKENS):
    model = _peft(str(base), str(adapter))
    out = model.generate(input_ids=torch.tensor([prompt]),
                         attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, len(prompt):].tolist()


def greedy(llm, prompts, loras):
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, lora_request=loras)
    return [o.outputs[0].token_ids for o in outs]


@pytest.mark.parametrize("family", FAMILIES)
def test_adapters_match_peft_alone_and_mixed_with_the_base_in_one_batch(checkpoint, family,
                                                                        tmp_path):
    base = checkpoint(family)
    a = LoRARequest("a", 1, str(make_adapter(base, tmp_path / "a", seed=1)))
    b = LoRARequest("b", 2, str(make_adapter(base, tmp_path / "b", seed=2,
                                             targets=["q_proj", "v_proj", "down_proj"])))
    llm = LLM(base, dtype="float32", block_size=8, enable_lora=True, max_loras=2)
    prompts = random_prompts(llm.engine.vocab_size, [5, 17, 33, 9], seed=11)
    mixed = greedy(llm, prompts, [None, a, b, a])
    expected = [hf_greedy(base, prompts[0], MAX_TOKENS),
                peft_greedy(base, a.lora_path, prompts[1]),
                peft_greedy(base, b.lora_path, prompts[2]),
                peft_greedy(base, a.lora_path, prompts[3])]
    assert mixed == expected
    alone = [greedy(llm, [p], [lora])[0] for p, lora in zip(prompts, [None, a, b, a],
                                                               strict=True)]
    assert alone == mixed
    assert mixed[1] != hf_greedy(base, prompts[1], MAX_TOKENS)  # the adapter changed the answer


@torch.inference_mode()
def peft_logprobs(base, adapter, prompt: list[int], tokens: list[int]) -> list[float]:
    """transformers + peft's log-probability of each of `tokens` after `prompt`."""
    model = _peft(str(base), str(adapter))
    ids = torch.tensor([prompt + tokens])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float().log_softmax(-1)
    return logits.gather(1, torch.tensor(tokens)[:, None])[:, 0].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_an_adapters_logprobs_match_peft_within_1e_4(checkpoint, family, tmp_path):
    """Beyond the same greedy tokens: the same probabilities, to 1e-4 in float32 (what is left
    is the order of float additions), for a request mixed in a batch with the base model."""
    base = checkpoint(family)
    a = LoRARequest("a", 1, str(make_adapter(base, tmp_path / "a", seed=4)))
    llm = LLM(base, dtype="float32", block_size=8, enable_lora=True)
    prompts = random_prompts(llm.engine.vocab_size, [12, 21], seed=13)
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, logprobs=1)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                        lora_request=[None, a])
    answer = outs[1].outputs[0]
    ours = [step[token].logprob for step, token in zip(answer.logprobs, answer.token_ids,
                                                       strict=True)]
    theirs = peft_logprobs(base, a.lora_path, prompts[1], list(answer.token_ids))
    assert max(abs(x - y) for x, y in zip(ours, theirs, strict=True)) < 1e-4, (ours, theirs)


def test_the_prefix_cache_is_never_shared_across_adapters(checkpoint, tmp_path):
    base = checkpoint("qwen3")
    a = LoRARequest("a", 1, str(make_adapter(base, tmp_path / "a", seed=3)))
    llm = LLM(base, dtype="float32", block_size=8, enable_lora=True)
    prompt = random_prompts(llm.engine.vocab_size, [40], seed=5)[0]
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS)
    llm.generate({"prompt_token_ids": prompt}, params)  # the base model caches its blocks
    first = llm.generate({"prompt_token_ids": prompt}, params, lora_request=a)[0]
    assert first.num_cached_tokens == 0
    assert first.outputs[0].token_ids == peft_greedy(base, a.lora_path, prompt)
    again = llm.generate({"prompt_token_ids": prompt}, params, lora_request=a)[0]
    assert again.num_cached_tokens > 0  # its own blocks are shared with itself
    assert again.outputs[0].token_ids == first.outputs[0].token_ids


def test_rslora_scaling_matches_peft(checkpoint, tmp_path):
    base = checkpoint("llama")
    a = LoRARequest("rs", 1, str(make_adapter(base, tmp_path / "rs", seed=4, rank=8,
                                              use_rslora=True)))
    llm = LLM(base, dtype="float32", enable_lora=True, max_lora_rank=8)
    prompt = random_prompts(llm.engine.vocab_size, [12], seed=6)[0]
    assert greedy(llm, [prompt], a)[0] == peft_greedy(base, a.lora_path, prompt)


def _corrupt(folder, change) -> None:
    tensors = load_file(folder / "adapter_model.safetensors")
    change(tensors)
    save_file(tensors, folder / "adapter_model.safetensors")


def test_adapters_that_cannot_be_used_are_refused_and_nothing_loads(checkpoint, tmp_path):
    base = checkpoint("qwen2")
    llm = LLM(base, dtype="float32", enable_lora=True, max_lora_rank=8)
    prompt = {"prompt_token_ids": [10, 11, 12]}
    other = make_adapter(checkpoint("qwen2", hidden_size=96), tmp_path / "other", seed=1)
    wide = make_adapter(base, tmp_path / "wide", seed=1, rank=16)
    dora = make_adapter(base, tmp_path / "dora", seed=1, use_dora=True)
    nan = make_adapter(base, tmp_path / "nan", seed=1)
    _corrupt(nan, lambda t: next(v for k, v in t.items() if "lora_B" in k).fill_(float("nan")))
    deep = make_adapter(checkpoint("qwen2", num_hidden_layers=3), tmp_path / "deep", seed=1)
    cases = [(other, "another base model"), (wide, "above max_lora_rank 8"),
             (dora, "DoRA adapters are not supported"), (nan, "non-finite"),
             (deep, "does not exist in this model"), (tmp_path / "missing", "is missing")]
    for i, (folder, why) in enumerate(cases, start=1):
        with pytest.raises(LoRAError, match=why):
            llm.generate(prompt, SamplingParams(max_tokens=2),
                         lora_request=LoRARequest(f"bad{i}", i, str(folder)))
    assert not llm.engine.loras.loaded and not llm.engine.has_unfinished_requests()
    config = json.loads((other / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"  # what was refused was a real PEFT adapter
    plain = LLM(base, dtype="float32")
    with pytest.raises(LoRAError, match="without enable_lora=True"):
        plain.generate(prompt, lora_request=LoRARequest("a", 1, str(nan)))


def test_max_loras_bounds_the_adapters_held_and_frees_idle_ones(checkpoint, tmp_path):
    base = checkpoint("llama")
    a = LoRARequest("a", 1, str(make_adapter(base, tmp_path / "a", seed=1)))
    b = LoRARequest("b", 2, str(make_adapter(base, tmp_path / "b", seed=2)))
    llm = LLM(base, dtype="float32", enable_lora=True, max_loras=1)
    prompts = random_prompts(llm.engine.vocab_size, [6, 6], seed=8)
    with pytest.raises(LoRAError, match="in use already"):
        greedy(llm, prompts, [a, b])  # both at once: only one may be held
    assert not llm.engine.has_unfinished_requests()  # nothing half-submitted stays
    assert greedy(llm, prompts[:1], a)[0] == peft_greedy(base, a.lora_path, prompts[0])
    assert greedy(llm, prompts[1:], b)[0] == peft_greedy(base, b.lora_path, prompts[1])
    assert list(llm.engine.loras.loaded) == [2]  # a, idle, gave its place to b
    with pytest.raises(LoRAError, match="lora_int_id 2 is 'b'"):
        greedy(llm, prompts[:1], LoRARequest("a", 2, a.lora_path))


async def test_the_serving_engine_streams_an_adapters_answer(checkpoint, tmp_path):
    from tenshu import AsyncEngine, EngineConfig

    base = checkpoint("qwen3")
    a = LoRARequest("a", 1, str(make_adapter(base, tmp_path / "a", seed=9)))
    engine = AsyncEngine(EngineConfig(model=str(base), dtype="float32", enable_lora=True))
    try:
        prompt = random_prompts(engine.engine.vocab_size, [14], seed=12)[0]
        params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS)
        outs = [o async for o in engine.generate("r1", {"prompt_token_ids": prompt}, params, a)]
        assert outs[-1].outputs[0].token_ids == peft_greedy(base, a.lora_path, prompt)
        with pytest.raises(LoRAError, match="is missing"):
            async for _ in engine.generate("r2", {"prompt_token_ids": prompt}, params,
                                           LoRARequest("b", 2, str(tmp_path / "none"))):
                pass
    finally:
        engine.shutdown()
