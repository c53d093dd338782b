"""Linear layers whose weights may be stored narrower than the activations.

On a CPU, a bf16 checkpoint keeps its bf16 weights (half the memory and, for decoding, half the
bytes to read per token) while activations are float32:
- one row (single-stream decode) is a matrix-vector product bound by reading the weights: it
  reads the bf16 weights straight into float32 multiply-adds (exact), in tenshu's own kernel
  (engine/kernels), else in one that inductor compiles once per weight shape, 1.3-1.6x faster
  than torch's bf16 GEMV (where no compiler is available, or past the compiler's recompile
  limit, the weights are upcast as below);
- more rows, on a CPU that multiplies bf16 natively (AVX512-BF16, AMX), are rounded to bf16 and
  multiplied in bf16, twice float32's speed: in tenshu's kernel up to kernels.BF16_MAX_ROWS
  rows (a decode step's batch: it reads each weight row once), in torch's bf16 GEMM (oneDNN)
  past that (prompts), whose result is rounded to bf16 too;
- more rows elsewhere: up to kernels.BF16_MAX_ROWS in tenshu's kernel, which decodes weight
  rows into float32 in L1, four at a time, and multiplies them there with every row (1.2-5x the
  float32 GEMM on a float32 copy at 4-64 rows, docs/benchmarks.md); past that the float32 GEMM,
  several times faster than a bf16 one there: on a float32 copy of the weights kept beside the
  bf16 ones when memory allows (EngineConfig.cpu_float32_copy_gib), else on weights upcast
  (exactly) into a reused scratch buffer, or, for a few rows, straight on the bf16 weights.
  The scratch buffer matters: upcasting into fresh memory costs 4-8x more, in page faults,
  than the conversion itself.
A quantized weight (engine/quant: a QuantWeight module in place of the parameter) computes its
own product, dequantizing into the same scratch buffer.
"""

from __future__ import annotations

import logging
import threading

import torch
import torch.nn.functional as F
from torch import nn

from tenshu.engine import kernels, lora
from tenshu.engine.config import cpu_has_native_bf16

# Up to this many rows the bf16 matrix-vector path is faster than upcast + float32 GEMM
# (measured on an AVX2 CPU: equal at about 8 rows, 3x slower at 64).
NARROW_MAX_ROWS = 8
SCRATCH_ELEMENTS = 1 << 25  # 128 MiB of float32: big weights (an lm_head) go in row chunks

