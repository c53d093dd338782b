"""The quantized weight (engine/quant): GGML types converted exactly, and its products."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

from tenshu.engine import kernels
from tenshu.engine.config import cpu_has_native_bf16
from tenshu.engine.layers.linear import Linear
from tenshu.engine.quant import QuantEmbedding, QuantWeight, ggml, weight
from tests.engine.gguf_files import encode

TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]


def _raw(kind: str, rows: int = 24, cols: int = 512, seed: int = 0) -> np.ndarray:
    w = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    data = encode(w, kind, seed)  # gguf-py's quantizer; K-quants: valid random blocks
    return data.view(np.uint8).reshape(rows, -1)


def _quant(kind: str, **kwargs) -> QuantWeight:
    return ggml.convert(kind, torch.from_numpy(_raw(kind, **kwargs)))


@pytest.mark.parametrize("kind", TYPES)
def test_each_type_converts_exactly_as_gguf_dequantizes(kind):
    raw = _raw(kind)
    reference = torch.from_numpy(dequantize(raw, T[kind]).reshape(24, 512).copy())
    value = ggml.convert(kind, torch.from_numpy(raw))
    ours = value.dequantize() if isinstance(value, QuantWeight) else value.float()
    # bit for bit: the same float32 operations in the same order
    assert torch.equal(ours.view(torch.int32), reference.view(torch.int32))
    if isinstance(value, QuantWeight):
        # stays quantized in memory, its scales as the file holds them (two-level K-quants,
        # float16 for the 32-value blocks); Q5's codes widened to a byte
        bits = 8 * value.nbytes() / reference.numel()
        assert bits == {"Q8_0": 8.5, "Q4_0": 4.5, "Q4_1": 5, "Q5_0": 8.5, "Q5_1": 9,
                        "Q4_K": 4.75, "Q5_K": 8.75, "Q6_K": 6.625}[kind]
        assert value.two_level == kind.endswith("_K")


def test_parts_in_different_formats_concatenate_exactly():
    # a fused q/k/v can hold a Q4_K q, a Q4_0 k and a Q6_K v (llama.cpp's *_M mixes)
    parts = [_quant("Q4_K", rows=8), _quant("Q4_0", rows=4), _quant("Q6_K", rows=4),
             _quant("Q8_0", rows=2)]
    fused = QuantWeight.cat(parts)
    expected = torch.cat([p.dequantize() for p in parts])
    assert torch.equal(fused.dequantize().view(torch.int32), expected.view(torch.int32))
    same = QuantWeight.cat([_quant("Q4_K", rows=8), _quant("Q4_K", rows=8, seed=1)])
    assert same.bits == 4 and same.two_level  # one format: no widening


@pytest.mark.parametrize("parts", [["Q4_K", "Q4_K", "Q6_K"], ["Q4_K", "Q4_0", "Q6_K"]])
def test_4_bit_parts_beside_6_bit_ones_fuse_into_6_bit_codes(parts):
    # a Q4_K_M file's q/k/v where v is Q6_K: 6-bit codes in groups of 16, not a byte each
    weights = [_quant(kind, rows=8, seed=i) for i, kind in enumerate(parts)]
    fused = QuantWeight.cat(weights)
    expected = torch.cat([p.dequantize() for p in weights])
    assert torch.equal(fused.dequantize().view(torch.int32), expected.view(torch.int32))
    assert (fused.bits, fused.group_size, fused.offset) == (6, 16, 32)
    assert fused.two_level == ("Q4_0" not in parts)  # Q4_0's scales are flat
    if fused.two_level:  # 6 bits of code, 0.5 + 0.5 of factors, 0.25 of super-block floats
        assert 8 * fused.nbytes() / expected.numel() == 7.25


def test_scales_and_mins_in_different_forms_are_refused():
    qw = _quant("Q4_K", rows=4)
    with pytest.raises(ValueError, match="do not fit a 4-bit"):
        QuantWeight(qw.qweight, qw.scales, qw.group_mins(), bits=4, group_size=32,
                    in_features=512)


@pytest.fixture(params=["kernels", "torch"])
def paths(request, monkeypatch):
    """Each product twice: through tenshu's CPU kernels (where this machine builds them) and
    through torch's paths alone, which serve where no compiler is."""
    if request.param == "torch":
        monkeypatch.setattr(kernels, "_state", {"ops": None})
    elif kernels.ops() is None:
        pytest.skip("the CPU kernels could not be built here")
    return request.param


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"])
@pytest.mark.parametrize("rows", [1, 5, 40])
def test_quantized_linear_matches_float_math_on_the_dequantized_weight(kind, rows, paths,
                                                                        monkeypatch):
    monkeypatch.setattr(weight, "BATCH_CHUNK_ELEMENTS", 64 * 512)  # several chunks for 40 rows
    qw = _quant(kind, rows=160)
    layer = Linear(512, 160, bias=True)
    torch.nn.init.normal_(layer.bias)
    del layer.weight
    layer.weight = qw  # as the GGUF loader installs it
    x = torch.randn(rows, 512, generator=torch.Generator().manual_seed(rows))
    with torch.inference_mode():
        got = layer(x)
    # outside inference mode too (the thread's scratch buffer was made inside it)
    assert torch.equal(layer(x).detach(), got)
    expected = F.linear(x.double(), qw.dequantize().double(), layer.bias.double())
    # float32 sums in another order (chunked, or the compiled single-row kernel): ~1e-7 relative
    # to the sum of |products|
    scale = (x.double().abs() @ qw.dequantize().double().abs().T).max()
    assert (got.double() - expected).abs().max() <= 1e-6 * scale


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_K", "Q6_K"])
def test_batches_take_the_int8_products_up_to_their_row_limit(kind):
    # a batch of sequences decoding together (up to kernels.int8_max_rows() rows) takes the
    # integer-dot products as one sequence does; past the limit the GEMM on dequantized chunks:
    # float32 (float math to float32 rounding), or bf16 where the CPU multiplies it natively
    ops = kernels.ops()
    if ops is None or not ops.has_int8_dot_instructions():
        pytest.skip("no CPU kernels or no integer dot products (AVX2, VNNI) here: no int8 products")
    qw = _quant(kind, rows=160)
    assert qw.use_int8_activations(True)
    g = torch.Generator().manual_seed(7)
    for rows in (kernels.MAX_ROWS + 1, kernels.int8_max_rows()):
        x = torch.randn(rows, 512, generator=g)
        assert torch.equal(weight.quant_linear(x, qw), ops.quant_matmul_int8(
            x, *qw.packed(), qw.bits, qw.group_size, qw.offset)), rows
    x = torch.randn(kernels.int8_max_rows() + 1, 512, generator=g)
    got = weight.quant_linear(x, qw).double()
    expected = x.double() @ qw.dequantize().double().T
    scale = (x.double().abs() @ qw.dequantize().double().abs().T).max()
    assert qw.bf16_gemm == cpu_has_native_bf16()
    if qw.bf16_gemm:  # x, W and the result each rounded to bf16 (8 bits): ~2^-8 at most
        assert 1e-6 * scale < (got - expected).abs().max() <= 2**-7 * scale
    else:
        assert (got - expected).abs().max() <= 1e-6 * scale


def test_quantized_embedding_dequantizes_the_rows_it_reads():
    qw = _quant("Q6_K", rows=50, cols=256)
    ids = torch.tensor([[3, 0, 49], [7, 7, 1]])
    rows = QuantEmbedding(qw)(ids)
    assert rows.shape == (2, 3, 256)
    assert torch.equal(rows, qw.dequantize()[ids])


def test_row_permutation_keeps_each_row_exact():
    qw = _quant("Q4_K", rows=16)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(qw.take_rows(order).dequantize(), qw.dequantize()[order])
