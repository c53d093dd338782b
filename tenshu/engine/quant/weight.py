"""QuantWeight: the engine's one quantized weight, integer codes in groups along the input dim.

    W[r, c] = scales[r, g] * (q[r, c] - offset) - mins[r, g],   g = c // group_size

in float32 with one rounding per operation, in that order, so that the GGML formats map onto it
*exactly* (bit for bit against gguf-py's dequantization; `quant/ggml.py` converts them):

    Q8_0  8-bit, groups of 32: q int8, scale d (f16), no min
    Q4_0  4-bit, groups of 32: q 0..15, offset 8, scale d (f16), no min
    Q4_1  4-bit, groups of 32: q 0..15, scale d, min -m (ggml adds m: negating it is exact)
    Q5_0  5-bit codes widened to int8 (q - 16, -16..15), groups of 32, scale d, no min
    Q5_1  5-bit codes widened to int8 (0..31), groups of 32, scale d, min -m
    Q4_K  4-bit, groups of 32: q 0..15, scale d*sc, min dmin*m (sc, m the 6-bit sub-block pair)
    Q5_K  5-bit codes widened to int8 (0..31), groups of 32, scale and min as Q4_K
    Q6_K  6-bit codes q 0..63, offset 32, groups of 16, scale d*sc (sc int8)

4-bit codes are packed two to a byte: a row's low nibbles are its first K/2 columns, the high
nibbles the last K/2 (so unpacking is two strided copies). 6-bit codes are a 4-bit row (their
low four bits, [N, K/2]) followed by their top two bits four to a byte ([N, K/4]: byte j holds
columns j, j + K/4, j + K/2 and j + 3K/4 in bits 0-1, 2-3, 4-5 and 6-7).

Scales and mins come in three forms, each read as the same float32 values:
- flat: float32 [N, groups] (what quantization on load and GPTQ/AWQ make);
- half: float16 [N, groups], as GGML's 32-value blocks hold them (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1);
- two-level, as the K-quants hold them (`two_level()`): int8 [N, 4 K/256 + groups], each row the
  bytes of a float32 per super-block of 256 columns, then an int8 factor per group; a group's
  value is the product of the two, exact (a 6- or 8-bit integer times an f16, which an f16
  itself does not always hold).
So a weight takes 8.5 bits (Q8_0), 4.5 (Q4_0), 4.75 (Q4_K), 6.6 (Q6_K) and 8.75 (Q5_K: codes
widened to a byte for simplicity) against 8.5, 4.5, 4.5, 6.6 and 5.5 in the file.

A product x @ W.T never makes a float copy of W. On a CPU, up to kernels.MAX_ROWS rows
(decoding: one per sequence) go to tenshu's own kernel (engine/kernels), which reads each weight
row once and multiplies it with every row of x: in float32, or, where the engine asks for it
(EngineConfig.int8_activations, the default), with x rounded to int8 per 32 values and the codes
multiplied in integers, as llama.cpp does (then up to kernels.int8_max_rows() rows: a batch of
sequences, a short prompt; with VNNI, a CPU prompt chunk). Where the kernels cannot be built,
one row runs a GEMV that inductor compiles per weight shape. More rows (prompts) dequantize W a
row chunk at a time into a reused scratch buffer (with the kernels, on all threads) and
multiply there: in float32, or with int8 activations on a CPU with native bf16, in bf16
(QuantWeight.bf16_gemm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tenshu.engine import kernels
from tenshu.engine.config import cpu_has_native_bf16
from tenshu.engine.layers.linear import ShapeCompiled, scratch

SUPER_BLOCK = 256  # columns under one float of two-level scales (the K-quants' super-block)


def two_level(supers: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Two-level scales or mins (see the module docstring) from float32 `supers` [N, K/256] and
    integer `factors` [N, groups] (each within int8)."""
    return torch.cat((supers.float().contiguous().view(torch.int8), factors.to(torch.int8)),
                     dim=1)


