"""RMSNorm, computed in float32 and cast back exactly as the reference implementations do."""

import torch
import torch.nn.functional as F
from torch import nn

from tenshu.engine import kernels


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32:
            # the operations below in one call: tenshu's CPU kernel (8-10 us a call where
            # torch's composite takes 20-30 on an AVX2 CPU, four norms a layer at every decode
            # step), which may differ from them in the last bit (its sum of squares is added in
            # another order) and has no gradient; else torch's composite, the same floats
            cpu = kernels.ops() if x.device.type == "cpu" else None
            if cpu is not None and not (torch.is_grad_enabled() and
                                        (x.requires_grad or self.weight.requires_grad)):
                return cpu.rms_norm(x, self.weight, self.eps)
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)
