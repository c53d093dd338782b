"""Quantization on load (engine/quant/quantize.py) and its cache (engine/quant/cache.py):
`LLM(model=dir, quantization="int8" | "int4")` on a float checkpoint.

The tolerances are on the log-probability the model gives each prompt token, against
transformers on the float checkpoint. The tiny random models (tests/checkpoints.py, weights of
std 0.2) amplify weight noise far more than trained models do; measured over one 40-token
prompt: int8 (symmetric, groups of 32) up to 0.18 (llama) and 0.12 (qwen3), int4 (asymmetric,
groups of 32) up to 1.9 and 0.9. The bounds below leave about 2x of room.
"""

from __future__ import annotations

import logging

import pytest
import torch

from tenshu import LLM, SamplingParams
from tenshu.core.errors import UnsupportedModelError
from tenshu.engine.quant import QuantWeight, cache, quantize
from tests.checkpoints import make_checkpoint
from tests.engine.reference import hf_logprobs, random_prompts

TOLERANCE = {"int8": (0.4, 0.08), "int4": (4.0, 0.8)}  # max and mean |delta logprob|


@pytest.fixture(scope="module")
def float_checkpoint(tmp_path_factory):
    """family -> a float checkpoint of this module's own (its cache must start empty)."""
    made = {}

    def make(family: str):
        if family not in made:
            made[family] = make_checkpoint(tmp_path_factory.mktemp(f"{family}-q"), family)
        return made[family]

    return make


def _prompt_logprobs(llm: LLM, prompt: list[int]) -> list[float]:
    params = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=0)
    out = llm.generate([{"prompt_token_ids": prompt}], params)[0]
    return [entry[token].logprob for token, entry in zip(prompt[1:], out.prompt_logprobs[1:],
                                                         strict=True)]


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_quantized_weights_are_within_half_a_step(method):
    w = torch.randn(48, 256, generator=torch.Generator().manual_seed(0))
    w[3, 40] = 25.0  # an outlier costs precision in its own group of 32 only
    qw = quantize.quantize(w, method)
    groups = w.view(48, 8, 32)
    step = groups.abs().amax(-1) / 127 if method == "int8" else \
        (groups.amax(-1) - groups.amin(-1)) / 15
    err = (qw.dequantize() - w).abs().view(48, 8, 32)
    assert (err <= step.unsqueeze(-1) / 2 * (1 + 1e-5) + 1e-6).all()
    assert 8 * qw.nbytes() / w.numel() == {"int8": 9, "int4": 6}[method]  # bits a weight
    assert quantize.quantize(torch.zeros(2, 32), method).dequantize().eq(0).all()


@pytest.mark.parametrize("family", ["llama", "qwen3"])
@pytest.mark.parametrize("method", ["int8", "int4"])
def test_logprobs_stay_close_to_the_float_model(float_checkpoint, family, method):
    path = float_checkpoint(family)
    llm = LLM(str(path), quantization=method, dtype="float32")
    model = llm.engine.runner.model
    linears = [m.weight for layer in model.model.layers
               for m in (layer.self_attn.qkv_proj, layer.self_attn.o_proj,
                         layer.mlp.gate_up_proj, layer.mlp.down_proj)]
    assert all(isinstance(w, QuantWeight) and w.bits == int(method[3:]) for w in linears)
    assert isinstance(model.model.embed_tokens.weight, torch.Tensor)  # stays float
    prompt = random_prompts(llm.engine.vocab_size, [40], seed=1)[0]
    reference = hf_logprobs(path, prompt)
    ours = torch.tensor(_prompt_logprobs(llm, prompt))
    expected = torch.tensor([float(reference[i, t]) for i, t in enumerate(prompt[1:])])
    worst, mean = TOLERANCE[method]
    assert (ours - expected).abs().max() <= worst
    assert (ours - expected).abs().mean() <= mean


