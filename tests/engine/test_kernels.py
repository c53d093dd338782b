"""tenshu's CPU kernels (engine/kernels): built for this machine, and the same products as the
float math on the dequantized weights, for every format a QuantWeight holds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tenshu.engine import kernels
from tenshu.engine.quant import QuantWeight
from tenshu.engine.quant.weight import SUPER_BLOCK, two_level


@pytest.fixture(scope="module")
def ops():
    built = kernels.ops()
    if built is None:
        pytest.skip("the CPU kernels could not be built here (no C++ compiler?): torch's "
                    "paths serve, and the other tests cover them")
    return built


def _weight(bits: int, group: int, offset: int, mins: bool, rows: int, cols: int,
            form: str = "flat") -> QuantWeight:
    g = torch.Generator().manual_seed(bits * 1000 + group + offset + mins)
    if bits == 8:
        q = torch.randint(-128, 128, (rows, cols), dtype=torch.int8, generator=g)
    else:
        q = torch.randint(0, 256, (rows, cols * bits // 8), dtype=torch.uint8, generator=g)
    if form == "two-level":  # a float per 256 columns times an int8 factor per group (K-quants)
        def factors(low: int) -> torch.Tensor:
            supers = torch.rand(rows, cols // SUPER_BLOCK, generator=g) * 0.01
            return two_level(supers, torch.randint(low, 64, (rows, cols // group), generator=g))

        scales, low = factors(-64), factors(0) if mins else None
    else:
        scales = torch.rand(rows, cols // group, generator=g) * 0.1
        low = torch.rand(rows, cols // group, generator=g) if mins else None
        if form == "half":  # float16, as GGML's 32-value blocks hold them
            scales, low = scales.half(), None if low is None else low.half()
    return QuantWeight(q, scales, low, bits=bits, group_size=group, offset=offset,
                       in_features=cols)


def _close(got: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
    expected = x.double() @ w.double().T
    # float32 sums in another order: ~1e-7 relative to the sum of |products|; a bf16 result
    # is then rounded to 8 bits of mantissa
    scale = (x.double().abs() @ w.double().abs().T).max()
    rounding = 2.0**-8 * expected.abs() if got.dtype == torch.bfloat16 else 0
    assert got.shape == expected.shape
    assert ((got.double() - expected).abs() <= 2e-6 * scale + rounding).all()


# bits, group, offset, mins, the scales' form: what each GGML / GPTQ / on-load layout becomes
FORMATS = [
    (8, 32, 0, False, "half"),  # Q8_0
    (8, 32, 0, False, "flat"),  # int8 on load
    (4, 32, 8, False, "half"),  # Q4_0
    (4, 32, 0, True, "flat"),  # int4 on load
    (4, 32, 0, True, "two-level"),  # Q4_K
    (8, 32, 0, True, "two-level"),  # Q5_K (codes widened to a byte)
    (6, 16, 32, False, "two-level"),  # Q6_K
    (6, 16, 32, True, "two-level"),  # a Q4_K q/k fused with a Q6_K v
    (6, 16, 32, True, "flat"),  # the same with a Q4_0 part (scales in other forms)
    (8, 16, 0, False, "flat"),  # Q6_K as the int8 codes a mixed fused weight brings it to
    (4, 128, 8, True, "flat"),  # GPTQ / AWQ groups of 128
    (8, 64, 3, False, "flat"),  # any other group size takes the generic loop
]


def _name(fmt: tuple) -> str:
    return "q{}-g{}-off{}-mins{}-{}".format(*fmt)


@pytest.mark.parametrize("fmt", FORMATS, ids=_name)
@pytest.mark.parametrize("rows", [1, 3, 4, 9, 16])
def test_quant_matmul_equals_float_math_on_the_dequantized_weight(ops, fmt, rows):
    bits, group, offset, mins, form = fmt
    # 416: a remainder after the 64-wide sums (two-level scales: whole super-blocks of 256)
    cols = 416 if bits == 8 and group <= 32 and form != "two-level" else 512
    qw = _weight(bits, group, offset, mins, rows=200, cols=cols, form=form)
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows))
    got = ops.quant_matmul(x, qw.qweight, qw.scales, qw.mins, bits, group, offset)
    _close(got, x, qw.dequantize())


def _int8_blocks(x: torch.Tensor) -> torch.Tensor:
    """x as the integer path sees it: each 32 columns scaled by amax / 127, rounded to the
    nearest integer (ties to even), scaled back."""
    blocks = x.view(x.shape[0], -1, 32)
    top = blocks.abs().amax(-1, keepdim=True)
    inverse = torch.where(top > 0, 127.0 / top, torch.zeros_like(top))
    return (torch.round(blocks * inverse) * (top / 127.0)).view_as(x)


INT8_FORMATS = FORMATS  # groups of 16 or of 32 << j: every GGML type, GPTQ and AWQ


@pytest.mark.parametrize("fmt", INT8_FORMATS, ids=_name)
# from 8 rows with VNNI: x's rows sixteen to a vector, two vectors at a time (9 and 16: one
# vector alone; 24: two, the second not full; 67: five, the last alone and not full); 203
# weight rows: a last tile of fewer than four
@pytest.mark.parametrize("rows", [1, 3, 4, 9, 16, 24, 67])
def test_quant_matmul_int8_is_the_product_with_int8_blocks_of_x(ops, fmt, rows):
    # x rounded to int8 per 32 columns (x8) times the weight, to float32's rounding
    bits, group, offset, mins, form = fmt
    # 8-bit codes: 13 blocks, a remainder after the steps of four blocks (groups of 16) or of
    # U blocks; 6-bit: 3 blocks in each quarter of the row; two-level: whole super-blocks
    cols = 512 if form == "two-level" or group == 128 else 416 if bits == 8 and group <= 32 \
        else 384
    qw = _weight(bits, group, offset, mins, rows=203, cols=cols, form=form)
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows)) * 3
    x[0, :32] = 0  # an all-zero block: scale 0, not a division by zero
    got = ops.quant_matmul_int8(x, qw.qweight, qw.scales, qw.mins, bits, group, offset)
    w = qw.dequantize().double()
    expected = _int8_blocks(x).double() @ w.T
    scale = (x.double().abs() @ w.abs().T).max()
    assert ((got.double() - expected).abs() <= 1e-5 * scale).all()
    # and close to the float product: the rounding of x costs well under 1% of its size
    exact = x.double() @ w.T
    assert (got.double() - exact).norm() <= 0.01 * exact.norm()


def test_integer_dot_products_are_the_cpus_own_where_it_has_them(ops):
    # -march=native: VNNI's instruction, or AVX2's pair of them, where /proc/cpuinfo lists
    # them (the engine takes int8 activations only then; elsewhere the emulation is correct but
    # slower than float32)
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        pytest.skip("no /proc/cpuinfo to compare with")
    vnni = "avx512_vnni" in flags and "avx512vl" in flags
    assert ops.has_int8_dot_instructions() == (vnni or "avx2" in flags)
    assert ops.multiplies_int8_lanes() == vnni  # batches: x's rows sixteen to a vector
    # and bf16's (the engine's batches of rows then multiply in bf16: engine/layers/linear.py)
    assert ops.multiplies_bf16() == ("avx512_bf16" in flags)


def test_quant_matmul_int8_says_which_weights_it_takes(ops):
    assert ops.int8_dot_fits(384, 8, 16) and ops.int8_dot_fits(4096, 4, 128)
    assert not ops.int8_dot_fits(400, 8, 16)  # not whole blocks of 32
    assert not ops.int8_dot_fits(352, 4, 32)  # 4-bit halves not whole blocks
    assert not ops.int8_dot_fits(384, 8, 48) and not ops.int8_dot_fits(384, 8, 96)
    qw = _weight(8, 16, 0, False, rows=8, cols=208)
    with pytest.raises(RuntimeError, match="208 columns in groups of 16 has no integer-dot"):
        ops.quant_matmul_int8(torch.randn(1, 208), qw.qweight, qw.scales, None, 8, 16, 0)


@pytest.mark.parametrize("fmt", FORMATS, ids=_name)
def test_dequantize_rows_is_bit_for_bit_the_weights_own(ops, fmt):
    bits, group, offset, mins, form = fmt
    qw = _weight(bits, group, offset, mins, rows=50, cols=512, form=form)
    out = torch.full((20, 512), float("nan"))
    got = ops.dequantize_rows(qw.qweight, qw.scales, qw.mins, bits, group, offset, 7, out)
    assert got.data_ptr() == out.data_ptr()  # written in place
    expected = qw.dequantize(slice(7, 27))
    assert torch.equal(out.view(torch.int32), expected.view(torch.int32))
    with pytest.raises(RuntimeError, match="within the weight's 50 rows"):
        ops.dequantize_rows(qw.qweight, qw.scales, qw.mins, bits, group, offset, 40, out)


def _as_multiplied(x: torch.Tensor, ops) -> torch.Tensor:
    """x as bf16_matmul multiplies it: several rows rounded to bf16 where the CPU multiplies
    bf16 natively, else as it is."""
    return x.bfloat16().float() if ops.multiplies_bf16() and x.shape[0] > 1 else x


# 296 and 40: columns past the vector loop (under a mask, with AVX512-BF16); 301 weight rows:
# a task's last rows, not four; 3, 6 and 7 rows: blocks of four, two and one rows of x, with
# weight rows one at a time (3) and four at a time
@pytest.mark.parametrize("cols", [256, 296, 40])
@pytest.mark.parametrize("rows", [1, 3, 6, 7])
def test_bf16_matmul_reads_bf16_weights_into_float_sums(ops, rows, cols):
    w = torch.randn(301, cols).bfloat16()
    x = torch.randn(rows, cols)
    got = ops.bf16_matmul(x, w)
    assert got.dtype == torch.float32
    _close(got, _as_multiplied(x, ops), w.float())
    if ops.multiplies_bf16() and rows > 1:  # rounded, the rows stay within 1% of the product
        exact = x.double() @ w.double().T
        assert (got.double() - exact).norm() <= 0.01 * exact.norm()
    out = ops.bf16_matmul(x.bfloat16(), w)  # bf16 activations: summed in float32, then rounded
    assert out.dtype == torch.bfloat16
    _close(out, x.bfloat16().float(), w.float())


def test_batches_of_float_rows_read_bf16_weights_through_the_kernel(ops):
    # a batch of decoding sequences (float32 rows, bf16 weights) reads the bf16 weights once
    # through bf16_matmul, float32 copy or not, up to kernels.BF16_MAX_ROWS rows; past that the
    # float32 GEMM on the copy
    from tenshu.engine.layers.linear import linear

    w = torch.randn(300, 256).bfloat16()
    wide = w.float()
    for rows in (2, kernels.BF16_MAX_ROWS, kernels.BF16_MAX_ROWS + 1):
        x = torch.randn(rows, 256)
        with torch.inference_mode():
            got, with_copy = linear(x, w), linear(x, w, wide_weight=wide)
        if ops.multiplies_bf16():  # no float32 copy is kept here: torch's bf16 GEMM past the
            if rows > kernels.BF16_MAX_ROWS:  # kernel's rows, its result rounded to bf16
                assert torch.equal(got, F.linear(x.bfloat16(), w).float())
            else:
                assert torch.equal(got, ops.bf16_matmul(x, w))
                _close(got, x.bfloat16().float(), wide)
            continue
        _close(got, x, wide)
        kernel = rows <= kernels.BF16_MAX_ROWS
        peer = ops.bf16_matmul(x, w) if kernel else torch.nn.functional.linear(x, wide)
        assert torch.equal(with_copy, peer), rows
        assert torch.equal(got, with_copy) or not kernel


def test_bf16_activations_come_back_in_their_dtype(ops):
    qw = _weight(4, 32, 8, False, rows=64, cols=256)
    x = torch.randn(2, 256).bfloat16()
    out = ops.quant_matmul(x, qw.qweight, qw.scales, None, 4, 32, 8)
    assert out.dtype == torch.bfloat16
    _close(out, x.float(), qw.dequantize())


def test_a_shape_mismatch_is_an_error_not_a_crash(ops):
    qw = _weight(8, 32, 0, False, rows=8, cols=256)
    with pytest.raises(RuntimeError, match=r"x must be a \[rows, 256\] CPU tensor"):
        ops.quant_matmul(torch.randn(1, 128), qw.qweight, qw.scales, None, 8, 32, 0)
    with pytest.raises(RuntimeError, match="bits must be 4, 6 or 8"):
        ops.quant_matmul(torch.randn(1, 256), qw.qweight, qw.scales, None, 5, 32, 0)


def test_the_build_is_keyed_by_source_torch_and_cpu(ops):
    # a second load in the same process reuses the library; the folder holds one build per key
    assert kernels.ops() is ops
    assert kernels.build_name() in str(kernels.build_dir())
    assert (kernels.build_dir() / f"{kernels.build_name()}.so").is_file()


def test_turned_off_the_engine_keeps_torchs_paths(monkeypatch):
    monkeypatch.setenv("TENSHU_CPU_KERNELS", "0")
    monkeypatch.setattr(kernels, "_state", {})
    assert kernels.ops() is None


@pytest.fixture
def threads():
    """torch.set_num_threads for one test, restored after it"""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window", [0, 5])
@pytest.mark.parametrize("head_dim", [16, 12, 48, 128])  # 12: not a whole vector (the scalar path)
@pytest.mark.parametrize("group", [4, 1, 2, 7])  # query heads a KV head: 7 is taken as 4, 2, 1
@pytest.mark.parametrize("kv_heads, n_threads", [(2, 2), (4, 1), (4, 16)])
def test_paged_decode_equals_attention_over_the_gathered_context(ops, threads, dtype, window,
                                                                 head_dim, group, kv_heads,
                                                                 n_threads):
    # 4 sequences of 1, 9, 17 and 200 tokens in a cache of 128 slots, their slots scattered (the
    # kernel takes tiles of 8 positions, two or four at a time, then the rest one by one). On
    # one thread a task is a sequence's 4 KV heads; on 2, its 2 KV heads; on 16, a third of its
    # positions (the last sequence's 200 in three parts of 64 or more; the first's one position
    # in the last part, two parts empty), combined after; on 16 with a window of 5 (too few
    # positions to split), one KV head.
    threads(n_threads)
    g = torch.Generator().manual_seed(head_dim)
    k_cache = (torch.randn(128, kv_heads, head_dim, generator=g) * 2).to(dtype)
    v_cache = torch.randn(128, kv_heads, head_dim, generator=g).to(dtype)
    lens = torch.tensor([1, 9, 17, 200])
    slots = torch.randint(0, 128, (4, 200), generator=g)
    q = torch.randn(4, kv_heads * group, head_dim, generator=g)
    q[3] *= 20  # scores a hundred and more apart: e^(score - max) underflows for some
    got = ops.paged_decode(q, k_cache, v_cache, slots, lens, 0.25, window)
    for b, n in enumerate(lens.tolist()):
        first = max(0, n - window) if window else 0
        keys = k_cache[slots[b, first:n]].double().repeat_interleave(group, dim=1)  # [n, H, d]
        values = v_cache[slots[b, first:n]].double().repeat_interleave(group, dim=1)
        weights = torch.softmax(torch.einsum("hd,nhd->hn", q[b].double(), keys) * 0.25, dim=-1)
        expected = torch.einsum("hn,nhd->hd", weights, values).float()
        # scores in the hundreds: float32's rounding of a score alone moves its weight by 3e-5
        # (torch's float32 attention lands 2e-5 from this float64 one too)
        atol = 1e-4 if b == 3 else 1e-5
        torch.testing.assert_close(got[b], expected, atol=atol, rtol=1e-5)


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("qk_norm", [True, False])
@pytest.mark.parametrize("tokens", [1, 3, 300])  # 300: more rows than one thread takes
def test_attention_inputs_are_the_layers_torch_steps_bit_for_bit(ops, cache_dtype, qk_norm, tokens):
    # what Attention.forward does between the qkv product and attention without the kernel:
    # split, Qwen3's q/k norms, rotary, the caches written at the step's slots
    from transformers import Qwen3Config

    from tenshu.engine.layers.rotary import RotaryEmbedding

    heads, kv_heads, d, eps = 8, 2, 32, 1e-6
    g = torch.Generator().manual_seed(tokens)
    rotary = RotaryEmbedding(Qwen3Config(head_dim=d), d, 1024)
    positions = torch.randint(0, 1024, (tokens,), generator=g)
    cos, ssin = rotary.tables(positions, torch.float32)
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * d, generator=g) * 2
    q_w, k_w = torch.rand(d, generator=g) + 0.5, torch.rand(d, generator=g) + 0.5
    slots = torch.randperm(512, generator=g)[:tokens]
    k_cache, v_cache = (torch.randn(512, kv_heads, d, generator=g).to(cache_dtype)
                        for _ in range(2))
    caches = [k_cache, v_cache, k_cache.clone(), v_cache.clone()]  # torch's, the kernel's

    q, k, v = qkv.split([heads * d, kv_heads * d, kv_heads * d], dim=-1)
    q, k, v = q.view(tokens, heads, d), k.view(tokens, kv_heads, d), v.view(tokens, kv_heads, d)
    if qk_norm:
        q, k = ops.rms_norm(q, q_w, eps), ops.rms_norm(k, k_w, eps)
    q, k = rotary((cos, ssin), q, k)
    caches[0].index_copy_(0, slots, k.to(cache_dtype))
    caches[1].index_copy_(0, slots, v.to(cache_dtype))

    got_q, got_k = ops.attention_inputs(qkv, q_w if qk_norm else None, k_w if qk_norm else None,
                                        eps, cos, ssin, heads, kv_heads, caches[2], caches[3],
                                        slots)
    assert torch.equal(got_q, q) and torch.equal(got_k, k)
    assert torch.equal(caches[2], caches[0]) and torch.equal(caches[3], caches[1])


@pytest.mark.parametrize("tokens, width", [(1, 3072), (1, 18944 + 5), (40, 1024)])
def test_silu_mul_is_torchs_silu_times_up(ops, tokens, width):
    # gates from far below exp's range to far above it, and a width that is not whole vectors
    g = torch.Generator().manual_seed(width)
    gate = torch.randn(tokens, width, generator=g) * 8
    gate[0, :6] = torch.tensor([0.0, -0.0, -200.0, 200.0, -88.5, 88.5])
    up = torch.randn(tokens, width, generator=g)
    want = (torch.nn.functional.silu(gate.double()) * up.double()).float()
    got = ops.silu_mul(torch.cat([gate, up], dim=1))
    assert got.shape == (tokens, width)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-30)


def test_attention_inputs_refuse_a_slot_outside_the_cache(ops):
    qkv, rope = torch.randn(2, 4 * 16), torch.ones(2, 1, 16)
    k_cache, v_cache = torch.zeros(8, 1, 16), torch.zeros(8, 1, 16)
    with pytest.raises(RuntimeError, match="a cache slot is outside the KV cache"):
        ops.attention_inputs(qkv, None, None, 1e-6, rope, rope, 2, 1, k_cache, v_cache,
                             torch.tensor([3, 8]))
    with pytest.raises(RuntimeError, match=r"qkv must be float32 \[T, \(H \+ 2 KVH\) \* D\]"):
        ops.attention_inputs(qkv[:, :48], None, None, 1e-6, rope, rope, 2, 1, k_cache, v_cache,
                             torch.tensor([3, 4]))


def test_a_build_killed_midway_does_not_hang_the_next_start(ops, tmp_path):
    # torch's builder marks a build under way with a "lock" file and waits for it to go; one
    # killed midway (Ctrl-C during the first start) leaves it, and the next start must not
    # wait on it for ever: it removes it, builds what is missing (here nothing) and loads
    built = kernels.build_dir()
    if not (built / f"{kernels.build_name()}.so").is_file():
        pytest.skip("no finished build in the cache to copy")
    cache = tmp_path / "cache"
    folder = cache / "tenshu" / "kernels" / built.name
    shutil.copytree(built, folder)
    (folder / "lock").touch()
    code = "from tenshu.engine import kernels; print(kernels.ops() is not None)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[2],
                          env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    assert done.stdout.strip() == "True", done.stderr[-2000:]
    assert not (folder / "lock").exists()
    assert "did not finish" in done.stderr
