"""Loads a GGUF file (llama.cpp's single-file format) into the engine's Llama-family model.

The file is read with gguf-py's GGUFReader; the config is built here from the metadata (for the
keys transformers' GGUF reader misses: Qwen3's `attention.key_length`, llama3 rope scaling kept
as the `rope_freqs` tensor); the tokenizer and chat template come from transformers'
`gguf_file=` support. Float tensors are copied into the model as a safetensors checkpoint's
are; quantized ones replace the Linear's (or the embedding's) weight with a QuantWeight, so the
model stays one graph. llama.cpp permutes the rows of the `llama` architecture's q and k
weights when it converts (for its rope kernel); they are permuted back. qwen2 and qwen3 are
converted unpermuted (as transformers' GGUF loader also assumes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gguf import GGUFReader
from transformers import AutoConfig, AutoTokenizer

from tenshu.core.errors import ModelLoadError, UnsupportedModelError
from tenshu.engine.config import EngineConfig
from tenshu.engine.loader import LoadedModel, _copy, _shard_range, _target, context_length
from tenshu.engine.models import build_model
from tenshu.engine.models.llama import LlamaForCausalLM
from tenshu.engine.quant.ggml import CONVERTERS, convert
from tenshu.engine.quant.load import drop_weight, install_weight
from tenshu.engine.quant.weight import QuantWeight

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "qwen3": "Qwen3ForCausalLM"}

# GGUF tensor name (after "blk.N.") -> the Hugging Face checkpoint's name within a layer
_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
              "output": "lm_head"}


def open_gguf(path: Path) -> GGUFReader:
    try:
        return GGUFReader(path)
    except (ValueError, IndexError, KeyError, OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path} is not a readable GGUF file (truncated or corrupt?): "
                             f"{exc}") from exc


def _meta(reader: GGUFReader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def hf_name(name: str) -> str | None:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`; None for a tensor
    the engine computes itself (rope_freqs)."""
    parts = name.split(".")
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _TOP_NAMES:
        return f"{_TOP_NAMES[parts[0]]}.{parts[1]}"
    if name == "rope_freqs.weight":
        return None
    raise ModelLoadError(f"unexpected GGUF tensor {name}")