def test_quantized_model_takes_a_fraction_of_the_float_bytes(float_checkpoint):
    path = float_checkpoint("llama")

    def layer_bytes(llm):
        layers = llm.engine.runner.model.model.layers
        return sum(t.numel() * t.element_size()
                   for t in [*layers.parameters(), *layers.buffers()])

    float_bytes = layer_bytes(LLM(str(path), dtype="float32"))
    for method, bits in (("int8", 9), ("int4", 6)):
        # the decoder layers are all Linear weights but for the (float) norms
        assert layer_bytes(LLM(str(path), quantization=method, dtype="float32")) < \
            float_bytes * (bits + 0.5) / 32


def test_cache_is_written_then_read_without_quantizing(tmp_path, monkeypatch):
    path = make_checkpoint(tmp_path / "m", "qwen3")
    prompt = random_prompts(500, [12], seed=2)[0]
    first = _prompt_logprobs(LLM(str(path), quantization="int4"), prompt)
    files = list((path / cache.DIR_NAME).iterdir())
    assert len(files) == 1 and files[0].name.startswith("int4-")

    def refuse(*args):
        raise AssertionError("quantized again instead of reading the cache")

    monkeypatch.setattr(quantize, "quantize", refuse)
    assert _prompt_logprobs(LLM(str(path), quantization="int4"), prompt) == first
    with pytest.raises(AssertionError, match="quantized again"):
        LLM(str(path), quantization="int8")  # another method: another cache


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other model"])
def test_a_corrupt_cache_is_ignored_and_rebuilt(tmp_path, monkeypatch, caplog, damage):
    path = make_checkpoint(tmp_path / "m", "llama")
    prompt = random_prompts(500, [12], seed=3)[0]
    first = _prompt_logprobs(LLM(str(path), quantization="int8"), prompt)
    (file,) = (path / cache.DIR_NAME).iterdir()
    data = file.read_bytes()
    if damage == "truncated":
        file.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        file.write_bytes(b"\x00\x01not safetensors" * 100)
    else:  # a valid file whose weights fit another model
        other = make_checkpoint(tmp_path / "o", "qwen3")
        LLM(str(other), quantization="int8")
        file.write_bytes(next((other / cache.DIR_NAME).iterdir()).read_bytes())
    calls = []
    real = quantize.quantize
    monkeypatch.setattr(quantize, "quantize", lambda *a: calls.append(1) or real(*a))
    with caplog.at_level(logging.WARNING, logger="tenshu.engine.quant.cache"):
        assert _prompt_logprobs(LLM(str(path), quantization="int8"), prompt) == first
    assert calls and "ignoring the unreadable quantization cache" in caplog.text
    assert file.read_bytes() == data  # rebuilt, whole


def test_an_unwritable_model_directory_caches_in_the_fallback(tmp_path, monkeypatch, caplog):
    path = make_checkpoint(tmp_path / "m", "qwen3")
    (path / cache.DIR_NAME).write_text("")  # a file where the cache directory would go
    fallback = tmp_path / "home" / "cache"
    LLM(str(path), quantization="int8", quantization_cache_dir=str(fallback))
    (file,) = fallback.iterdir()
    assert file.name.startswith("m-") and "int8-" in file.name
    monkeypatch.setattr(quantize, "quantize", lambda *a: pytest.fail("not read from the cache"))
    LLM(str(path), quantization="int8", quantization_cache_dir=str(fallback))
    with caplog.at_level(logging.WARNING):  # no fallback: it works, uncached, and says so
        monkeypatch.undo()
        LLM(str(path), quantization="int8")
    assert "could not be cached" in caplog.text


def test_bad_quantization_settings_are_clear_errors(float_checkpoint):
    with pytest.raises(ValueError, match="quantization must be one of int8, int4, gptq, awq"):
        LLM(str(float_checkpoint("qwen3")), quantization="int3")
    with pytest.raises(UnsupportedModelError, match="needs a gptq checkpoint"):
        LLM(str(float_checkpoint("qwen3")), quantization="gptq")
