"""GGML tensor types -> the engine's weights: float types to torch tensors, quantized blocks to a
QuantWeight (the mapping of each format is in quant/weight.py's docstring).

Each converter takes a tensor's raw bytes as a uint8 [rows, bytes per row] tensor (the layout
of llama.cpp's ggml-common.h blocks, read as gguf-py's dequantizers read them) and returns the
values that those dequantizers compute, exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tenshu.engine.quant.weight import SUPER_BLOCK, QuantWeight, pack4, pack6, two_level

QK_K = SUPER_BLOCK  # the K-quants' super-block


def _half(raw: torch.Tensor) -> torch.Tensor:
    """[..., 2] little-endian bytes -> float16 [...] (a QuantWeight keeps 32-value blocks'
    scales so)."""
    return raw.contiguous().view(torch.float16).squeeze(-1)


def _f16(raw: torch.Tensor) -> torch.Tensor:
    """[..., 2] little-endian bytes -> float32 [...]."""
    return _half(raw).float()


def _blocks(raw: torch.Tensor, block_bytes: int) -> torch.Tensor:
    rows, nbytes = raw.shape
    return raw.view(rows, nbytes // block_bytes, block_bytes)  # [N, blocks, bytes]


def q8_0(raw: torch.Tensor) -> QuantWeight:
    b = _blocks(raw, 34)  # d f16, qs int8[32]
    rows, nb, _ = b.shape
    q = b[..., 2:].contiguous().view(torch.int8).reshape(rows, nb * 32)
    return QuantWeight(q, _half(b[..., :2]), None, bits=8, group_size=32, in_features=nb * 32)


def q4_0(raw: torch.Tensor) -> QuantWeight:
    b = _blocks(raw, 18)  # d f16, qs[16]: element j low nibble, element j + 16 high nibble
    rows, nb, _ = b.shape
    qs = b[..., 2:]
    codes = torch.cat((qs & 15, qs >> 4), dim=-1).reshape(rows, nb * 32)
    return QuantWeight(pack4(codes), _half(b[..., :2]), None, bits=4, group_size=32, offset=8,
                       in_features=nb * 32)


def q4_1(raw: torch.Tensor) -> QuantWeight:
    b = _blocks(raw, 20)  # d f16, m f16, qs[16] as Q4_0's; w = d * q + m
    rows, nb, _ = b.shape
    qs = b[..., 4:]
    codes = torch.cat((qs & 15, qs >> 4), dim=-1).reshape(rows, nb * 32)
    return QuantWeight(pack4(codes), _half(b[..., :2]), -_half(b[..., 2:4]), bits=4,
                       group_size=32, in_features=nb * 32)  # minus -m: exactly + m


def _q5_codes(b: torch.Tensor, qh_at: int) -> torch.Tensor:
    """Q5_0/Q5_1: qh (32 high bits, element j's is bit j) and qs[16] (Q4_0's nibbles) -> the
    5-bit codes 0..31, uint8 [N, blocks * 32]."""
    rows, nb, _ = b.shape
    qs = b[..., qh_at + 4:]
    low = torch.cat((qs & 15, qs >> 4), dim=-1)  # [N, blocks, 32]
    qh = b[..., qh_at:qh_at + 4].unsqueeze(-1)  # 4 bytes: elements 8i..8i+7 in byte i
    high = ((qh >> torch.arange(8, dtype=torch.uint8)) & 1).reshape(rows, nb, 32)
    return (low | (high << 4)).reshape(rows, nb * 32)


def q5_0(raw: torch.Tensor) -> QuantWeight:
    b = _blocks(raw, 22)  # d f16, qh[4], qs[16]; w = d * (q - 16)
    codes = _q5_codes(b, 2).view(torch.int8) - 16  # -16..15, the offset taken exactly
    return QuantWeight(codes, _half(b[..., :2]), None, bits=8, group_size=32,
                       in_features=codes.shape[1])


def q5_1(raw: torch.Tensor) -> QuantWeight:
    b = _blocks(raw, 24)  # d f16, m f16, qh[4], qs[16]; w = d * q + m
    codes = _q5_codes(b, 4).view(torch.int8)
    return QuantWeight(codes, _half(b[..., :2]), -_half(b[..., 2:4]), bits=8, group_size=32,
                       in_features=codes.shape[1])


def _k_scales(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K: d, dmin and 8 packed 6-bit (scale, min) pairs -> two-level scales d * sc
    and mins dmin * m, [N, blocks * 8] groups (ggml's get_scale_min_k4)."""
    rows, nb, _ = b.shape
    d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
    packed = b[..., 4:16].reshape(rows, nb, 3, 4)
    lo, hi, mixed = packed[..., 0, :], packed[..., 1, :], packed[..., 2, :]
    sc = torch.cat((lo & 63, (mixed & 15) | ((lo >> 2) & 48)), dim=-1)  # [N, blocks, 8]
    m = torch.cat((hi & 63, (mixed >> 4) | ((hi >> 2) & 48)), dim=-1)
    return two_level(d, sc.reshape(rows, nb * 8)), two_level(dmin, m.reshape(rows, nb * 8))


