"""Linear layers whose weights may be stored narrower than the activations.

On a CPU without native bf16, a bf16 checkpoint keeps its bf16 weights (half the memory and,
for decoding, half the bytes to read per token) while activations are float32. Few rows (a
decode step of a few sequences) multiply the bf16 weights directly, which reads the fewest
bytes; more rows upcast the weights on the fly (exact) and use the float32 GEMM, which is
several times faster than a bf16 one there. Same dtype on both sides: a plain F.linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Up to this many rows the bf16 matrix-vector path is faster than upcast + float32 GEMM
# (measured on an AVX2 CPU: equal at about 8 rows, 3x slower at 64).
NARROW_MAX_ROWS = 8


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    if weight.dtype == x.dtype:
        return F.linear(x, weight, bias)
    if x.shape[0] <= NARROW_MAX_ROWS:
        return F.linear(x.to(weight.dtype), weight, bias).to(x.dtype)
    return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
