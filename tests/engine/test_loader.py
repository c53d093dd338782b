"""Loading checkpoint directories: sharded weights, dtypes, tokenizers, and clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tenshu import LLM, SamplingParams
from tenshu.core.errors import ModelLoadError, UnsupportedModelError
from tests.engine.reference import hf_greedy, random_prompts


def test_sharded_checkpoint_loads_and_matches(checkpoint):
    path = checkpoint("qwen2", max_shard_size="40KB")
    assert (path / "model.safetensors.index.json").is_file()
    assert len(list(path.glob("model-*.safetensors"))) > 1
    llm = LLM(path, dtype="float32")
    prompt = random_prompts(llm.engine.vocab_size, [10])[0]
    out = llm.generate({"prompt_token_ids": prompt}, SamplingParams(temperature=0, max_tokens=8))
    assert out[0].outputs[0].token_ids == hf_greedy(path, prompt, 8)


def test_bfloat16_checkpoint_runs_in_bfloat16_when_asked(checkpoint):
    path = checkpoint("llama", dtype=torch.bfloat16)
    llm = LLM(path, dtype="bfloat16")
    assert llm.engine.dtype == torch.bfloat16
    assert llm.engine.runner.model.model.embed_tokens.weight.dtype == torch.bfloat16
    out = llm.generate("Hello", SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 5


def test_float16_is_refused_on_cpu(checkpoint):
    with pytest.raises(ValueError, match="CUDA"):
        LLM(checkpoint("llama"), dtype="float16", device="cpu")


def test_no_tokenizer_needs_skip_tokenizer_init(checkpoint):
    path = checkpoint("mistral", tokenizer=False)
    with pytest.raises(ModelLoadError, match="skip_tokenizer_init"):
        LLM(path)
    llm = LLM(path, skip_tokenizer_init=True, dtype="float32")
    out = llm.generate({"prompt_token_ids": [5, 6, 7]}, SamplingParams(max_tokens=4, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 4 and out[0].outputs[0].text == ""
    with pytest.raises(ValueError, match="prompt_token_ids"):
        llm.generate("text needs a tokenizer")


def test_unsupported_architecture_lists_the_supported_ones(checkpoint, tmp_path):
    path = tmp_path / "gpt2ish"
    shutil.copytree(checkpoint("llama"), path)
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["GPTNeoXForCausalLM"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError) as err:
        LLM(path)
    message = str(err.value)
    assert "GPTNeoXForCausalLM" in message
    for name in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"):
        assert name in message


def test_missing_weights_and_missing_directory_are_clear(checkpoint, tmp_path):
    with pytest.raises(ModelLoadError, match="not a directory"):
        LLM(tmp_path / "nothing-here")
    path = tmp_path / "broken"
    shutil.copytree(checkpoint("qwen3"), path)
    for f in path.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelLoadError, match="safetensors"):
        LLM(path)


def test_chat_applies_the_template(checkpoint):
    llm = LLM(checkpoint("qwen3"), dtype="float32")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    out = llm.chat(messages, SamplingParams(temperature=0, max_tokens=4))[0]
    expected = llm.get_tokenizer().apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert llm.get_tokenizer().decode(out.prompt_token_ids) == expected
    assert expected.endswith("<|im_start|>assistant\n")