def _flat(t: torch.Tensor, groups: int) -> torch.Tensor:
    """Scales or mins of `groups` groups a row, in any form, as float32 [N, groups]."""
    if t.dtype != torch.int8:
        return t.float()
    n, supers = t.shape[0], (t.shape[1] - groups) // 4
    d = t[:, :4 * supers].contiguous().view(torch.float32)  # [N, supers]
    return (d.unsqueeze(-1) * t[:, 4 * supers:].float().view(n, supers, -1)).view(n, groups)


def _regroup(t: torch.Tensor, groups: int, repeat: int) -> torch.Tensor:
    """Scales or mins of `groups` groups a row, each group `repeat` times (groups that size
    smaller), in t's form."""
    if repeat == 1:
        return t
    if t.dtype != torch.int8:
        return t.repeat_interleave(repeat, dim=1)
    head = t.shape[1] - groups
    return torch.cat((t[:, :head], t[:, head:].repeat_interleave(repeat, dim=1)), dim=1)


def pack4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes 0..15 [N, K] -> [N, K/2]: low nibbles the first half of the row."""
    half = codes.shape[1] // 2
    return codes[:, :half] | (codes[:, half:] << 4)


def pack6(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes 0..63 [N, K] -> [N, 3K/4]: the low four bits as pack4 lays them, then the
    top two bits of columns j, j + K/4, j + K/2, j + 3K/4 in byte j."""
    quarter = codes.shape[1] // 4
    top = (codes >> 4).view(codes.shape[0], 4, quarter)
    packed_top = top[:, 0] | (top[:, 1] << 2) | (top[:, 2] << 4) | (top[:, 3] << 6)
    return torch.cat((pack4(codes & 15), packed_top), dim=1)


# Rows dequantized at once: about 256 KiB of float32 per chunk keeps the chunk in L2 between the
# dequantization and the product for a single row; batches amortize the chunk over more rows,
# so they take bigger ones (fewer, larger GEMMs).
CHUNK_ELEMENTS = 1 << 16
BATCH_CHUNK_ELEMENTS = 1 << 22


