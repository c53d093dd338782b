"""Loads a Hugging Face checkpoint directory: config.json, one or many *.safetensors files,
the tokenizer with its chat template, and generation_config.json's end-of-sequence ids.
A GGUF file (a `.gguf`, or an Ollama blob) goes to quant/gguf_file.py. Quantized weights
(quantization on load, its cache, GPTQ and AWQ checkpoints) are read through a quant/load.py
QuantLoad, chosen in `quant_load`.

A plain Llama config.json (every field as transformers writes it, RoPE unscaled: the built-in
model's) is read here, as LlamaConfig would read it, and its tokenizer made as AutoTokenizer
would make it: transformers' config and Auto classes import torch._dynamo and every model
family's module list, seconds of a server's start. Any other config goes through transformers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors import safe_open
from torch.overrides import TorchFunctionMode
from transformers import GenerationConfig, PreTrainedTokenizerBase

from tenshu.core.errors import ModelLoadError, UnsupportedModelError
from tenshu.engine.config import EngineConfig
from tenshu.engine.models import build_model
from tenshu.engine.models.llama import LlamaForCausalLM
from tenshu.engine.quant import cache, gptq, quantize
from tenshu.engine.quant.load import QuantLoad, decoder_linears

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


@dataclass
class LoadedModel:
    model: LlamaForCausalLM
    hf_config: object
    tokenizer: PreTrainedTokenizerBase | None
    eos_token_ids: frozenset[int]
    max_model_len: int
    dtype: torch.dtype  # of the activations; float weights may be narrower:
    weight_dtype: torch.dtype  # the dtype float weights are held in


def load_config(path: Path):
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a model directory: it has no config.json")
    if (plain := plain_llama_config(path)) is not None:
        return plain
    # transformers' Auto classes import every model family's module list (half a second), and a
    # family's config class imports torch._dynamo (a second or two): only for the other configs
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except (ValueError, KeyError, OSError) as exc:
        raise ModelLoadError(f"cannot read {path / 'config.json'}: {exc}") from exc


class PlainConfig(SimpleNamespace):
    """A config.json read without transformers (plain_llama_config): its fields as attributes,
    with the values transformers' LlamaConfig would hold."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_opt_int(value) -> bool:
    return value is None or _is_int(value)


def _is_size(value) -> bool:
    return _is_int(value) and value > 0


# A Llama config.json as transformers' save_pretrained writes it: every field of LlamaConfig, each
# of the type it declares, RoPE without scaling. LlamaConfig holds these values unchanged (but
# dtype, turned into a torch.dtype), so the engine reads them itself; any other file, or a value
# that is not plainly valid, goes through transformers as before, errors included.
_PLAIN_LLAMA = {
    "architectures": lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v),
    "model_type": lambda v: v == "llama",
    "transformers_version": lambda v: isinstance(v, str),
    "dtype": lambda v: v in ("float32", "bfloat16", "float16"),
    "vocab_size": _is_size,
    "hidden_size": _is_size,
    "intermediate_size": _is_size,
    "num_hidden_layers": _is_size,
    "num_attention_heads": _is_size,
    "num_key_value_heads": _is_size,
    "head_dim": _is_size,
    "max_position_embeddings": _is_size,
    "hidden_act": lambda v: v == "silu",
    "initializer_range": lambda v: isinstance(v, float) and 0.0 <= v <= 1.0,
    "rms_norm_eps": lambda v: isinstance(v, float),
    "use_cache": lambda v: isinstance(v, bool),
    "pad_token_id": _is_opt_int,
    "bos_token_id": _is_opt_int,
    "eos_token_id": lambda v: _is_opt_int(v) or (isinstance(v, list) and all(map(_is_int, v))),
    "pretraining_tp": _is_opt_int,
    "tie_word_embeddings": lambda v: isinstance(v, bool),
    "rope_parameters": lambda v: (isinstance(v, dict) and v.keys() == {"rope_type", "rope_theta"}
                                  and v["rope_type"] == "default"
                                  and isinstance(v["rope_theta"], float)),
    "attention_bias": lambda v: isinstance(v, bool),
    "attention_dropout": lambda v: v is None or isinstance(v, float) or _is_int(v),
    "mlp_bias": lambda v: isinstance(v, bool),
}


def plain_llama_config(path: Path) -> PlainConfig | None:
    """config.json as a PlainConfig when it is a plain Llama one (_PLAIN_LLAMA), else None."""
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(raw, dict) and raw.keys() == _PLAIN_LLAMA.keys()
            and all(valid(raw[key]) for key, valid in _PLAIN_LLAMA.items())
            and raw["hidden_size"] % raw["num_attention_heads"] == 0):
        return None
    return PlainConfig(**{**raw, "dtype": getattr(torch, raw["dtype"])},
                       _name_or_path=str(path))


