"""EngineConfig: every knob of the engine, validated once, with derived defaults in one place."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "half": torch.float16,
}

# on load (int8, int4), then the packed checkpoint formats (gptq, awq)
QUANTIZATIONS = ("int8", "int4", "gptq", "awq")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """bf16 matmuls are fast on CPUs with AVX512-BF16 or AMX; elsewhere they run several times
    slower than float32, so `dtype="auto"` computes in float32 there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class EngineConfig:
    """How to run one model.

    dtype: "auto" (the checkpoint's dtype; on a CPU, a bf16 checkpoint keeps bf16 weights and
        computes in float32: one row's products, single-stream decoding, read the bf16 weights
        into float32 multiply-adds, exact; where the CPU multiplies bf16 natively, products of
        several rows round them to bf16 and multiply in bf16, twice float32's speed, as a bf16
        model would), "float32", "bfloat16" (computed in bf16 throughout), or "float16"
        (CUDA only).
    device: "auto" (cuda when available), "cpu" or "cuda".
    kv_cache_memory_gib: KV cache budget on CPU. On CUDA the budget is
        `gpu_memory_utilization` of the memory free after the weights are loaded.
    max_num_batched_tokens: tokens computed per step; prompts longer than this are prefilled in
        chunks, so a long prompt does not stall running decodes. Default 512 on CPU, 4096 on CUDA.
    max_model_len: the context window; defaults to the model's max_position_embeddings.
    num_kv_blocks: set the number of KV blocks directly instead of deriving it from the budget.
    quantization: None (a float checkpoint stays float; a GPTQ or AWQ checkpoint is read as
        what it is), "int8" or "int4" (quantize a float checkpoint's decoder Linears on load,
        engine/quant/quantize.py), or "gptq" / "awq" (vLLM's names: the checkpoint must be one).
    quantization_cache_dir: where quantized weights are cached when the model's own directory
        cannot be written (engine/quant/cache.py); None: not cached then.
    kv_cache_dtype: "auto" (the dtype activations are computed in; bf16 for bf16 weights on a
        CPU that multiplies bf16 natively), "bfloat16", "float16" (CUDA only) or "float32", as
        vLLM names it: a model computed in float32 (a quantized one, or a bf16 one on a CPU
        without native bf16) holds twice the context per GiB in bf16, keys and values rounded
        to bf16 as they are stored (llama.cpp keeps f16).
    int8_activations: on a CPU with integer dot products (AVX2, or VNNI), a quantized weight's
        products of up to kernels.int8_max_rows() rows (a batch of sequences, a short prompt;
        with VNNI, a prompt chunk) round the activations to int8 per 32 values and multiply the
        weight's codes in integers, as llama.cpp does: 1.3-2.2x faster per product with VNNI,
        1.0-1.9x with AVX2 alone, and with VNNI 2-3.6x at 16-64 rows (docs/benchmarks.md), the
        result that of the rounded activations (within 1% of the float product); larger
        products multiply in bf16 where the CPU does so natively (AVX512-BF16, AMX): twice
        float32's speed, within bf16's rounding. False keeps float32 activations: slower, and
        greedy output follows the float model's token for token. Float weights, CUDA and CPUs
        without AVX2 are not affected.
    cpu_float32_copy_gib: when bf16 weights are computed in float32 on a CPU without native
        bf16, also keep a float32 copy of them if it takes at most this much memory: batched
        steps then skip the upcast (about 30% faster); single-stream decoding reads the bf16
        weights either way. 0 = never. (With native bf16 no copy is kept: batches multiply in
        bf16.)
    """

    model: str
    dtype: str = "auto"
    device: str = "auto"
    block_size: int = 16
    kv_cache_memory_gib: float = 4.0
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int = 64
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    num_kv_blocks: int | None = None
    cpu_float32_copy_gib: float = 8.0
    kv_cache_dtype: str = "auto"
    int8_activations: bool = True
    enable_prefix_caching: bool = True
    skip_tokenizer_init: bool = False
    quantization: str | None = None
    quantization_cache_dir: str | None = None
    seed: int = 0
    # LoRA adapters (engine/lora.py), as vLLM names these: off unless asked for
    enable_lora: bool = False
    max_loras: int = 1  # adapters held in memory at once
    max_lora_rank: int = 16

    def __post_init__(self) -> None:
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)} (or None), "
                             f"got {self.quantization!r}")
        if self.max_loras < 1 or self.max_lora_rank < 1:
            raise ValueError("max_loras and max_lora_rank must be >= 1")
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be auto or one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if self.kv_cache_dtype != "auto" and self.kv_cache_dtype not in _DTYPES:
            raise ValueError(f"kv_cache_dtype must be auto or one of {', '.join(_DTYPES)}, got "
                             f"{self.kv_cache_dtype!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.kv_cache_memory_gib <= 0:
            raise ValueError(f"kv_cache_memory_gib must be > 0, got {self.kv_cache_memory_gib}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            raise ValueError(f"num_kv_blocks must be >= 1, got {self.num_kv_blocks}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise ValueError(
                f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}"
            )

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def dtypes(self, checkpoint_dtype: torch.dtype | None) -> tuple[torch.dtype, torch.dtype]:
        """(dtype the weights are stored in, dtype the activations are computed in)."""
        on_cuda = self.torch_device.type == "cuda"
        if self.dtype != "auto":
            dtype = _DTYPES[self.dtype]
            if dtype == torch.float16 and not on_cuda:
                raise ValueError("float16 is supported on CUDA only; use bfloat16 or float32")
            return dtype, dtype
        dtype = checkpoint_dtype or torch.float32
        if on_cuda or dtype == torch.float32:
            return dtype, dtype
        if dtype == torch.bfloat16:  # keep the bf16 weights, compute in float32
            return dtype, torch.float32
        return torch.float32, torch.float32

    def bf16_batches(self, weight_dtype: torch.dtype) -> bool:
        """Whether float weights held in `weight_dtype` multiply several rows in bf16 (their
        activations float32 otherwise): bf16 weights on a CPU with native bf16
        (layers/linear.py). No float32 copy of them is kept then, and the KV cache is bf16."""
        return weight_dtype == torch.bfloat16 and self.torch_device.type == "cpu" and \
            cpu_has_native_bf16()

    def kv_dtype(self, compute_dtype: torch.dtype, weight_dtype: torch.dtype) -> torch.dtype:
        """The KV cache's dtype for a model computed in `compute_dtype` with its float weights
        in `weight_dtype`."""
        if self.kv_cache_dtype == "auto":
            if self.bf16_batches(weight_dtype):  # as a bf16 model computed in bf16 would keep it
                return torch.bfloat16
            return compute_dtype
        dtype = _DTYPES[self.kv_cache_dtype]
        if dtype == torch.float16 and self.torch_device.type != "cuda":
            raise ValueError("a float16 KV cache is supported on CUDA only; use bfloat16")
        return dtype

    def context_length(self, limit: int | None) -> int:
        """max_model_len: asked for, else the model's max_position_embeddings (`limit`), and
        never more than it."""
        max_model_len = self.max_model_len or limit or 4096
        if limit is not None and max_model_len > limit:
            raise ValueError(
                f"max_model_len {max_model_len} exceeds the model's max_position_embeddings "
                f"{limit}")
        return max_model_len

    @property
    def batched_tokens(self) -> int:
        if self.max_num_batched_tokens is not None:
            return self.max_num_batched_tokens
        return 4096 if self.torch_device.type == "cuda" else 512