class QuantWeight(nn.Module):
    """A [out_features, in_features] weight in groupwise integer codes (see the module
    docstring). Its tensors are buffers, so `.to(device)` moves them with the model."""

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor | None,
                 *, bits: int, group_size: int, offset: int = 0, in_features: int):
        super().__init__()
        if bits not in (4, 6, 8):
            raise ValueError(f"bits must be 4, 6 or 8, got {bits}")
        if in_features % group_size or (bits == 4 and in_features % 2):
            raise ValueError(f"in_features {in_features} is not a multiple of the group size "
                             f"{group_size}")
        if bits == 6 and (in_features % 128 or group_size not in (16, 32)):
            raise ValueError(f"6-bit codes need rows of a multiple of 128 in groups of 16 or "
                             f"32, got {in_features} in groups of {group_size}")
        rows, groups = qweight.shape[0], in_features // group_size
        two = scales.dtype == torch.int8
        width = groups + 4 * (in_features // SUPER_BLOCK) if two else groups
        if qweight.shape[1] != in_features * bits // 8 or scales.shape != (rows, width) or \
                (two and in_features % SUPER_BLOCK) or \
                (mins is not None and (mins.shape, mins.dtype) != (scales.shape, scales.dtype)):
            raise ValueError(f"codes {tuple(qweight.shape)} and scales {tuple(scales.shape)} do "
                             f"not fit a {bits}-bit [{rows}, {in_features}] weight")
        if scales.dtype not in (torch.int8, torch.float16):
            scales, mins = scales.float(), None if mins is None else mins.float()
        self.register_buffer("qweight", qweight)  # int8 [N, K]; uint8 [N, K/2] (4-bit), [N, 3K/4]
        self.register_buffer("scales", scales)  # [N, groups] float32 or 16, or two-level int8
        self.register_buffer("mins", mins)
        self.bits, self.group_size, self.offset = bits, group_size, offset
        self.shape = torch.Size((rows, in_features))
        # decoding products round x to int8 and multiply in integers, and prompts multiply in
        # bf16 where the CPU does so natively (use_int8_activations)
        self.int8_activations = self.bf16_gemm = False

    @property
    def two_level(self) -> bool:
        """Whether the scales (and mins) are two-level (see the module docstring)."""
        return self.scales.dtype == torch.int8

    def extra_repr(self) -> str:
        return (f"shape={tuple(self.shape)}, bits={self.bits}, group_size={self.group_size}, "
                f"offset={self.offset}, mins={self.mins is not None}, "
                f"scales={str(self.scales.dtype).removeprefix('torch.')}"
                f"{' (two-level)' if self.two_level else ''}")

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x @ W.T + bias: what `layers.linear.linear()` calls for a quantized weight."""
        return quant_linear(x, self, bias)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def take_rows(self, index: torch.Tensor) -> QuantWeight:
        """The weight made of rows `index`, in that order (llama.cpp's q/k row permutation)."""
        return QuantWeight(self.qweight[index], self.scales[index],
                           None if self.mins is None else self.mins[index], bits=self.bits,
                           group_size=self.group_size, offset=self.offset,
                           in_features=self.shape[1])

    def use_int8_activations(self, on: bool) -> bool:
        """Whether decoding products (up to kernels.int8_max_rows() rows on a CPU) round x to int8
        per 32 values and multiply the codes in integers, as llama.cpp does: 1.3-2.2x the float
        kernel's speed with VNNI, 1.0-1.9x with AVX2 alone (docs/benchmarks.md), x @ W.T with
        x's int8 rounding (under 1% of the result). Taken where the kernels are built, the CPU
        has integer dot products (AVX2, or VNNI) and the layout fits; returns whether it is.
        Then the larger products (prompts) also leave float32, as llama.cpp's do, where the CPU
        multiplies bf16 natively (AVX512-BF16, AMX): x and each dequantized chunk of W rounded
        to bf16, twice float32's GEMM speed (docs/benchmarks.md), results within bf16's
        rounding (~0.4%)."""
        cpu = kernels.ops() if on and self.qweight.device.type == "cpu" else None
        self.int8_activations = (cpu is not None and cpu.has_int8_dot_instructions()
                                 and cpu.int8_dot_fits(self.shape[1], self.bits, self.group_size))
        self.bf16_gemm = self.int8_activations and cpu_has_native_bf16()
        return self.int8_activations

    def packed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(codes, scales, mins) laid out as the CPU kernels read them (contiguous)."""
        mins = None if self.mins is None else self.mins.contiguous()
        return self.qweight.contiguous(), self.scales.contiguous(), mins

    def _format(self) -> tuple:
        return self.bits, self.group_size, self.offset, self.mins is not None, self.scales.dtype

    def group_scales(self, rows: slice | torch.Tensor = slice(None)) -> torch.Tensor:
        """The scales of `rows` as float32 [n, groups], whichever form they are held in."""
        return _flat(self.scales[rows], self.shape[1] // self.group_size)

    def group_mins(self, rows: slice | torch.Tensor = slice(None)) -> torch.Tensor | None:
        return None if self.mins is None else \
            _flat(self.mins[rows], self.shape[1] // self.group_size)

    def codes(self, rows: slice | torch.Tensor = slice(None)) -> torch.Tensor:
        """The codes of `rows` one to a byte ([n, K]; int8 when 8-bit, else uint8), offset kept."""
        packed = self.qweight[rows]
        if self.bits == 8:
            return packed
        half = self.shape[1] // 2
        low = torch.cat((packed[:, :half] & 15, packed[:, :half] >> 4), dim=1)
        if self.bits == 4:
            return low
        top = packed[:, half:]
        return low | (torch.cat((top & 3, (top >> 2) & 3, (top >> 4) & 3, top >> 6), dim=1) << 4)

    def _int8_codes(self) -> torch.Tensor:
        """The codes, offset subtracted, as int8 [N, K]."""
        if self.bits == 8:
            return self.qweight - self.offset if self.offset else self.qweight
        return self.codes().view(torch.int8) - self.offset

    @staticmethod
    def cat(parts: list[QuantWeight]) -> QuantWeight:
        """Row-wise concatenation (a fused q/k/v or gate/up). Parts in different formats (a
        Q4_K q with a Q6_K v) are first brought to one, exactly: the smallest group size (a
        group's scale and min repeated), zero mins where a part has none, and codes with the
        offsets subtracted, as 6-bit codes with offset 32 where every part fits (4-bit codes
        beside 6-bit ones) and as int8 otherwise. Scales keep their form where all parts'
        have one, else become flat float32."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        in_features = first.shape[1]
        if all(p._format() == first._format() for p in parts):
            return QuantWeight(torch.cat([p.qweight for p in parts]),
                               torch.cat([p.scales for p in parts]),
                               None if first.mins is None else torch.cat([p.mins for p in parts]),
                               bits=first.bits, group_size=first.group_size,
                               offset=first.offset, in_features=in_features)
        group = min(p.group_size for p in parts)
        one_form = len({p.scales.dtype for p in parts}) == 1

        def factors(p: QuantWeight, t: torch.Tensor) -> torch.Tensor:
            groups = in_features // p.group_size
            t = t if one_form else _flat(t, groups)
            return _regroup(t, groups, p.group_size // group)

        scales = [factors(p, p.scales) for p in parts]
        mins = None
        if any(p.mins is not None for p in parts):
            mins = [torch.zeros_like(s) if p.mins is None else factors(p, p.mins)
                    for p, s in zip(parts, scales, strict=True)]
            mins = torch.cat(mins)
        six = {p.bits for p in parts} == {4, 6} and group in (16, 32) and \
            in_features % 128 == 0 and \
            all(p.offset == 32 if p.bits == 6 else 0 <= p.offset <= 16 for p in parts)
        if six:  # codes - offset within [-32, 31]: as 6-bit codes + 32
            codes = pack6(torch.cat([(p._int8_codes() + 32).view(torch.uint8) for p in parts]))
            return QuantWeight(codes, torch.cat(scales), mins, bits=6, group_size=group,
                               offset=32, in_features=in_features)
        return QuantWeight(torch.cat([p._int8_codes() for p in parts]), torch.cat(scales), mins,
                           bits=8, group_size=group, in_features=in_features)

    def dequantize(self, rows: slice | torch.Tensor = slice(None), out: torch.Tensor | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W[rows] as floats, written into `out` ([n, K]) when given. A tensor `rows` gathers
        rows (an embedding lookup)."""
        codes = self.qweight[rows]
        n, k = codes.shape[0], self.shape[1]
        w = torch.empty(n, k, dtype=dtype, device=codes.device) if out is None else out
        if self.bits == 4:
            half = k // 2
            w[:, :half].copy_(codes & 15)
            w[:, half:].copy_(codes >> 4)
        else:
            w.copy_(codes if self.bits == 8 else self.codes(rows))
        if self.offset:
            w.sub_(self.offset)  # exact: small integers in any float type
        groups = w.view(n, k // self.group_size, self.group_size)
        groups.mul_(self.group_scales(rows).to(dtype).unsqueeze(-1))
        if self.mins is not None:
            groups.sub_(self.group_mins(rows).to(dtype).unsqueeze(-1))
        return w


def _gemv_math(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor,
               mins: torch.Tensor | None, offset: int) -> torch.Tensor:
    # [1, K] x W [N, K] -> [1, N], W's groups as [N, halves, groups per half, group size]:
    # a 4-bit row's two halves are its two nibbles; compiled, the unpacking fuses into the sum
    n, groups = scales.shape
    halves = 2 if q.dtype == torch.uint8 else 1
    size = q.shape[1] * halves // groups
    q = q.view(n, 1, groups // halves, size)
    codes = torch.cat((q & 15, q >> 4), dim=1) if halves == 2 else q
    w = (codes.to(x.dtype) - offset) * scales.view(n, halves, -1, 1).to(x.dtype)
    if mins is not None:
        w = w - mins.view(n, halves, -1, 1).to(x.dtype)
    return (w * x.view(1, halves, groups // halves, size)).sum((-1, -2, -3)).unsqueeze(0)


_compiled_gemv = ShapeCompiled(_gemv_math)


def quant_linear(x: torch.Tensor, weight: QuantWeight, bias: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """x @ W.T + bias in x's dtype (see the module docstring for how)."""
    out_features, in_features = weight.shape
    halves_align = weight.bits == 8 or in_features // weight.group_size % 2 == 0  # _gemv_math
    if weight.bits == 6:
        halves_align = kernels.ops() is not None  # no compiled GEMV: dequantized chunks
    n_rows = x.numel() // in_features
    on_cpu = x.device.type == "cpu" and halves_align
    cpu = kernels.ops() if on_cpu else None
    out = None
    if cpu is not None and weight.int8_activations and n_rows <= kernels.int8_max_rows():
        out = cpu.quant_matmul_int8(x.reshape(n_rows, in_features), *weight.packed(),
                                    weight.bits, weight.group_size, weight.offset)
    elif cpu is not None and n_rows <= kernels.MAX_ROWS:
        out = cpu.quant_matmul(x.reshape(n_rows, in_features), *weight.packed(), weight.bits,
                               weight.group_size, weight.offset)
    elif on_cpu and n_rows == 1:  # no kernels: inductor's GEMV, compiled per weight shape
        key = (weight.shape, weight.bits, weight.group_size, weight.offset,
               weight.mins is None, x.dtype)
        out = _compiled_gemv(key, x.reshape(1, in_features), weight.qweight,
                             weight.group_scales(), weight.group_mins(), weight.offset)
    if out is not None:
        out = out.view(*x.shape[:-1], out_features)
        return out if bias is None else out + bias.to(x.dtype)
    budget = CHUNK_ELEMENTS if x.numel() <= 8 * in_features else BATCH_CHUNK_ELEMENTS
    rows = max(1, min(out_features, budget // in_features))
    buf = scratch(rows * in_features, x)
    bias = None if bias is None else bias.to(x.dtype)
    on_threads = x.dtype == torch.float32 and cpu is not None
    narrow = on_threads and weight.bf16_gemm  # see QuantWeight.use_int8_activations
    lhs = x.to(torch.bfloat16) if narrow else x

    def product(part: slice, into: torch.Tensor) -> torch.Tensor:
        """x @ W[part].T + bias[part], W[part] decoded into `into`: the kernel makes the same
        floats as dequantize(), on all threads in one pass."""
        if not on_threads:
            w = weight.dequantize(part, into, x.dtype)
        else:
            w = cpu.dequantize_rows(*weight.packed(), weight.bits, weight.group_size,
                                    weight.offset, part.start or 0, into)
        part_bias = None if bias is None else bias[part]
        if narrow:
            out = F.linear(lhs, w.to(torch.bfloat16)).to(x.dtype)
            return out if part_bias is None else out + part_bias
        return F.linear(x, w, part_bias)

    if rows == out_features:
        return product(slice(None), buf.view(rows, in_features))
    out = torch.empty(*x.shape[:-1], out_features, dtype=x.dtype, device=x.device)
    for start in range(0, out_features, rows):
        part = slice(start, min(start + rows, out_features))
        n = part.stop - part.start
        out[..., part] = product(part, buf[: n * in_features].view(n, in_features))
    return out


class QuantEmbedding(nn.Module):
    """An embedding table kept quantized: a lookup dequantizes only the rows it reads. Its
    `weight` also serves a tied output layer through `linear()`."""

    def __init__(self, weight: QuantWeight):
        super().__init__()
        self.weight = weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight.dequantize(ids.reshape(-1)).view(*ids.shape, self.weight.shape[1])