def load_tokenizer(path: Path, hf_config=None) -> PreTrainedTokenizerBase:
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"{path} has no tokenizer files; pass skip_tokenizer_init=True to use the model "
            "with token ids only"
        )
    if isinstance(hf_config, PlainConfig) and _plain_tokenizer(path):
        # what AutoTokenizer chooses for it, without the model config it would load again
        from transformers.tokenization_utils_tokenizers import TokenizersBackend

        return TokenizersBackend.from_pretrained(path, local_files_only=True)
    from transformers import AutoTokenizer  # the Auto classes' import: see load_config

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _plain_tokenizer(path: Path) -> bool:
    """A tokenizer.json with a tokenizer_config.json that names the generic fast tokenizer and
    no code of its own: for a Llama config AutoTokenizer picks TokenizersBackend, whatever the
    model config holds."""
    try:
        config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(config, dict) and "auto_map" not in config
            and config.get("tokenizer_class") in ("PreTrainedTokenizerFast", "TokenizersBackend")
            and (path / "tokenizer.json").is_file())


def eos_ids(path: Path, hf_config, tokenizer: PreTrainedTokenizerBase | None) -> frozenset[int]:
    ids: set[int] = set()

    def add(value) -> None:
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))

    add(getattr(hf_config, "eos_token_id", None))
    if (path / "generation_config.json").is_file():
        add(GenerationConfig.from_pretrained(path, local_files_only=True).eos_token_id)
    if tokenizer is not None:
        add(tokenizer.eos_token_id)
    return frozenset(ids)


