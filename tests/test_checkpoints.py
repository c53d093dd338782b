"""The checkpoint factory writes what transformers itself loads back and runs."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.checkpoints import FAMILIES, IM_END, make_checkpoint, make_tokenizer


def test_tokenizer_round_trip_and_chat_template(tmp_path):
    make_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tok) == 512
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2)
    for text in ["é", "ü", "日本語", "🙂"]:
        ids = tok.encode(text)
        assert len(ids) > 1 and all("\ufffd" in tok.decode([i]) for i in ids)  # split mid-char
        assert tok.decode(ids) == text
    assert tok.convert_ids_to_tokens(tok.encode("the clock")) == [
        "t",
        "he",
        "Ġclock",
    ]  # space first

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tok.decode(tok.encode(prompt), skip_special_tokens=True) == (
        "system\nBe brief.\nuser\nHi!\nassistant\n"
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_family_loads_and_generates(tmp_path, family):
    make_checkpoint(tmp_path, family)
    config = json.loads((tmp_path / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert model.dtype == torch.float32
    assert model.generation_config.eos_token_id == [tok.convert_tokens_to_ids(IM_END), 1]

    weights = dict(model.named_parameters())
    if family == "llama":
        assert config["rope_parameters"]["rope_type"] == "llama3"
        assert model.model.rotary_emb.rope_type == "llama3"
    elif family == "qwen2":
        assert all(
            weights[f"model.layers.0.self_attn.{p}_proj.bias"].abs().min() > 0 for p in "qkv"
        )
    elif family == "qwen3":
        assert config["head_dim"] == 32 and weights[
            "model.layers.0.self_attn.q_proj.weight"
        ].shape == (128, 64)
        assert not torch.allclose(weights["model.layers.0.self_attn.q_norm.weight"], torch.ones(32))
    elif family == "mistral":
        assert config["sliding_window"] == 48

    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Tell me a story."}],
        add_generation_prompt=True,
        return_tensors="pt",
    )["input_ids"]
    out = model.generate(prompt, max_new_tokens=16, min_new_tokens=16, do_sample=False)
    new = out[0, prompt.shape[1] :].tolist()
    assert len(new) == 16 and len(set(new)) > 4  # no collapse into one repeated token


def test_mistral_sliding_window_masks_keys_older_than_window(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(
        make_checkpoint(tmp_path, "mistral", num_hidden_layers=1, tokenizer=False)
    )
    ids = torch.randint(5, 512, (1, 60), generator=torch.Generator().manual_seed(0))
    last = model(ids).logits[0, -1]
    for pos, inside in [(59 - 48, False), (59 - 47, True)]:  # query 59 sees keys 12..59
        changed = ids.clone()
        changed[0, pos] = (changed[0, pos] + 1) % 512
        assert torch.equal(model(changed).logits[0, -1], last) != inside


def test_sharding_dtype_tying_and_determinism(tmp_path):
    a = make_checkpoint(
        tmp_path / "a",
        "qwen3",
        dtype=torch.bfloat16,
        tied=False,
        tokenizer=False,
        max_shard_size="20KB",
    )
    index = json.loads((a / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((a / s).exists() for s in shards)
    assert "lm_head.weight" in index["weight_map"]
    assert not list(a.glob("tokenizer*")) and not (a / "chat_template.jinja").exists()

    b = make_checkpoint(tmp_path / "b", "qwen3", dtype=torch.bfloat16, tied=False)
    c = make_checkpoint(tmp_path / "c", "qwen3", dtype=torch.bfloat16, tied=False, seed=1)
    models = [AutoModelForCausalLM.from_pretrained(d) for d in (a, b, c)]
    assert all(m.dtype == torch.bfloat16 for m in models)
    states = [m.state_dict() for m in models]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not torch.equal(states[0]["lm_head.weight"], states[2]["lm_head.weight"])

    make_checkpoint(tmp_path / "tied", "llama", tied=True, tokenizer=False)
    assert json.loads((tmp_path / "tied" / "config.json").read_text())["tie_word_embeddings"]
