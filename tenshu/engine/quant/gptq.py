"""GPTQ and AWQ int4 safetensors checkpoints -> QuantWeights, exactly.

A checkpoint says what it is in config.json's `quantization_config` (`quant_method` "gptq" or
"awq"). Each quantized Linear `X` is stored as int32 words of eight 4-bit values, word bit
4*i holding value i, with float16 scales per group of `group_size` input features:

GPTQ (AutoGPTQ, optimum, GPTQModel; `format`/`checkpoint_format` "gptq", also called v1):
    X.qweight  int32 [K/8, N]  packed along the input dim: word [r, n] holds q[8r + i, n]
    X.qzeros   int32 [G, N/8]  packed along the output dim: word [g, c] holds z[g, 8c + i]
    X.scales   f16   [G, N]
    X.g_idx    int32 [K]       the group of each input feature
    W[n, k] = scales[g, n] * (q[k, n] - (z[g, n] + 1)),  g = g_idx[k]
  v1 stores each zero point minus one (AutoGPTQ's packer subtracts it, every v1 kernel adds it
  back, so a zero point of 0, stored as 15, reads as 16 here as in those kernels: the flaw
  that v2 fixes); GPTQModel's "gptq_v2" stores it as is. Only g_idx[k] = k // group_size is supported:
  act-order checkpoints (desc_act=True) with a permuted g_idx are refused, since a QuantWeight's
  groups are contiguous runs of input features.
AWQ (AutoAWQ's GEMM format, `version`/`format` "gemm"):
    X.qweight  int32 [K, N/8]  packed along the output dim, in the order [0, 2, 4, 6, 1, 3, 5, 7]:
                               word [k, c] value i holds q[k, 8c + ORDER[i]]
    X.qzeros   int32 [G, N/8]  the same packing
    X.scales   f16   [G, N]
    W[n, k] = scales[g, n] * (q[k, n] - z[g, n]),  g = k // group_size

A QuantWeight computes scale * (q - offset) - min. Where every zero point of a weight is one
value (symmetric GPTQ: 8) it becomes `offset`, the same float32 operations as the formula; else
min = scale * z, and scale * q - scale * z is still exact in float32 for f16 scales (both
products are exact, and so is their difference, a multiple of the scale below 2^16 of it).
These layouts were taken from the published packers and dequantizers (AutoGPTQ, AutoAWQ,
GPTQModel, vLLM), read offline; the installed transformers delegates to those libraries and has
no packer of its own. The tests pack checkpoints to this description.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tenshu.core.errors import ModelLoadError, UnsupportedModelError
from tenshu.engine.quant.load import QuantLoad
from tenshu.engine.quant.weight import QuantWeight, pack4

METHODS = ("gptq", "awq")
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # value i of a word holds column ORDER[i] of its eight
_PARTS = ("qweight", "qzeros", "scales", "g_idx")
_SHIFTS = torch.arange(0, 32, 4, dtype=torch.int32)


@dataclass(frozen=True)
class PackedFormat:
    method: str  # gptq or awq (the group size follows from the tensors' shapes)
    zero_plus_one: bool  # GPTQ v1 stores zero points minus one


def packed_format(hf_config) -> PackedFormat | None:
    """The checkpoint's packed int4 format from `quantization_config`, or None for a float
    checkpoint; an unsupported variant is an UnsupportedModelError that says which."""
    qc = getattr(hf_config, "quantization_config", None)
    if qc is None:
        return None
    if not isinstance(qc, dict):
        qc = qc.to_dict()
    method = str(qc.get("quant_method", "")).lower()
    if method not in METHODS:
        raise UnsupportedModelError(f"checkpoint quantization {method!r} is not supported; "
                                    f"supported: {', '.join(METHODS)} (4-bit)")
    if qc.get("bits", 4) != 4:
        raise UnsupportedModelError(f"{method} with {qc.get('bits')} bits is not supported; "
                                    "only 4-bit")
    if method == "awq":
        version = str(qc.get("version") or qc.get("format") or "gemm").lower()
        if version != "gemm" or qc.get("zero_point", True) is not True:
            raise UnsupportedModelError(f"AWQ format {version!r} (zero_point="
                                        f"{qc.get('zero_point', True)}) is not supported; only "
                                        "'gemm' with zero points")
        return PackedFormat("awq", False)
    fmt = str(qc.get("checkpoint_format") or qc.get("format") or "gptq").lower()
    if fmt not in ("gptq", "gptq_v2"):
        raise UnsupportedModelError(f"GPTQ checkpoint format {fmt!r} is not supported; "
                                    "supported: gptq, gptq_v2")
    return PackedFormat("gptq", fmt == "gptq")


def _unpack_rows(words: torch.Tensor) -> torch.Tensor:
    """int32 [R, C] packed along dim 0 -> uint8 [8R, C]."""
    r, c = words.shape
    return ((words.unsqueeze(1) >> _SHIFTS.view(1, 8, 1)) & 15).to(torch.uint8).view(8 * r, c)


def _unpack_cols(words: torch.Tensor) -> torch.Tensor:
    """int32 [R, C] packed along dim 1 -> uint8 [R, 8C]."""
    r, c = words.shape
    return ((words.unsqueeze(2) >> _SHIFTS.view(1, 1, 8)) & 15).to(torch.uint8).view(r, 8 * c)


def _awq_unpack(words: torch.Tensor) -> torch.Tensor:
    values = _unpack_cols(words).view(words.shape[0], -1, 8)  # [R, C, value i]
    out = torch.empty_like(values)
    out[..., list(AWQ_ORDER)] = values  # column ORDER[i] <- value i
    return out.view(words.shape[0], -1)


def _weight(q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor) -> QuantWeight:
    """q uint8 [N, K], zero points [N, G] (integers), scales [N, G] -> QuantWeight."""
    n, k = q.shape
    group = k // scales.shape[1]
    scales = scales.float().contiguous()
    first = int(zeros.flatten()[0])
    if bool((zeros == first).all()):
        return QuantWeight(pack4(q), scales, None, bits=4, group_size=group, offset=first,
                           in_features=k)
    mins = scales * zeros.float()
    return QuantWeight(pack4(q), scales, mins, bits=4, group_size=group, in_features=k)


def gptq_weight(qweight, qzeros, scales, g_idx, fmt: PackedFormat) -> QuantWeight:
    k, n = qweight.shape[0] * 8, qweight.shape[1]
    groups = scales.shape[0]
    if k % groups or qzeros.shape != (groups, n // 8) or scales.shape[1] != n:
        raise ModelLoadError(f"GPTQ tensors do not fit together: qweight {tuple(qweight.shape)}"
                             f", qzeros {tuple(qzeros.shape)}, scales {tuple(scales.shape)}")
    if g_idx is not None and not torch.equal(g_idx.long(), torch.arange(k) // (k // groups)):
        raise UnsupportedModelError(
            "GPTQ act-order (desc_act=True, a permuted g_idx) is not supported: the engine's "
            "quantized weights keep groups of consecutive input features; use a checkpoint "
            "made with desc_act=False")
    q = _unpack_rows(qweight).T  # [N, K]
    zeros = _unpack_cols(qzeros).T.to(torch.int16) + int(fmt.zero_plus_one)  # [N, G]
    return _weight(q.contiguous(), zeros, scales.T)


def awq_weight(qweight, qzeros, scales) -> QuantWeight:
    k, n = qweight.shape[0], qweight.shape[1] * 8
    groups = scales.shape[0]
    if k % groups or qzeros.shape != (groups, n // 8) or scales.shape[1] != n:
        raise ModelLoadError(f"AWQ tensors do not fit together: qweight {tuple(qweight.shape)}"
                             f", qzeros {tuple(qzeros.shape)}, scales {tuple(scales.shape)}")
    q = _awq_unpack(qweight).T  # [N, K]
    zeros = _awq_unpack(qzeros).T.to(torch.int16)  # [N, G]
    return _weight(q.contiguous(), zeros, scales.T)


def packed_targets(model: nn.Module, names: list[str], target_of) -> list[str]:
    """The model's parameters that the checkpoint stores packed: those with an `X.qweight`."""
    out = []
    for name in names:
        if name.endswith(".qweight"):
            target, _ = target_of(model, name)
            weight = f"{target.rsplit('.', 1)[0]}.weight"
            if weight not in out:
                out.append(weight)
    return out


