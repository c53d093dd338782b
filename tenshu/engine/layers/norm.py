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
        self._float_weight: tuple[tuple, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            # float32 rows: tenshu's CPU kernel in one call (8-10 us where torch's composite
            # takes 20-30 on an AVX2 CPU, four norms a layer at every decode step), which may
            # differ from the composite in the last bit (its sum of squares is added in another
            # order) and has no gradient; a bf16 weight (a bf16 checkpoint's) multiplies as
            # float32, exactly, as it does below
            cpu = kernels.ops() if x.device.type == "cpu" else None
            if cpu is not None and not (torch.is_grad_enabled() and
                                        (x.requires_grad or self.weight.requires_grad)):
                return cpu.rms_norm(x, self.float_weight(), self.eps)
            if self.weight.dtype == torch.float32:
                return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def float_weight(self) -> torch.Tensor:
        """The weight in float32: itself, or a copy kept while the weight is unchanged."""
        w = self.weight
        if w.dtype == torch.float32:
            return w
        key = (w.data_ptr(), w._version, w.device)
        if self._float_weight is None or self._float_weight[0] != key:
            self._float_weight = (key, w.detach().float())
        return self._float_weight[1]
