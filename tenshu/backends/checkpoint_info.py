"""A checkpoint directory's ModelInfo, read from its files without loading the model.

The listings (/v1/models, /api/tags, /api/show), the router (context windows) and the agents'
model check need a model's ModelInfo as soon as the server starts, while the engine is still
loading in the background (backends/loading.py). Everything in it is in small files: the
context window and family in config.json, the parameter count and dtype in the safetensors
headers (8 bytes of length, then JSON), the chat template in tokenizer_config.json or
chat_template.jinja. No torch work and no transformers import: a few milliseconds. Once the
engine is loaded, backends/embedded.py's `loaded_info` replaces it with what the engine reports
(the same values for a float checkpoint; quantized ones count what the engine holds).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tenshu.core.models import ModelInfo
from tenshu.core.weights import gguf_format, safetensors_counts
from tenshu.engine import EngineConfig
from tenshu.engine.quant import QuantWeight

# safetensors' dtype names -> torch's, as ModelInfo.dtype reports them
_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
           "I8": "int8", "U8": "uint8", "I32": "int32", "I64": "int64"}


def checkpoint_info(name: str, config: EngineConfig) -> ModelInfo:
    path = Path(config.model).expanduser()
    if path.is_file():  # a .gguf file or an Ollama blob
        return _gguf_info(name, config, path)
    if not path.is_dir():  # a path that is not there: the load says why
        return ModelInfo(name=name, context_window=config.max_model_len or 0, path=str(path))
    hf = _json(path / "config.json")
    limit = int(hf.get("max_position_embeddings") or 0) or None
    try:
        window = config.context_length(limit)
    except ValueError:
        window = limit or 0  # the load fails and says why
    files = sorted(path.glob("*.safetensors"))
    counts = safetensors_counts(files)
    qc = hf.get("quantization_config")
    quantization = config.quantization or (qc.get("quant_method") if isinstance(qc, dict)
                                           else None)
    arch = (hf.get("architectures") or [""])[0]
    return ModelInfo(
        name=name,
        context_window=window,
        created=int(path.stat().st_mtime),
        family=hf.get("model_type") or arch,
        parameters=sum(counts.values()),
        dtype=quantization or _weights_dtype(config, hf, counts),
        size_bytes=sum(f.stat().st_size for f in files),
        path=str(path),
        chat_template=_chat_template(path),
    )


def _gguf_info(name: str, config: EngineConfig, path: Path) -> ModelInfo:
    """A GGUF file's, from its metadata (gguf-py maps the file; the tensors are not read)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError):  # the load says why
        return ModelInfo(name=name, context_window=config.max_model_len or 0, path=str(path))

    def meta(key: str, default=None):
        field = reader.fields.get(key)
        return default if field is None else field.contents()

    arch = meta("general.architecture", "")
    limit = int(meta(f"{arch}.context_length", 0) or 0) or None
    try:
        window = config.context_length(limit)
    except ValueError:
        window = limit or 0
    template = meta("tokenizer.chat_template", "")
    return ModelInfo(
        name=name, context_window=window, created=int(path.stat().st_mtime), family=arch,
        parameters=sum(int(t.n_elements) for t in reader.tensors),
        dtype=gguf_format(path, reader).removeprefix("GGUF "),  # as Ollama says: Q4_K_M, Q8_0
        size_bytes=path.stat().st_size, path=str(path),
        chat_template=template if isinstance(template, str) else "")


def _json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _weights_dtype(config: EngineConfig, hf: dict, counts: Counter) -> str:
    """The dtype the engine will hold the weights in (EngineConfig.dtypes' first)."""
    import torch  # already imported with tenshu.engine

    named = hf.get("torch_dtype") or hf.get("dtype")
    if not isinstance(named, str) and counts:
        named = _DTYPES.get(counts.most_common(1)[0][0])
    checkpoint = getattr(torch, named, None) if isinstance(named, str) else None
    try:
        weights, _ = config.dtypes(checkpoint if isinstance(checkpoint, torch.dtype) else None)
    except ValueError:
        return named or ""
    return str(weights).removeprefix("torch.")


def _chat_template(path: Path) -> str:
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        try:
            return jinja.read_text(encoding="utf-8")
        except OSError:
            return ""
    template = _json(path / "tokenizer_config.json").get("chat_template")
    return template if isinstance(template, str) else ""


def loaded_info(before: ModelInfo, config: EngineConfig, llm) -> ModelInfo:
    """The ModelInfo of a loaded engine: as checkpoint_info's (`before`), counted on what it
    holds. A GGUF file's size and quantization are `before`'s (its header is not read again)."""
    path = Path(config.model)
    gguf = path.is_file()  # a .gguf file or an Ollama blob (engine/loader.py's is_gguf)
    weights = before.size_bytes if gguf else sum(
        f.stat().st_size for f in path.glob("*.safetensors"))
    hf = llm.hf_config
    arch = (getattr(hf, "architectures", None) or [""])[0]
    params = sum(p.numel() for p in llm.runner.model.parameters()) + sum(
        m.shape.numel() for m in llm.runner.model.modules() if isinstance(m, QuantWeight))
    # The dtype the weights are held in, which is what Ollama's quantization_level reports: a
    # bf16 checkpoint stays bf16 in memory even where the engine computes in float32 (on CPU,
    # engine/config.py), so `llm.dtype`, the compute dtype, would say F32.
    by_dtype = Counter()
    for p in llm.runner.model.parameters():
        by_dtype[p.dtype] += p.numel()
    weights_dtype = by_dtype.most_common(1)[0][0] if by_dtype else llm.dtype
    template = getattr(llm.tokenizer, "chat_template", "") or ""
    # the decoder Linears' format, where they are quantized (engine/quant)
    qc = getattr(hf, "quantization_config", None)
    quantization = config.quantization or (qc.get("quant_method") if isinstance(qc, dict) else None)
    if gguf:  # as Ollama reports a GGUF's: Q4_K_M, Q8_0, F16
        quantization = before.dtype
    return ModelInfo(
        name=before.name,
        context_window=llm.max_model_len,
        created=int(path.stat().st_mtime),
        family=getattr(hf, "model_type", "") or arch,
        parameters=params,
        dtype=quantization or str(weights_dtype).removeprefix("torch."),
        size_bytes=weights,
        path=str(path),
        chat_template=template if isinstance(template, str) else "",
    )