class PackedCheckpoint(QuantLoad):
    """Collects each packed module's tensors as the loader reads them, and converts it once the
    files are read (its parts may sit in different shards)."""

    def __init__(self, model: nn.Module, targets: list[str], fmt: PackedFormat):
        super().__init__(model, targets)
        self.fmt = fmt
        self.raw: dict[tuple[str, int | None], dict[str, torch.Tensor]] = {}

    def add(self, name: str, target: str, shard: int | None,
            read: Callable[[], torch.Tensor]) -> None:
        part = name.rsplit(".", 1)[1]
        if part not in _PARTS:
            raise ModelLoadError(f"unexpected tensor {name} in a {self.fmt.method} checkpoint")
        weight_target = f"{target.rsplit('.', 1)[0]}.weight"
        self.raw.setdefault((weight_target, shard), {})[part] = read()

    def finish(self) -> None:
        for key in list(self.raw):
            t = self.raw.pop(key)  # popped: its raw tensors freed once converted
            needed = ("qweight", "qzeros", "scales")
            if missing := [p for p in needed if p not in t]:
                raise ModelLoadError(f"{key[0]}: the checkpoint has no {', '.join(missing)}")
            if self.fmt.method == "gptq":
                weight = gptq_weight(t["qweight"], t["qzeros"], t["scales"], t.get("g_idx"),
                                     self.fmt)
            else:
                weight = awq_weight(t["qweight"], t["qzeros"], t["scales"])
            self.parts.setdefault(key[0], {})[key[1]] = weight

    def claims(self, name: str, target: str) -> bool:
        return name.rsplit(".", 1)[1] in _PARTS and super().claims(name, target)
