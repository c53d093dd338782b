"""Serving GGUF files: `LLM(model="model.gguf")` equals transformers on the dequantized weights,
token for token; the tokenizer and chat template come from the file; bad files are clear errors.

The files are written in fixtures with gguf-py's GGUFWriter (tests/engine/gguf_files.py).
K-quant blocks hold 256 weights a row, so the K-quant models are 256 wide (still tiny).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

from tenshu import LLM, SamplingParams
from tenshu.core.errors import ModelLoadError, UnsupportedModelError
from tenshu.engine import kernels
from tenshu.engine.models.llama import DecodePlan
from tenshu.engine.quant import QuantEmbedding, QuantWeight
from tests.checkpoints import IM_END
from tests.engine.gguf_files import K_MIX, LEGACY_MIX, make_gguf, permute
from tests.engine.reference import hf_greedy, logprob_gaps, random_prompts

WIDE = {"hidden_size": 256, "intermediate_size": 512, "head_dim": 64}
MIXES = {
    "k": (K_MIX, WIDE),
    "legacy": (LEGACY_MIX, {}),
    # a float k between quantized q and v: the fused q/k/v stays float, dequantized exactly
    "float-k": (LEGACY_MIX | {"attn_k": "F16"}, {}),
    # the other legacy types, as llama.cpp's K-quant mixes use them where a row is not a
    # multiple of 256 (a Q5_1 k fused with Q8_0 q and v)
    "legacy-5": (LEGACY_MIX | {"ffn_down": "Q5_0", "attn_k": "Q5_1", "ffn_gate": "Q4_1"}, {}),
}


@pytest.fixture(scope="session")
def gguf_model(checkpoint, tmp_path_factory):
    """gguf_model(family, mix, **kwargs) -> (model.gguf, its dequantized HF checkpoint)."""
    made = {}

    def make(family: str, mix: str, **kwargs):
        key = (family, mix, tuple(sorted(kwargs.items())))
        if key not in made:
            types, shape = MIXES[mix]
            source = checkpoint(family, **shape)
            made[key] = make_gguf(source, tmp_path_factory.mktemp(f"{family}-{mix}"), types,
                                  **kwargs)
        return made[key]

    return make


@pytest.mark.parametrize(("family", "mix"), [
    ("llama", "k"), ("llama", "legacy"), ("qwen3", "k"), ("qwen3", "legacy"), ("qwen2", "float-k"),
    ("llama", "legacy-5"),
])
def test_greedy_matches_transformers_on_the_dequantized_weights(gguf_model, family, mix):
    path, reference = gguf_model(family, mix)
    # float activations: the conversion is exact, so greedy decoding follows the float model
    # token for token (int8 activations, the default, are tested below by their log-probs)
    llm = LLM(str(path), dtype="float32", block_size=16, int8_activations=False)
    model = llm.engine.runner.model
    quantized = [m for m in model.modules() if isinstance(m, QuantWeight)]
    assert quantized, "the weights stay quantized"
    assert isinstance(model.model.embed_tokens, QuantEmbedding) == (mix == "k")
    prompts = random_prompts(llm.engine.vocab_size, [1, 7, 40], seed=3)
    params = SamplingParams(temperature=0, max_tokens=16)
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    for prompt, out in zip(prompts, outputs, strict=True):
        assert out.outputs[0].token_ids == hf_greedy(reference, prompt, 16), len(prompt)


@pytest.mark.parametrize("mix", ["k", "legacy"])
def test_int8_activations_keep_decoding_close_to_the_float_model(gguf_model, mix):
    # llama.cpp's numerics: decode steps and products of up to 64 rows (this 20-token prompt)
    # round activations to int8 per 32 values. On this tiny random model (64-wide: two blocks a row)
    # the sampled tokens' log-probs stay within ~0.03 on average of transformers' on the
    # dequantized weights, 0.11 at most; a wrong scale or code would be off by whole units
    path, reference = gguf_model("qwen3", mix)
    llm = LLM(str(path), dtype="float32")
    quantized = [m for m in llm.engine.runner.model.modules() if isinstance(m, QuantWeight)]
    if kernels.ops() is None or not kernels.ops().has_int8_dot_instructions():
        pytest.skip("no CPU kernels or no integer dot products (AVX2, VNNI) here: decoding keeps float32 activations")
    assert all(m.int8_activations for m in quantized)
    prompt = random_prompts(llm.engine.vocab_size, [20], seed=5)[0]
    params = SamplingParams(temperature=0.8, seed=1, max_tokens=24, logprobs=0, ignore_eos=True)
    out = llm.generate({"prompt_token_ids": prompt}, params)[0].outputs[0]
    gaps = logprob_gaps(reference, prompt, out)
    assert max(gaps) < 0.25 and sum(gaps) / len(gaps) < 0.06, gaps


@pytest.mark.parametrize("model", [
    # GGUF K-quant and legacy mixes: every product on int8 activations
    ("qwen3", "k", 3), ("llama", "legacy", 3),
    # float checkpoints: bf16 weights (bf16_matmul), float32 with Qwen2's q/k/v biases
    ("qwen3", "bfloat16", 3), ("qwen2", "float32", 3),
])
def test_decode_steps_in_one_kernel_call_are_the_layers_own_floats(gguf_model, checkpoint,
                                                                   model):
    # decode_layers runs a decode step's layers in one call (DecodePlan); it makes the calls the
    # layers' Python code makes, so sequences decoded with it and without it give the same
    # tokens and the same log-probs, to the last bit
    family, kind, n = model
    # no prefix caching: the second run must schedule the same steps (a prompt's rows go to
    # bf16_matmul or to the float GEMM by how many there are)
    options = dict(block_size=16, enable_prefix_caching=False)
    if kind in ("bfloat16", "float32"):
        llm = LLM(checkpoint(family, dtype=getattr(torch, kind)), **options)
        assert next(llm.engine.runner.model.parameters()).dtype == getattr(torch, kind)
    else:
        llm = LLM(str(gguf_model(family, kind)[0]), dtype="float32", **options)
    net = llm.engine.runner.model
    if kernels.ops() is None or (kind in ("k", "legacy") and
                                 not kernels.ops().has_int8_dot_instructions()):
        pytest.skip("no CPU kernels, or no integer dot products (AVX2, VNNI), here: no plan")
    prompts = random_prompts(llm.engine.vocab_size, [3, 9, 30][:n], seed=11)
    params = SamplingParams(temperature=0, max_tokens=12, logprobs=3, ignore_eos=True)

    def run():
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
        return [(o.outputs[0].token_ids, [{t: lp.logprob for t, lp in step.items()}
                                          for step in o.outputs[0].logprobs]) for o in outs]

    planned = run()
    if net.compute_dtype != torch.float32:  # a CPU with native bf16 computes a bf16 model in bf16
        assert not isinstance(net.plan, DecodePlan)  # the plan is float32's: the layers serve
        return
    assert isinstance(net.plan, DecodePlan)  # the steps took it
    net.plan = False  # the layers' own code
    assert run() == planned


def test_tokenizer_and_chat_template_come_from_the_file(gguf_model, checkpoint):
    path, _ = gguf_model("qwen3", "legacy")
    llm = LLM(str(path), dtype="float32")
    original = AutoTokenizer.from_pretrained(checkpoint("qwen3"))
    text = "The quick brown fox, café 日本語 🙂 -- 42%!"
    tokenizer = llm.get_tokenizer()
    assert tokenizer.encode(text) == original.encode(text)
    assert tokenizer.decode(original.encode(text)) == text
    conversation = [{"role": "user", "content": "Hello!"}]
    assert llm.engine.apply_chat_template(conversation, True) == original.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert original.convert_tokens_to_ids(IM_END) in llm.engine.eos_token_ids  # eot
    out = llm.chat(conversation, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 4


def test_the_fixture_permutes_q_and_k_as_transformers_expects():
    # transformers' GGUF loader undoes llama.cpp's permutation; it must undo the fixture's
    rows = np.arange(4 * 16 * 3, dtype=np.float32).reshape(4 * 16, 3)
    undone = LlamaTensorProcessor({"num_attention_heads": 4, "num_key_value_heads": 4}).process(
        permute(rows, 4), "blk.0.attn_q.weight").weights
    assert np.array_equal(undone, rows)


def test_a_file_without_a_tokenizer_needs_skip_tokenizer_init(gguf_model):
    path, reference = gguf_model("qwen3", "legacy", tokenizer=False)
    with pytest.raises(ModelLoadError, match="skip_tokenizer_init"):
        LLM(str(path))
    llm = LLM(str(path), dtype="float32", skip_tokenizer_init=True)
    out = llm.generate({"prompt_token_ids": [5, 6, 7]}, SamplingParams(temperature=0, max_tokens=6))
    assert out[0].outputs[0].token_ids == hf_greedy(reference, [5, 6, 7], 6)


def test_a_truncated_file_is_a_clear_error(gguf_model, tmp_path):
    path, _ = gguf_model("qwen3", "legacy")
    data = path.read_bytes()
    for size in (len(data) - 100, 2000, 10):
        cut = tmp_path / f"cut-{size}.gguf"
        cut.write_bytes(data[:size])
        with pytest.raises(ModelLoadError, match="truncated"):
            LLM(str(cut))


def test_an_unsupported_tensor_type_is_named(checkpoint, tmp_path):
    path, _ = make_gguf(checkpoint("qwen3", **WIDE), tmp_path,
                        LEGACY_MIX | {"ffn_down": "Q3_K"}, tokenizer=False, reference=False)
    with pytest.raises(ModelLoadError) as err:
        LLM(str(path), skip_tokenizer_init=True)
    assert "Q3_K" in str(err.value) and "Q4_K" in str(err.value) and "Q5_0" in str(err.value)
    assert "blk.0.ffn_down.weight" in str(err.value)


def test_an_unsupported_architecture_is_named(tmp_path):
    from gguf import GGUFWriter

    path = tmp_path / "gpt2.gguf"
    writer = GGUFWriter(path, "gpt2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedModelError) as err:
        LLM(str(path))
    assert "'gpt2'" in str(err.value) and "qwen3" in str(err.value)


def test_a_quantized_model_is_smaller(gguf_model):
    path, _ = gguf_model("llama", "k")
    model = LLM(str(path), dtype="float32", skip_tokenizer_init=True).engine.runner.model
    weights = [m for m in model.modules() if isinstance(m, QuantWeight)]
    float32_bytes = sum(w.shape[0] * w.shape[1] * 4 for w in weights)
    assert sum(w.nbytes() for w in weights) < float32_bytes / 3  # 8-bit Q6_K, Q8_0 among them
    assert not any(p.dim() == 2 for p in model.parameters())  # no float matrix is left
