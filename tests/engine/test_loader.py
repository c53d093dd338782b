"""Loading checkpoint directories: sharded weights, dtypes, tokenizers, and clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

from tenshu import LLM, SamplingParams
from tenshu.config import DEFAULT_MODEL_DIR
from tenshu.core.errors import ModelLoadError, UnsupportedModelError
from tenshu.engine.loader import PlainConfig, load_config, load_tokenizer, plain_llama_config
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


DROP = "(dropped)"


def _edited_default_model(tmp_path, **edits):
    """A copy of the built-in model (a plain Llama config.json), its config edited (a field
    given as DROP is taken out)."""
    path = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, path)
    config = json.loads((path / "config.json").read_text())
    for key, value in edits.items():
        if value == DROP:
            config.pop(key)
        else:
            config[key] = value
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("edits", [
    {},
    {"eos_token_id": [2, 3], "bos_token_id": 1, "pad_token_id": None},
    {"dtype": "float32", "tie_word_embeddings": False, "num_key_value_heads": 8},
    {"rope_parameters": {"rope_type": "default", "rope_theta": 5e5}, "attention_dropout": 0},
])
def test_a_plain_llama_config_is_read_as_transformers_reads_it(tmp_path, edits):
    # The engine reads such a config.json itself (transformers' config classes import
    # torch._dynamo, seconds of a server's start): every field, and what the engine asks for
    # besides, must hold what LlamaConfig holds, and the tokenizer be AutoTokenizer's.
    path = _edited_default_model(tmp_path, **edits)
    plain = load_config(path)
    assert isinstance(plain, PlainConfig)
    reference = AutoConfig.from_pretrained(path, local_files_only=True)
    fields = json.loads((path / "config.json").read_text()).keys() | {
        "sliding_window", "layer_types", "quantization_config", "_name_or_path"}
    for field in fields:
        assert getattr(plain, field, None) == getattr(reference, field, None), field
    tokenizer = load_tokenizer(path, plain)
    expected = AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert type(tokenizer) is type(expected)
    assert tokenizer.init_kwargs == expected.init_kwargs
    assert tokenizer._tokenizer.to_str() == expected._tokenizer.to_str()
    text = "<|im_start|>user\nHello, naïve café!<|im_end|>\n"
    assert tokenizer(text)["input_ids"] == expected(text)["input_ids"]


@pytest.mark.parametrize("edits", [
    {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}},
    {"hidden_act": "gelu"},
    {"head_dim": DROP},  # a missing field: transformers' default and derivations apply
    {"vocab_size": 2048.0},  # transformers refuses it, with its own error
    {"hidden_size": 250},  # not a multiple of the heads: refused too
    {"initializer_range": 2.0},
    {"quantization_config": {"quant_method": "gptq", "bits": 4}},
    {"model_type": "mistral"},
])
def test_other_configs_go_through_transformers(tmp_path, edits):
    assert plain_llama_config(_edited_default_model(tmp_path, **edits)) is None


def test_the_built_in_model_matches_transformers_greedy():
    llm = LLM(str(DEFAULT_MODEL_DIR), dtype="float32", kv_cache_memory_gib=0.25)
    assert isinstance(llm.engine.hf_config, PlainConfig)
    prompt = random_prompts(llm.engine.vocab_size, [12])[0]
    out = llm.generate({"prompt_token_ids": prompt}, SamplingParams(temperature=0, max_tokens=8))
    assert out[0].outputs[0].token_ids == hf_greedy(DEFAULT_MODEL_DIR, prompt, 8)


def test_loading_the_built_in_model_imports_neither_dynamo_nor_every_model_family():
    # torch._dynamo (with sympy) and transformers.models (which lists every model family's
    # files) are imported by transformers' config and Auto classes and by meta-tensor kernels:
    # seconds of `tenshu serve`'s start that loading the default model does not need.
    code = ("import sys; from tenshu import LLM; from tenshu.config import DEFAULT_MODEL_DIR; "
            "LLM(str(DEFAULT_MODEL_DIR), kv_cache_memory_gib=0.25); "
            "print(sorted({'torch._dynamo', 'sympy', 'transformers.models'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