def checkpoint_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({path / name for name in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelLoadError(f"{path}: shards named in the index are missing: {missing}")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path} has no *.safetensors weights")
    return files


def load_weights(model: LlamaForCausalLM, files: list[Path], quant: QuantLoad | None = None
                 ) -> None:
    """Copy checkpoint tensors into the model, fusing q/k/v and gate/up, casting the dtype;
    those of quantized weights go to `quant`."""
    params = dict(model.named_parameters())
    loaded: set[str] = set()
    for file in files:
        with safe_open(file, framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if "rotary_emb" in name:
                    continue
                if name == "lm_head.weight" and model.tie_word_embeddings:
                    continue
                target, shard = _target(model, name)
                if quant is not None and quant.claims(name, target):
                    quant.add(name, target, shard, lambda f=f, name=name: f.get_tensor(name))
                    continue
                if target not in params:
                    raise ModelLoadError(f"{file.name}: unexpected tensor {name}")
                param = params[target]
                tensor = f.get_tensor(name)
                if shard is None:
                    _copy(param.data, tensor, name)
                else:
                    start, size = _shard_range(model, target, shard)
                    _copy(param.data.narrow(0, start, size), tensor, name)
                loaded.add(f"{target}:{shard}")
    shards: dict[str, set[int | None]] = {}
    for fused, shard in model.stacked_params.values():
        shards.setdefault(fused, set()).add(shard)
    expected = {
        f"{name}:{shard}"
        for name in params
        for shard in shards.get(name.split(".")[-2], {None})
    }
    missing = sorted(expected - loaded)
    if missing:
        raise ModelLoadError(f"checkpoint is missing weights: {', '.join(missing[:5])}")


def _target(model: LlamaForCausalLM, name: str) -> tuple[str, int | None]:
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part in model.stacked_params:
            fused, shard = model.stacked_params[part]
            return ".".join([*parts[:i], fused, *parts[i + 1 :]]), shard
    return name, None


def _shard_range(model: LlamaForCausalLM, target: str, shard: int) -> tuple[int, int]:
    cfg = model.config
    if "qkv_proj" in target:
        q = cfg.num_attention_heads * model.head_dim
        kv = cfg.num_key_value_heads * model.head_dim
        return [(0, q), (q, kv), (q + kv, kv)][shard]
    inter = cfg.intermediate_size
    return shard * inter, inter


def _copy(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    if dst.shape != src.shape:
        raise ModelLoadError(f"{name}: shape {tuple(src.shape)} does not fit {tuple(dst.shape)}")
    dst.copy_(src)


def context_length(config: EngineConfig, hf_config) -> int:
    """max_model_len: asked for, else the model's max_position_embeddings, and never more."""
    return config.context_length(int(getattr(hf_config, "max_position_embeddings", 0) or 0)
                                 or None)


def quant_load(config: EngineConfig, path: Path, hf_config, model: LlamaForCausalLM,
               files: list[Path]) -> tuple[QuantLoad | None, list[Path]]:
    """How the quantized weights are read, given the checkpoint and `config.quantization`
    (the model still on the meta device), and where to cache them once quantized (empty: do
    not)."""
    packed = gptq.packed_format(hf_config)
    method = config.quantization
    if packed is not None:
        if method not in (None, packed.method):
            raise UnsupportedModelError(f"{path} is a {packed.method} checkpoint; it cannot be "
                                        f"quantized again to {method}: leave quantization unset "
                                        f"or set it to {packed.method!r}")
        names = []
        for file in files:
            with safe_open(file, framework="pt") as f:
                names += f.keys()
        targets = gptq.packed_targets(model, names, _target)
        return gptq.PackedCheckpoint(model, targets, packed), []
    if method in gptq.METHODS:
        raise UnsupportedModelError(f"quantization={method!r} needs a {method} checkpoint, but "
                                    f"{path / 'config.json'} has no {method} quantization_config")
    if method is None:
        return None, []
    fallback = Path(config.quantization_cache_dir) if config.quantization_cache_dir else None
    places = cache.candidates(path, files, method, fallback)
    shapes = {t: model.get_parameter(t).shape for t in decoder_linears(model)}
    for place in places:
        if (weights := cache.read(place, shapes)) is not None:
            return cache.CachedWeights(model, weights), []
    return quantize.OnLoadQuantizer(model, method), places


class _MetaShortcuts(TorchFunctionMode):
    """Builds a model on the meta device and gives it real storage without torch's Python
    reference kernels for meta tensors, whose first call imports torch._dynamo and sympy (a
    second or two of a server's start): the random initialisation of a meta tensor is
    skipped (it holds no data, and draws nothing from the random generator), and a contiguous
    meta tensor's `empty_like` on another device (`Module.to_empty`) is an `empty` of its shape
    and dtype, as the reference would make it. A torch function mode holds for this thread only.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.init.normal_ or func is torch.Tensor.normal_:
            tensor = args[0] if args else kwargs.get("tensor", kwargs.get("self"))
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        elif (func is torch.empty_like and len(args) == 1 and kwargs.keys() == {"device"}
              and args[0].is_meta and args[0].is_contiguous()
              and torch.device(kwargs["device"]).type != "meta"):
            return torch.empty(args[0].shape, dtype=args[0].dtype, device=kwargs["device"])
        return func(*args, **kwargs)


def is_gguf(path: Path) -> bool:
    """A `.gguf` file (a broken one gets the GGUF reader's error), or any file that starts
    with GGUF's magic: Ollama's blobs are named `sha256-<hex>`."""
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return path.suffix == ".gguf" or f.read(4) == b"GGUF"


def load_model(config: EngineConfig) -> LoadedModel:
    path = Path(config.model).expanduser()
    if is_gguf(path):
        if config.quantization is not None:
            raise UnsupportedModelError(f"{path} is a GGUF file, quantized as it is: leave "
                                        "quantization unset")
        from tenshu.engine.quant.gguf_file import load_gguf_model  # it imports this module

        return load_gguf_model(config, path)
    if not path.is_dir():
        raise ModelLoadError(f"model path {path} is not a directory (nor a .gguf file)")
    hf_config = load_config(path)
    max_model_len = context_length(config, hf_config)
    checkpoint_dtype = getattr(hf_config, "dtype", None)
    if isinstance(checkpoint_dtype, str):
        checkpoint_dtype = getattr(torch, checkpoint_dtype, None)
    weight_dtype, dtype = config.dtypes(checkpoint_dtype)
    device = config.torch_device
    with torch.device("meta"), _MetaShortcuts():
        model = build_model(hf_config, max_model_len)
    files = checkpoint_files(path)
    quant, cache_places = quant_load(config, path, hf_config, model, files)  # drops their floats
    with _MetaShortcuts():
        model = model.to(weight_dtype).to_empty(device=device)
    model.compute_dtype = dtype
    model.model.rotary.to(device)
    load_weights(model, files, quant)
    if quant is not None:
        installed = quant.install(model, device)
        if cache_places:
            cache.write(cache_places, installed)
    model.eval().requires_grad_(False)
    if weight_dtype != dtype and device.type == "cpu" and not config.bf16_batches(weight_dtype):
        matmul_params = sum(p.numel() for p in model.parameters() if p.dim() == 2)
        wide_bytes = matmul_params * torch.empty((), dtype=dtype).element_size()
        if wide_bytes <= config.cpu_float32_copy_gib * (1 << 30):
            model.keep_wide_copies()
    tokenizer = None if config.skip_tokenizer_init else load_tokenizer(path, hf_config)
    return LoadedModel(model, hf_config, tokenizer, eos_ids(path, hf_config, tokenizer),
                       max_model_len, dtype, weight_dtype)
