"""GPTQ and AWQ int4 checkpoints (engine/quant/gptq.py): read exactly, and greedy output equals
transformers on the dequantized float model.

The checkpoints are made here: a tiny random model's Linear weights are quantized to 4-bit
codes, zero points and f16 scales; the dequantized weights, scale * (q - z) in float32, go into
a float reference checkpoint, and the codes are packed, independently of the engine's code,
by the layouts the formats document (gptq.py's docstring: AutoGPTQ's v1 with zero points
stored minus one, GPTQModel's v2, AutoAWQ's GEMM with its [0, 2, 4, 6, 1, 3, 5, 7] order).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tenshu import LLM, SamplingParams
from tenshu.core.errors import UnsupportedModelError
from tenshu.engine.quant import QuantWeight
from tests.checkpoints import make_checkpoint
from tests.engine.reference import hf_greedy, random_prompts

SHAPE = {"hidden_size": 128, "intermediate_size": 256, "head_dim": 32}
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VARIANTS = {  # name -> (quant_method, format, symmetric, group size)
    "gptq-v1-sym": ("gptq", "gptq", True, 32),
    "gptq-v1-asym-g128": ("gptq", "gptq", False, 128),
    "gptq-v2-asym": ("gptq", "gptq_v2", False, 32),
    "awq": ("awq", "gemm", False, 64),
}


def _words(values: torch.Tensor, dim: int, order=range(8)) -> torch.Tensor:
    """4-bit values -> int32 words of eight along `dim`: value i of a word at bits 4i."""
    v = values.to(torch.int64).movedim(dim, -1)
    v = v.reshape(*v.shape[:-1], -1, 8)[..., list(order)]
    word = sum(v[..., i] << (4 * i) for i in range(8))
    word = torch.where(word >= 2**31, word - 2**32, word)  # as int32 bits
    return word.to(torch.int32).movedim(-1, dim)


def _quantize(w: torch.Tensor, sym: bool, group: int):
    """[N, K] floats -> codes [N, K], zero points [N, G], f16 scales [N, G]."""
    n, k = w.shape
    g = w.view(n, k // group, group)
    if sym:
        scales = (g.abs().amax(-1) / 7).half()
        zeros = torch.full(scales.shape, 8)
    else:
        low, high = g.amin(-1), g.amax(-1)
        scales = ((high - low) / 15).half()
        zeros = torch.round(-low / scales.float()).clamp(0, 15).long()
    q = torch.round(g / scales.float().unsqueeze(-1) + zeros.unsqueeze(-1)).clamp(0, 15).long()
    return q.view(n, k), zeros, scales


def _pack(fmt: str, q, zeros, scales, group: int) -> dict[str, torch.Tensor]:
    if fmt == "gemm":  # AWQ: [K, N/8] and [G, N/8], both along the output dim, reordered
        order = (0, 2, 4, 6, 1, 3, 5, 7)
        return {"qweight": _words(q.T, 1, order), "qzeros": _words(zeros.T, 1, order),
                "scales": scales.T.contiguous()}
    stored = zeros - 1 if fmt == "gptq" else zeros  # v1 keeps zero points minus one
    k = q.shape[1]
    return {"qweight": _words(q.T, 0), "qzeros": _words(stored.T & 15, 1),
            "scales": scales.T.contiguous(),
            "g_idx": (torch.arange(k) // group).to(torch.int32)}


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """variant -> (the packed checkpoint, its dequantized float reference, {module: W})."""
    made = {}

    def make(variant: str, family: str = "llama"):
        if (variant, family) in made:
            return made[variant, family]
        method, fmt, sym, group = VARIANTS[variant]
        root = tmp_path_factory.mktemp(f"{variant}-{family}")
        source = make_checkpoint(root / "source", family, **SHAPE)
        tensors = load_file(source / "model.safetensors")
        reference, dequantized = dict(tensors), {}
        out = root / variant
        out.mkdir()
        for name, w in list(tensors.items()):
            module = name.removesuffix(".weight")
            if module.split(".")[-1] not in LINEARS:
                continue
            q, zeros, scales = _quantize(w, sym, group)
            dq = scales.float().repeat_interleave(group, 1) * (q - zeros.repeat_interleave(
                group, 1)).float()
            reference[name] = dequantized[module] = dq
            del tensors[name]
            for part, t in _pack(fmt, q, zeros, scales, group).items():
                tensors[f"{module}.{part}"] = t.contiguous()
        ref_dir = root / "reference"
        shutil.copytree(source, ref_dir)
        save_file(reference, ref_dir / "model.safetensors", metadata={"format": "pt"})
        for f in source.iterdir():
            if f.name != "model.safetensors":
                shutil.copy(f, out / f.name)
        config = json.loads((source / "config.json").read_text())
        config["quantization_config"] = {
            "quant_method": method, "bits": 4, "group_size": group,
            **({"version": fmt, "zero_point": True} if method == "awq" else
               {"checkpoint_format": fmt, "sym": sym, "desc_act": False})}
        (out / "config.json").write_text(json.dumps(config))
        save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
        made[variant, family] = (out, ref_dir, dequantized)
        return made[variant, family]

    return make


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_packed_weights_dequantize_exactly(packed, variant):
    path, _, dequantized = packed(variant)
    model = LLM(str(path), skip_tokenizer_init=True).engine.runner.model
    for i, layer in enumerate(model.model.layers):
        fused = {
            "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
            "self_attn.o_proj": ("self_attn.o_proj",),
            "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
            "mlp.down_proj": ("mlp.down_proj",)}
        for ours, theirs in fused.items():
            weight = layer.get_submodule(ours).weight
            assert isinstance(weight, QuantWeight) and weight.bits == 4
            expected = torch.cat([dequantized[f"model.layers.{i}.{m}"] for m in theirs])
            assert torch.equal(weight.dequantize().view(torch.int32),
                               expected.view(torch.int32))  # bit for bit
    # symmetric GPTQ: one zero point, kept as the offset, so no mins
    sym = VARIANTS[variant][2]
    assert (model.model.layers[0].mlp.down_proj.weight.mins is None) == sym


@pytest.mark.parametrize(("variant", "family"), [
    ("gptq-v1-sym", "llama"), ("gptq-v2-asym", "qwen3"), ("awq", "llama"), ("awq", "qwen2"),
])
def test_greedy_matches_transformers_on_the_dequantized_model(packed, variant, family):
    path, reference, _ = packed(variant, family)
    llm = LLM(str(path), dtype="float32", int8_activations=False)  # exact: see test_gguf
    prompts = random_prompts(llm.engine.vocab_size, [1, 9, 30], seed=4)
    params = SamplingParams(temperature=0, max_tokens=16)
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    for prompt, out in zip(prompts, outputs, strict=True):
        assert out.outputs[0].token_ids == hf_greedy(reference, prompt, 16)


def _edit(path, tmp_path, config=None, tensors=None):
    out = tmp_path / "edited"
    shutil.copytree(path, out)
    if config is not None:
        data = json.loads((out / "config.json").read_text())
        data["quantization_config"].update(config)
        (out / "config.json").write_text(json.dumps(data))
    if tensors is not None:
        save_file(tensors(load_file(out / "model.safetensors")), out / "model.safetensors")
    return out


def test_unsupported_checkpoints_are_clear_errors(packed, tmp_path):
    path, _, _ = packed("gptq-v1-sym")

    def act_order(t):
        name = "model.layers.0.mlp.down_proj.g_idx"
        t[name] = t[name][torch.randperm(len(t[name]), generator=torch.Generator()
                                         .manual_seed(0))].contiguous()
        return t

    with pytest.raises(UnsupportedModelError, match="act-order"):
        LLM(str(_edit(path, tmp_path / "a", tensors=act_order)), skip_tokenizer_init=True)
    with pytest.raises(UnsupportedModelError, match="8 bits is not supported"):
        LLM(str(_edit(path, tmp_path / "b", config={"bits": 8})), skip_tokenizer_init=True)
    with pytest.raises(UnsupportedModelError, match="'marlin' is not supported"):
        LLM(str(_edit(path, tmp_path / "c", config={"checkpoint_format": "marlin"})),
            skip_tokenizer_init=True)
    with pytest.raises(UnsupportedModelError, match="'bitsandbytes' is not supported"):
        LLM(str(_edit(path, tmp_path / "d", config={"quant_method": "bitsandbytes"})),
            skip_tokenizer_init=True)
    with pytest.raises(UnsupportedModelError, match="cannot be quantized again to int4"):
        LLM(str(path), quantization="int4", skip_tokenizer_init=True)
    assert LLM(str(path), quantization="gptq", skip_tokenizer_init=True)  # vLLM's way to say it
