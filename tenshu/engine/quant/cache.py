"""The cache of quantization on load: the QuantWeights that quantize.py made from a float
checkpoint, saved as safetensors so that the next load with the same settings reads them
instead of quantizing again.

Where: `<model dir>/.tenshu-cache/<method>-<key>.safetensors`, else (the directory is not
writable: a read-only mount, an Ollama blob store) under EngineConfig.quantization_cache_dir
(the server passes $TENSHU_HOME/cache), named after the model directory too. The key hashes
config.json, each weight file's name, size and modification time, the method, its group size
and this file's FORMAT, so a changed checkpoint or a new quantizer misses the old cache.

The file is written to a temporary name and renamed into place, so a reader never sees half a
cache. One that cannot be read back (truncated, garbage, tensors that do not fit the model) is
ignored with a warning and rebuilt. Bit flips inside the tensor data are not detected (no
checksum: it would cost a pass over every byte on each load).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from tenshu.engine.quant.load import QuantLoad, decoder_linears, install_weight
from tenshu.engine.quant.quantize import GROUP_SIZE
from tenshu.engine.quant.weight import QuantWeight

FORMAT = 1  # bump when quantize.py's output changes
DIR_NAME = ".tenshu-cache"

logger = logging.getLogger(__name__)


def cache_key(model_dir: Path, files: list[Path], method: str) -> str:
    h = hashlib.sha256(f"tenshu-quant/{FORMAT}/{method}/{GROUP_SIZE[method]}".encode())
    h.update((model_dir / "config.json").read_bytes())
    for file in files:
        stat = file.stat()
        h.update(f"\0{file.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def candidates(model_dir: Path, files: list[Path], method: str,
               fallback: Path | None) -> list[Path]:
    """Where the cache may be, in order: beside the model, then in the fallback directory."""
    name = f"{method}-{cache_key(model_dir, files, method)}.safetensors"
    out = [model_dir / DIR_NAME / name]
    if fallback is not None:
        where = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:12]
        out.append(fallback / f"{model_dir.name}-{where}-{name}")
    return out


def read(path: Path, shapes: dict[str, torch.Size]) -> dict[str, QuantWeight] | None:
    """The cached QuantWeights for exactly these targets and shapes, or None (missing, or
    unusable: then a warning)."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as f:
            formats = json.loads(f.metadata()["tenshu.quant"])
            weights = {}
            for target, (bits, group, offset, has_mins) in formats.items():
                weights[target] = QuantWeight(
                    f.get_tensor(f"{target}.qweight"), f.get_tensor(f"{target}.scales"),
                    f.get_tensor(f"{target}.mins") if has_mins else None,
                    bits=bits, group_size=group, offset=offset, in_features=shapes[target][1])
        if {t: w.shape for t, w in weights.items()} != shapes:
            raise ValueError("its weights do not fit this model")
    except Exception as exc:  # any damage at all: the cache is only ever a shortcut
        logger.warning("ignoring the unreadable quantization cache %s (%s); quantizing again",
                       path, exc)
        return None
    return weights


def write(paths: list[Path], weights: dict[str, QuantWeight]) -> Path | None:
    """Save to the first of `paths` whose directory can be written; None if none can."""
    tensors, formats = {}, {}
    for target, w in weights.items():
        tensors[f"{target}.qweight"] = w.qweight.contiguous().cpu()
        tensors[f"{target}.scales"] = w.scales.contiguous().cpu()
        if w.mins is not None:
            tensors[f"{target}.mins"] = w.mins.contiguous().cpu()
        formats[target] = [w.bits, w.group_size, w.offset, w.mins is not None]
    metadata = {"tenshu.quant": json.dumps(formats)}
    for path in paths:
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            save_file(tensors, tmp, metadata=metadata)
            os.replace(tmp, path)
            logger.info("saved the quantized weights to %s", path)
            return path
        except OSError as exc:
            logger.info("cannot write the quantization cache at %s (%s)", path, exc)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
    logger.warning("the quantized weights could not be cached (tried %s); the next load will "
                   "quantize again", ", ".join(str(p) for p in paths))
    return None


class CachedWeights(QuantLoad):
    """The decoder Linears' QuantWeights from the cache: their checkpoint tensors are skipped
    without being read."""

    def __init__(self, model: nn.Module, weights: dict[str, QuantWeight]):
        super().__init__(model, decoder_linears(model))
        self.weights = weights

    def add(self, name: str, target: str, shard: int | None,
            read: Callable[[], torch.Tensor]) -> None:
        """Nothing to read: the cache holds the quantized weight (`read` is never called)."""

    def install(self, model: nn.Module, device: torch.device) -> dict[str, QuantWeight]:
        installed = {}
        for target, weight in self.weights.items():  # read() checked targets and shapes
            installed[target] = weight.to(device)
            install_weight(model, target, installed[target], self.shapes[target])
        return installed