def q4_k(raw: torch.Tensor) -> QuantWeight:
    b = _blocks(raw, 144)  # d, dmin, scales[12], qs[128]
    rows, nb, _ = b.shape
    scales, mins = _k_scales(b)
    qs = b[..., 16:].reshape(rows, nb, 4, 1, 32)  # 4 chunks of 64: low nibbles, then high
    codes = torch.cat((qs & 15, qs >> 4), dim=3).reshape(rows, nb * QK_K)
    return QuantWeight(pack4(codes), scales, mins, bits=4, group_size=32,
                       in_features=nb * QK_K)


def q5_k(raw: torch.Tensor) -> QuantWeight:
    b = _blocks(raw, 176)  # d, dmin, scales[12], qh[32], qs[128]
    rows, nb, _ = b.shape
    scales, mins = _k_scales(b)
    qs = b[..., 48:].reshape(rows, nb, 4, 1, 32)
    low = torch.cat((qs & 15, qs >> 4), dim=3).reshape(rows, nb, 8, 32)
    shifts = torch.arange(8, dtype=torch.uint8).view(8, 1)
    high = (b[..., 16:48].reshape(rows, nb, 1, 32) >> shifts) & 1  # bit i: sub-block i
    codes = (low | (high << 4)).view(torch.int8).reshape(rows, nb * QK_K)
    return QuantWeight(codes, scales, mins, bits=8, group_size=32, in_features=nb * QK_K)


def q6_k(raw: torch.Tensor) -> QuantWeight:
    b = _blocks(raw, 210)  # ql[128], qh[64], scales int8[16], d
    rows, nb, _ = b.shape
    ql = b[..., :128].reshape(rows, nb, 2, 1, 64)  # two halves of 128 elements
    low = torch.cat((ql & 15, ql >> 4), dim=3).reshape(rows, nb, 8, 32)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8).view(4, 1)
    high = ((b[..., 128:192].reshape(rows, nb, 2, 1, 32) >> shifts) & 3).reshape(rows, nb, 8, 32)
    codes = (low | (high << 4)).reshape(rows, nb * QK_K)  # 0..63, offset 32
    sc = b[..., 192:208].contiguous().view(torch.int8).reshape(rows, nb * 16)
    return QuantWeight(pack6(codes), two_level(_f16(b[..., 208:210]), sc), None, bits=6,
                       group_size=16, offset=32, in_features=nb * QK_K)


def f32(raw: torch.Tensor) -> torch.Tensor:
    return raw.view(torch.float32)


def f16(raw: torch.Tensor) -> torch.Tensor:
    return raw.view(torch.float16)


def bf16(raw: torch.Tensor) -> torch.Tensor:
    return raw.view(torch.bfloat16)


# GGML type name -> converter of its raw bytes
CONVERTERS: dict[str, Callable[[torch.Tensor], torch.Tensor | QuantWeight]] = {
    "F32": f32, "F16": f16, "BF16": bf16,
    "Q8_0": q8_0, "Q4_0": q4_0, "Q4_1": q4_1, "Q5_0": q5_0, "Q5_1": q5_1,
    "Q4_K": q4_k, "Q5_K": q5_k, "Q6_K": q6_k,
}


def convert(type_name: str, raw: torch.Tensor) -> torch.Tensor | QuantWeight:
    """A 2-D tensor's raw bytes -> a float tensor or a QuantWeight; raises KeyError for a type
    with no converter (the loader names it)."""
    return CONVERTERS[type_name](raw)
