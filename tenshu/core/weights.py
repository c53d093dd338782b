"""What a model's weights are, read from its files' headers without loading them: a GGUF file's
quantization as llama.cpp names it, a safetensors checkpoint's main dtype. For listings
(`tenshu models`) and what the server reports of a model (Ollama's quantization_level)."""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from pathlib import Path


def gguf_format(path: Path, reader=None) -> str:
    """`GGUF Q4_K_M`: llama.cpp's name for the file's `general.file_type`, else the type most
    of its weights have (files written without the key). `reader`: the file's GGUFReader, where
    the caller has one (reading the header again costs as much as the first time)."""
    from gguf import GGUFReader, LlamaFileType

    if reader is None:
        try:
            reader = GGUFReader(path)
        except (ValueError, OSError, IndexError, KeyError) as exc:
            return f"unreadable GGUF ({type(exc).__name__})"
    field = reader.fields.get("general.file_type")
    if field is not None:
        try:
            kind = LlamaFileType(int(field.contents())).name
            return "GGUF " + kind.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    counts = Counter()
    for tensor in reader.tensors:
        if len(tensor.shape) >= 2:
            counts[tensor.tensor_type.name] += int(tensor.n_elements)
    return "GGUF " + (counts.most_common(1)[0][0] if counts else "?")


def safetensors_counts(files: list[Path]) -> Counter:
    """Elements per dtype ("BF16", "F32", ...) in these safetensors files, from their headers
    (8 bytes of length, then JSON); a file that cannot be read counts nothing."""
    counts: Counter = Counter()
    for file in files:
        try:
            with file.open("rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
        except (OSError, ValueError, struct.error):
            continue
        for name, info in header.items():
            if name != "__metadata__" and isinstance(info, dict):
                counts[info.get("dtype", "")] += math.prod(info.get("shape") or [1])
    return counts


def safetensors_format(path: Path) -> str:
    """`safetensors BF16`: the dtype most of the checkpoint's weights have, from the files'
    headers (config.json's dtype may be what they were trained in, not what is stored)."""
    counts = safetensors_counts(sorted(path.glob("*.safetensors")))
    return "safetensors " + counts.most_common(1)[0][0] if counts else "no safetensors"
