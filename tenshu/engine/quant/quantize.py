"""Quantization on load: `LLM(model=dir, quantization="int8" | "int4")` turns each Linear of
the decoder layers into a QuantWeight (quant/weight.py) as the float checkpoint is read, one
tensor at a time, round-to-nearest, in plain torch. The embeddings and the lm_head stay float.

int8: symmetric, groups of 32 along the input dim, scale = max|w| / 127, codes -127..127, no
    min (llama.cpp's Q8_0). Groups rather than one scale per output channel: one outlier input
    column (LLM activations have a few, and the weights that meet them are large) then costs
    precision in its group of 32 only, not across a whole row of thousands; the price is one
    float32 scale per 32 weights (9 bits a weight instead of about 8).
int4: asymmetric, groups of 32: scale = (max - min) / 15, codes 0..15, W = scale * q + min
    (stored as the QuantWeight's min, negated). Groups of 32 rather than GPTQ's usual 128:
    round-to-nearest has no calibration to make up for coarse groups, and 32 is Q4_K's
    sub-block; it costs 6 bits a weight (two float32 per group) against 4.5 for 128.

The QuantWeights are cached beside the model (quant/cache.py), so a second load reads them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tenshu.core.errors import ModelLoadError
from tenshu.engine.quant.load import QuantLoad, decoder_linears
from tenshu.engine.quant.weight import QuantWeight, pack4

METHODS = ("int8", "int4")
GROUP_SIZE = {"int8": 32, "int4": 32}


def quantize(w: torch.Tensor, method: str) -> QuantWeight:
    """A float [N, K] weight -> its `method` QuantWeight (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"unknown quantization {method!r}; supported: {', '.join(METHODS)}")
    group = GROUP_SIZE[method]
    n, k = w.shape
    if k % group:
        raise ModelLoadError(f"cannot quantize a weight with {k} input features to {method}: "
                             f"not a multiple of its group size {group}")
    g = w.float().view(n, k // group, group)  # [N, groups, group]
    if method == "int8":
        scales = g.abs().amax(-1) / 127  # [N, groups]
        safe = torch.where(scales > 0, scales, 1.0).unsqueeze(-1)  # an all-zero group: q = 0
        q = torch.round(g / safe).clamp_(-127, 127).to(torch.int8).view(n, k)
        return QuantWeight(q, scales, None, bits=8, group_size=group, in_features=k)
    low = g.amin(-1)
    scales = (g.amax(-1) - low) / 15
    safe = torch.where(scales > 0, scales, 1.0).unsqueeze(-1)  # a constant group: q = 0, W = min
    q = torch.round((g - low.unsqueeze(-1)) / safe).clamp_(0, 15).to(torch.uint8).view(n, k)
    return QuantWeight(pack4(q), scales, -low, bits=4, group_size=group, in_features=k)


class OnLoadQuantizer(QuantLoad):
    """Quantizes each decoder Linear's checkpoint tensors as the loader reads them."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__(model, decoder_linears(model))
        self.method = method

    def add(self, name: str, target: str, shard: int | None,
            read: Callable[[], torch.Tensor]) -> None:
        weight_target = f"{target.rsplit('.', 1)[0]}.weight"
        if not name.endswith(".weight"):
            raise ModelLoadError(f"unexpected tensor {name} in a float checkpoint")
        # `quantize` is looked up in this module at each call (tests replace it to see if it ran)
        self.parts.setdefault(weight_target, {})[shard] = quantize(read(), self.method)
