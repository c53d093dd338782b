"""tenshu's CPU kernels (tenshu/engine/kernels) against the torch paths they replace, one product
at a time, in one process, the two taking turns.

  python benchmarks/kernels.py                  # every case, 7 turns each
  python benchmarks/kernels.py --turns 15 --rows 1,4,16
  python benchmarks/kernels.py --only bf16 --rows 4,16,64,128

Cases (a 65,536 x 1,024 weight unless said: 64 MiB of int8 codes, larger than any cache here):
- bf16 weights: `bf16_matmul` against torch's F.linear in bf16 (oneDNN), and for more than one
  row against the float32 GEMM on a float32 copy (what a batch took before 2026-12-07);
- 8-bit codes (Q8_0's layout, and Q6_K's groups of 16), 4-bit codes (Q4_0's offset, Q4_K's mins):
  `quant_matmul` against what serves without the kernels: inductor's compiled GEMV for one row,
  the chunked dequantize-then-GEMM for more;
- the lm_head of the Qwen3-0.6B shape in Q8_0 (151,936 x 1,024), one row;
- int8 activations (`quant_matmul_int8`, the default for quantized weights) against the float
  kernel, on that lm_head in Q8_0, Q4_K and Q6_K (6-bit codes) as tenshu holds them, --rows;
- decode attention: `paged_decode` against gathering the context and torch's SDPA, 16 sequences
  of 100 tokens, 16 heads on 8 KV heads of 128.
Each figure is the best of --turns calls; GB/s counts the weight bytes the product reads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tenshu.engine import kernels  # noqa: E402
from tenshu.engine.layers.attention import PagedAttention  # noqa: E402
from tenshu.engine.quant import QuantWeight  # noqa: E402
from tenshu.engine.quant import weight as quant_weight  # noqa: E402


def built_ops():
    """torch.ops.tenshu_cpu, or None after saying that the kernels could not be built here."""
    ops = kernels.ops()
    if ops is None:
        print("the CPU kernels could not be built here (see the log)")
    return ops


def best_ms(fn, turns: int) -> float:
    fn()  # warm: compiles inductor's kernels, touches the memory
    times = []
    for _ in range(turns):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def quant_weight_of(bits: int, group: int, offset: int, mins: bool, rows: int, cols: int):
    g = torch.Generator().manual_seed(0)
    if bits == 8:
        q = torch.randint(-128, 128, (rows, cols), dtype=torch.int8, generator=g)
    else:
        q = torch.randint(0, 256, (rows, cols * bits // 8), dtype=torch.uint8, generator=g)
    scales = torch.rand(rows, cols // group, generator=g)
    return QuantWeight(q, scales, torch.rand(rows, cols // group, generator=g) if mins else None,
                       bits=bits, group_size=group, offset=offset, in_features=cols)


def torch_path(x: torch.Tensor, qw: QuantWeight):
    """What quant_linear does without the kernels."""
    saved = kernels._state.get("ops")
    kernels._state["ops"] = None
    try:
        return quant_weight.quant_linear(x, qw)
    finally:
        kernels._state["ops"] = saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=7)
    parser.add_argument("--rows", default="1,4,16")
    parser.add_argument("--only", help="bf16: the bf16 weight's products alone")
    args = parser.parse_args(argv)
    if (ops := built_ops()) is None:
        return 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    def pair(name: str, nbytes: int, kernel, peer, peer_name: str) -> None:
        k, p = best_ms(kernel, args.turns), best_ms(peer, args.turns)
        print(f"{name:44s} kernel {k:8.2f} ms {nbytes / k / 1e6:6.1f} GB/s   {peer_name} "
              f"{p:8.2f} ms {nbytes / p / 1e6:6.1f} GB/s   {p / k:5.2f}x")

    n, k = 65536, 1024
    w = torch.randn(n, k).bfloat16()
    wide = w.float()
    for rows in [int(r) for r in args.rows.split(",")]:
        x = torch.randn(rows, k)
        pair(f"bf16 {n}x{k}, {rows} row(s)", w.numel() * 2, lambda x=x: ops.bf16_matmul(x, w),
             lambda x=x: torch.nn.functional.linear(x.bfloat16(), w), "torch bf16")
        if rows > 1:
            pair(f"bf16 {n}x{k}, {rows} rows", w.numel() * 2, lambda x=x: ops.bf16_matmul(x, w),
                 lambda x=x: torch.nn.functional.linear(x, wide), "f32 copy")
        if args.only == "bf16":
            continue
        for bits, group, offset, mins, label in ((8, 32, 0, False, "Q8_0"),
                                                 (8, 16, 0, False, "Q6_K-like"),
                                                 (4, 32, 8, False, "Q4_0"),
                                                 (4, 32, 0, True, "Q4_K")):
            qw = quant_weight_of(bits, group, offset, mins, n, k)
            peer = "inductor GEMV" if rows == 1 else "dequant+GEMM"
            pair(f"{label} {n}x{k}, {rows} row(s)", qw.nbytes(),
                 lambda x=x, qw=qw: ops.quant_matmul(x, qw.qweight, qw.scales, qw.mins, qw.bits,
                                                     qw.group_size, qw.offset),
                 lambda x=x, qw=qw: torch_path(x, qw), peer)
    if args.only == "bf16":
        return 0
    head = quant_weight_of(8, 32, 0, False, 151936, 1024)
    x = torch.randn(1, 1024)
    pair("Q8_0 lm_head 151936x1024, 1 row", head.nbytes(),
         lambda: ops.quant_matmul(x, head.qweight, head.scales, None, 8, 32, 0),
         lambda: torch_path(x, head), "inductor GEMV")
    for label, fmt in (("Q8_0", (8, 32, 0, False)), ("Q4_K", (4, 32, 0, True)),
                       ("Q6_K", (6, 16, 32, False))):
        head = quant_weight_of(*fmt, 151936, 1024)
        operands = (*head.packed(), head.bits, head.group_size, head.offset)
        for rows in [int(r) for r in args.rows.split(",")]:
            x = torch.randn(rows, 1024)
            pair(f"{label} lm_head, {rows} row(s), int8 activations", head.nbytes(),
                 lambda x=x, a=operands: ops.quant_matmul_int8(x, *a),
                 lambda x=x, a=operands: ops.quant_matmul(x, *a), "float x")

    b, heads, kv_heads, d, length = 16, 16, 8, 128, 100
    for dtype in (torch.float32, torch.bfloat16):
        k_cache = torch.randn(4096, kv_heads, d).to(dtype)
        v_cache = torch.randn(4096, kv_heads, d).to(dtype)
        q = torch.randn(b, heads, d)
        slots = torch.randperm(4096)[: b * length].view(b, length)
        lens = torch.full((b,), length)
        workspace = torch.empty(2, b * length, kv_heads, d, dtype=dtype)
        attention = PagedAttention(heads, kv_heads, d, d ** -0.5)
        mask = torch.ones(b, 1, 1, length, dtype=torch.bool)

        def gathered(q=q, k_cache=k_cache, v_cache=v_cache, slots=slots, workspace=workspace,
                     attention=attention, mask=mask):
            keys, values = attention._gather(k_cache, v_cache, slots.reshape(-1), workspace)
            shape = (b, length, kv_heads, d)
            return attention._attend(q.unsqueeze(2), keys.view(shape).transpose(1, 2),
                                     values.view(shape).transpose(1, 2), mask, causal=False)

        nbytes = 2 * k_cache[slots.reshape(-1)].nbytes
        pair(f"decode attention {b}x{length}, {str(dtype)[6:]} cache", nbytes,
             lambda q=q, k_cache=k_cache, v_cache=v_cache, slots=slots, lens=lens:
             ops.paged_decode(q, k_cache, v_cache, slots, lens, d ** -0.5, 0),
             gathered, "gather+SDPA")
    return 0


if __name__ == "__main__":
    sys.exit(main())