def gguf_config(reader: GGUFReader):
    """A transformers config for the file's architecture, from its metadata."""
    arch = _meta(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise UnsupportedModelError(f"GGUF architecture {arch!r} is not supported; supported: "
                                    f"{', '.join(ARCHITECTURES)}")
    names = {t.name: t for t in reader.tensors}

    def get(key, default=None):
        value = _meta(reader, f"{arch}.{key}", default)
        if value is None:
            raise ModelLoadError(f"GGUF metadata has no {arch}.{key}")
        return value

    heads = get("attention.head_count")
    hidden = get("embedding_length")
    rope = {"rope_type": "default", "rope_theta": float(get("rope.freq_base", 10000.0))}
    scaling = _meta(reader, f"{arch}.rope.scaling.type", "none")
    if scaling in ("linear", "yarn"):
        rope.update(rope_type=scaling, factor=float(get("rope.scaling.factor")))
        if scaling == "yarn":
            rope["original_max_position_embeddings"] = int(
                get("rope.scaling.original_context_length"))
    elif scaling != "none":
        raise UnsupportedModelError(f"GGUF rope scaling {scaling!r} is not supported")
    if "token_embd.weight" not in names:
        raise ModelLoadError("GGUF file has no token_embd.weight")
    return AutoConfig.for_model(
        arch,
        architectures=[ARCHITECTURES[arch]],
        vocab_size=int(names["token_embd.weight"].shape[1]),  # ggml order: [hidden, vocab]
        hidden_size=hidden,
        intermediate_size=get("feed_forward_length"),
        num_hidden_layers=get("block_count"),
        num_attention_heads=heads,
        num_key_value_heads=get("attention.head_count_kv", heads),
        head_dim=get("attention.key_length", hidden // heads),
        max_position_embeddings=get("context_length"),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        rope_parameters=rope,
        tie_word_embeddings="output.weight" not in names,
        attention_bias="blk.0.attn_output.bias" in names or (
            arch != "qwen2" and "blk.0.attn_q.bias" in names),
        mlp_bias="blk.0.ffn_gate.bias" in names,
        bos_token_id=_meta(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_meta(reader, "tokenizer.ggml.eos_token_id"),
        pad_token_id=_meta(reader, "tokenizer.ggml.padding_token_id"),
    )


def _unpermute(rows: int, heads: int) -> torch.Tensor:
    """The row order that undoes llama.cpp's q/k permutation (convert_hf_to_gguf's `permute`
    interleaves each head's two rotary halves: its rows (2, d/2) are written as (d/2, 2))."""
    return torch.arange(rows).view(heads, rows // heads // 2, 2).transpose(1, 2).reshape(-1)


def _check_type(tensor) -> str:
    kind = tensor.tensor_type.name
    if kind not in CONVERTERS:
        raise ModelLoadError(f"{tensor.name}: GGML type {kind} is not supported; supported: "
                             f"{', '.join(CONVERTERS)}")
    return kind


def read_tensor(tensor) -> torch.Tensor | QuantWeight:
    """One GGUF tensor -> a float tensor in its GGUF dtype, or a QuantWeight."""
    kind = _check_type(tensor)
    shape = [int(n) for n in reversed(tensor.shape)]  # torch order: [rows, columns]
    rows = shape[0] if len(shape) == 2 else 1
    raw = np.ascontiguousarray(tensor.data).view(np.uint8).reshape(rows, -1)
    value = convert(kind, torch.from_numpy(raw.copy()))  # a copy: the memmap is read-only
    return value if isinstance(value, QuantWeight) else value.reshape(shape)


_FLOAT_TYPES = ("F32", "F16", "BF16")


def _targets(model: LlamaForCausalLM, reader: GGUFReader) -> dict[str, tuple[str, int | None]]:
    """GGUF tensor name -> (the model's parameter, which shard of it); rope_freqs has none."""
    out = {}
    for tensor in reader.tensors:
        _check_type(tensor)  # before any memory is allocated
        if (name := hf_name(tensor.name)) is not None:
            out[tensor.name] = _target(model, name)
    return out


def _quantized(reader: GGUFReader, targets) -> set[str]:
    """Parameters whose parts are all quantized: they become QuantWeights. One that mixes
    float and quantized parts stays float (its quantized parts dequantized, exactly)."""
    kinds: dict[str, set[bool]] = {}
    for tensor in reader.tensors:
        if tensor.name in targets:
            kinds.setdefault(targets[tensor.name][0], set()).add(
                tensor.tensor_type.name not in _FLOAT_TYPES)
    return {target for target, k in kinds.items() if k == {True}}


def load_gguf_weights(model: LlamaForCausalLM, reader: GGUFReader, device,
                      weight_dtype: torch.dtype) -> None:
    """Allocate the model on `device` and fill it: float tensors into its parameters (fused
    q/k/v and gate/up by shard, as loader.py does), quantized ones installed as QuantWeights
    (fused parts concatenated by rows)."""
    cfg = model.config
    permute = {"q_proj": cfg.num_attention_heads, "k_proj": cfg.num_key_value_heads} \
        if cfg.model_type == "llama" else {}
    targets = _targets(model, reader)
    quantized = _quantized(reader, targets)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    shards: dict[str, set[int | None]] = {}
    for fused, shard in model.stacked_params.values():
        shards.setdefault(fused, set()).add(shard)
    expected = {(name, s) for name in shapes for s in shards.get(name.split(".")[-2], {None})}
    for target in quantized:
        drop_weight(model, target)
    model.to(weight_dtype).to_empty(device=device)
    params = dict(model.named_parameters())
    pending: dict[str, dict[int | None, QuantWeight]] = {}
    loaded: set[tuple[str, int | None]] = set()
    for tensor in reader.tensors:
        if tensor.name not in targets:
            continue
        target, shard = targets[tensor.name]
        if (target, shard) not in expected:
            raise ModelLoadError(f"{tensor.name}: no place for it in this model")
        value = read_tensor(tensor)
        if (heads := permute.get(hf_name(tensor.name).split(".")[-2])) is not None:
            index = _unpermute(value.shape[0], heads)
            value = value.take_rows(index) if isinstance(value, QuantWeight) else value[index]
        if target in quantized:
            pending.setdefault(target, {})[shard] = value.to(device)
        else:
            param = params[target].data
            if shard is not None:
                param = param.narrow(0, *_shard_range(model, target, shard))
            if isinstance(value, QuantWeight):
                value = value.dequantize()
            _copy(param, value, tensor.name)
        loaded.add((target, shard))
    missing = sorted(f"{t}:{s}" if s is not None else t for t, s in expected - loaded)
    if missing:
        raise ModelLoadError(f"GGUF file is missing weights: {', '.join(missing[:5])}")
    for target in list(pending):  # popped: each fused part is freed once concatenated
        parts = pending.pop(target)
        weight = QuantWeight.cat([parts[s] for s in sorted(parts, key=lambda s: s or 0)])
        install_weight(model, target, weight, shapes[target])


def _rope_freqs(model: LlamaForCausalLM, reader: GGUFReader) -> None:
    """llama3 rope scaling: llama.cpp stores it as per-frequency divisors of the inverse
    frequencies (`rope_freqs.weight`), not as config values."""
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":
            factors = read_tensor(tensor)
            model.model.rotary.scale_frequencies(factors.float())


def load_gguf_model(config: EngineConfig, path: Path) -> LoadedModel:
    reader = open_gguf(path)
    hf_config = gguf_config(reader)
    max_model_len = context_length(config, hf_config)
    embed = next(t for t in reader.tensors if t.name == "token_embd.weight")
    checkpoint_dtype = {"BF16": torch.bfloat16, "F16": torch.float16}.get(
        embed.tensor_type.name, torch.float32)
    weight_dtype, dtype = config.dtypes(checkpoint_dtype)
    device = config.torch_device
    with torch.device("meta"):
        model = build_model(hf_config, max_model_len)
    load_gguf_weights(model, reader, device, weight_dtype)
    model.compute_dtype = dtype
    _rope_freqs(model, reader)
    model.model.rotary.to(device)
    model.eval().requires_grad_(False)
    tokenizer = None if config.skip_tokenizer_init else gguf_tokenizer(reader, path)
    eos = {v for key in ("eos_token_id", "eot_token_id", "eom_token_id")
           if (v := _meta(reader, f"tokenizer.ggml.{key}")) is not None}
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        eos.add(tokenizer.eos_token_id)
    return LoadedModel(model, hf_config, tokenizer, frozenset(eos), max_model_len, dtype,
                       weight_dtype)


def gguf_tokenizer(reader: GGUFReader, path: Path):
    if "tokenizer.ggml.tokens" not in reader.fields:
        raise ModelLoadError(f"{path} has no tokenizer; pass skip_tokenizer_init=True to use "
                             "the model with token ids only")
    try:
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name,
                                             local_files_only=True)
    except (ValueError, KeyError, OSError) as exc:
        raise ModelLoadError(f"cannot build a tokenizer from {path}: {exc}") from exc