logger = logging.getLogger(__name__)
_local = threading.local()  # one scratch buffer per engine thread


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    wide_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """x @ weight.T + bias in x's dtype; `wide_weight` is an optional copy of `weight` in x's
    dtype, used for more than one row."""
    if isinstance(weight, nn.Module):  # a quantized weight (engine/quant/weight.py)
        return weight(x, bias)
    if weight.dtype == torch.bfloat16 and bf16_kernel_rows(x) and weight.is_contiguous() and \
            (cpu := kernels.ops()) is not None:
        out = cpu.bf16_matmul(x, weight)
        return out if bias is None else out + bias.to(x.dtype)
    if weight.dtype == x.dtype:
        return F.linear(x, weight, bias)
    if x.shape[0] == 1 and x.device.type == "cpu":
        out = _gemv(x, weight)
        return out if bias is None else out + bias.to(x.dtype)
    if weight.dtype == torch.bfloat16 and x.device.type == "cpu" and cpu_has_native_bf16():
        out = F.linear(x.to(weight.dtype), weight).to(x.dtype)
        return out if bias is None else out + bias.to(x.dtype)
    if wide_weight is not None:
        return F.linear(x, wide_weight, None if bias is None else bias.to(x.dtype))
    if x.shape[0] <= NARROW_MAX_ROWS:
        return F.linear(x.to(weight.dtype), weight, bias).to(x.dtype)
    bias = None if bias is None else bias.to(x.dtype)
    out_features, in_features = weight.shape
    rows = max(1, SCRATCH_ELEMENTS // in_features)
    if rows >= out_features:
        return F.linear(x, _upcast(weight, x), bias)
    out = torch.empty(*x.shape[:-1], out_features, dtype=x.dtype, device=x.device)
    for start in range(0, out_features, rows):
        part = slice(start, start + rows)
        out[..., part] = F.linear(x, _upcast(weight[part], x), None if bias is None else bias[part])
    return out


def bf16_kernel_rows(x: torch.Tensor) -> bool:
    """Whether x's rows take bf16_matmul against bf16 weights: one row of either dtype, or up to
    kernels.BF16_MAX_ROWS float32 rows (bf16 rows on a CPU with native bf16 take its GEMM)."""
    return x.device.type == "cpu" and x.dim() == 2 and (
        x.shape[0] == 1 or (x.dtype == torch.float32 and x.shape[0] <= kernels.BF16_MAX_ROWS))


def _gemv_math(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # [1, K] x [N, K] -> [1, N]; compiled, the upcast fuses into the reduction (no copy)
    return (weight.to(x.dtype) * x).sum(dim=-1).unsqueeze(0)


RECOMPILE_LIMIT = 64  # weight shapes compiled per kernel in a process (several models)


class ShapeCompiled:
    """`fn` compiled by inductor once per input shape. A call returns None where that cannot be
    done, and the caller takes its eager path: no C++ compiler or unsupported platform (found
    on the first call, once), or a shape that fails to compile, such as one past dynamo's
    recompile limit: a process that loads several models must not fail there. That limit
    (8 by default, per function) is raised to RECOMPILE_LIMIT: one model has 5-7 weight shapes,
    and past the limit a shape silently takes the eager path, several times slower
    (docs/benchmarks.md, GGUF)."""

    def __init__(self, fn):
        self.fn = fn
        self.compiled = None  # None: not tried yet; False: compiling failed
        self.uncompiled: set = set()  # keys of the shapes that take the eager path

    def __call__(self, key, *args) -> torch.Tensor | None:
        if self.compiled is False or key in self.uncompiled:
            return None
        if self.compiled is None:
            try:
                import torch._dynamo.config

                limit = torch._dynamo.config.recompile_limit
                torch._dynamo.config.recompile_limit = max(limit, RECOMPILE_LIMIT)
                compiled = torch.compile(self.fn, dynamic=False, fullgraph=True)
                out = compiled(*args)  # fail here, once, if this machine cannot compile
            except Exception as exc:
                logger.warning("compiled %s unavailable, using torch's: %s", self.fn.__name__, exc)
                self.compiled = False
                return None
            self.compiled = compiled
            return out
        try:
            return self.compiled(*args)
        except Exception as exc:
            logger.warning("%s for %s not compiled (%s); using torch's", self.fn.__name__, key,
                           type(exc).__name__)
            self.uncompiled.add(key)
            return None


_compiled_gemv = ShapeCompiled(_gemv_math)


def _gemv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    out = _compiled_gemv(weight.shape, x, weight)
    # exact, where torch's bf16 GEMV rounds x
    return F.linear(x, _upcast(weight, x)) if out is None else out


def scratch(n: int, like: torch.Tensor) -> torch.Tensor:
    """This thread's reused buffer of at least `n` elements in `like`'s dtype and device (one
    made under inference_mode cannot be written outside it: then a new one)."""
    buf = getattr(_local, "scratch", None)
    if buf is None or buf.numel() < n or buf.dtype != like.dtype or buf.device != like.device \
            or (buf.is_inference() and not torch.is_inference_mode_enabled()):
        buf = torch.empty(max(n, 1 << 20), dtype=like.dtype, device=like.device)
        _local.scratch = buf
    return buf[:n]


def _upcast(weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return scratch(weight.numel(), like).view(weight.shape).copy_(weight)


class Linear(nn.Linear):
    wide_weight: torch.Tensor | None = None  # set by the loader, see the module docstring
    lora_key: tuple[int, str] | None = None  # (layer, name) for LoRA adapters (engine/lora.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = linear(x, self.weight, self.bias, self.wide_weight)
        if self.lora_key is not None and (batch := lora.current.get()) is not None:
            out = batch.add(self.lora_key, x, out)  # the rows' adapters' low-rank products
        return out
