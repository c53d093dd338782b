"""[memory] in tenshu.toml: how documents are chunked, embedded and retrieved.

    [memory]
    embedder = "all-minilm-l6-v2"   # an embedder tenshu serves, or a sentence-transformers dir
    chunk_tokens = 200               # per chunk, in the embedder's tokens (MiniLM reads 256)
    overlap_tokens = 32
    k = 6                            # chunks a chat request is given
    keyword_weight = 1.0             # reciprocal rank fusion: each leg's weight
    vector_weight = 1.0
    rerank = ""                      # a cross-encoder directory; "" for none
    budget_tokens = 1500             # the most retrieved text a prompt gets
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemorySettings:
    """embedder: the name of an embedder tenshu serves (the default all-minilm-l6-v2, or an
        upstream's), or a sentence-transformers model directory.
    chunk_tokens, overlap_tokens: chunk size and the overlap between neighbours, in the
        embedder's tokens.
    k: chunks retrieved for a chat request (search takes its own k).
    candidates: each leg's hits before fusion.
    keyword_weight, vector_weight, rrf_k: reciprocal rank fusion, score = sum of
        weight / (rrf_k + rank) over the legs.
    rerank: a cross-encoder model directory (sentence-transformers) that reorders the fused
        top `rerank_top`; "" for none.
    budget_tokens: the most retrieved text a prompt is given (less where the model's window
        is short).
    max_file_mb: larger files are refused, each with its own error.
    fetch_timeout: seconds for a URL to answer when ingesting it.
    """

    embedder: str = "all-minilm-l6-v2"
    chunk_tokens: int = 200
    overlap_tokens: int = 32
    k: int = 6
    candidates: int = 50
    keyword_weight: float = 1.0
    vector_weight: float = 1.0
    rrf_k: int = 60
    rerank: str = ""
    rerank_top: int = 20
    budget_tokens: int = 1500
    max_file_mb: float = 64.0
    fetch_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not 16 <= self.chunk_tokens <= 8192:
            raise ValueError("chunk_tokens: must be within 16..8192")
        if not 0 <= self.overlap_tokens < self.chunk_tokens // 2:
            raise ValueError("overlap_tokens: must be at least 0 and under half chunk_tokens")
        for name in ("k", "candidates", "rrf_k", "rerank_top", "budget_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        if self.keyword_weight < 0 or self.vector_weight < 0 or \
                self.keyword_weight + self.vector_weight == 0:
            raise ValueError("keyword_weight, vector_weight: must not be negative, nor both 0")
        if self.max_file_mb <= 0 or self.fetch_timeout <= 0:
            raise ValueError("max_file_mb, fetch_timeout: must be above 0")

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)
