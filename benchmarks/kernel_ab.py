"""tenshu's weight products (`quant_matmul_int8`, `bf16_matmul`) and decode attention
(`paged_decode`) as the tree builds them, against the same calls built from another git
revision's kernel source, in one process, taking turns.

  python benchmarks/kernel_ab.py --base HEAD~1
  python benchmarks/kernel_ab.py --base 461bc46 --rows 1,4 --threads 1

This machine's speed drifts by a third within minutes, more than most kernel changes: two runs
of quant.py cannot tell a 10% change from the drift. Here each turn times the tree's product
and then the base's on the same operands, and the median of the turns' ratios (and their
quartiles) is reported. The base's source is built under another operator namespace
(tenshu_cpu_base), into benchmarks/.cache/kernel-ab/. The weights are random, in the shapes of
the Qwen3-0.6B model's layers and five of Qwen2.5-7B's (`--only 7B`), in the codes GGUF files
become (see quant/ggml.py) with flat float32 scales, the form every revision reads
(benchmarks/scales_ab.py compares the file's forms with it), and bf16; attention is that
model's (16 query heads on 8 KV heads of 128), one query row per sequence
(--rows) over a context in a paged cache of float32 or bf16, in blocks of 16 slots scattered
as a busy cache scatters them. A cache of a few sequences fits in the CPU's caches, where a
model's 28 layers' caches do not: `--layers 28` times a pass through 28 layers' caches, each
its own tensors, as a decode step reads them (from DRAM).

  python benchmarks/kernel_ab.py --base HEAD~1 --only paged --rows 1,16,64 --layers 28
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from kernels import built_ops, quant_weight_of  # noqa: E402

from tenshu.engine import kernels  # noqa: E402

# name, (bits, group, offset, mins) or None for bf16 weights, (rows, columns)
CASES = [
    ("Q6_K lm_head", (6, 16, 32, False), (151936, 1024)),
    ("Q6_K ffn_down", (6, 16, 32, False), (1024, 3072)),
    ("q/k/v widened beside a Q6_K v", (8, 16, 0, True), (4096, 1024)),
    ("Q4_K ffn_gate_up", (4, 32, 0, True), (6144, 1024)),
    ("Q8_0 ffn_gate_up", (8, 32, 0, False), (6144, 1024)),
    ("bf16 lm_head", None, (151936, 1024)),
    ("bf16 ffn_gate_up", None, (6144, 1024)),
    ("bf16 ffn_down", None, (1024, 3072)),
    # the 7B class (Qwen2.5-7B's shapes): a weight row of thousands of columns, from DRAM
    ("7B Q4_K ffn_gate_up", (4, 32, 0, True), (37888, 3584)),
    ("7B Q6_K ffn_down", (6, 16, 32, False), (3584, 18944)),
    ("7B Q4_K ffn_down", (4, 32, 0, True), (3584, 18944)),
    ("7B Q6_K lm_head", (6, 16, 32, False), (152064, 3584)),
    ("7B Q8_0 ffn_gate_up", (8, 32, 0, False), (37888, 3584)),
]
# name, cache dtype, context length (a multiple of 16: whole blocks of slots)
ATTENTION = [
    ("paged_decode float32 cache", torch.float32, 400),
    ("paged_decode bf16 cache", torch.bfloat16, 400),
]


def product(fmt, n: int, k: int):
    """The call the engine makes for a weight of format `fmt` (None: bf16), as fn(ops, x)."""
    if fmt is None:
        w = torch.randn(n, k).bfloat16()
        return lambda ops, x: ops.bf16_matmul(x, w)
    operands = (*quant_weight_of(*fmt, n, k).packed(), *fmt[:3])
    return lambda ops, x: ops.quant_matmul_int8(x, *operands)


def attention(dtype: torch.dtype, context: int, rows: int, layers: int = 1):
    """paged_decode for `rows` sequences of `context` tokens in each of `layers` layers' caches,
    as fn(ops) (the last layer's result); its multiply-adds."""
    heads, kv_heads, d, block = 16, 8, 128, 16
    slots = rows * context
    caches = []
    for _ in range(layers):
        scattered = torch.randperm(slots // block).view(-1, 1) * block + torch.arange(block)
        table = scattered.view(rows, context).contiguous()
        caches.append((*(torch.randn(slots, kv_heads, d).to(dtype) for _ in range(2)), table))
    q, lens = torch.randn(rows, heads, d), torch.full((rows,), context)

    def call(ops):
        for k_cache, v_cache, table in caches:
            out = ops.paged_decode(q, k_cache, v_cache, table, lens, d ** -0.5, 0)
        return out
    return call, 2 * rows * heads * context * d * layers


def base_ops(rev: str):
    """torch.ops.tenshu_cpu_base: the kernels of git revision `rev`, built once."""
    path = kernels.SOURCE.relative_to(ROOT)
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True,
                            capture_output=True, text=True).stdout
    source = source.replace("TORCH_LIBRARY(tenshu_cpu,", "TORCH_LIBRARY(tenshu_cpu_base,")
    digest = hashlib.sha256((source + kernels.build_name()).encode()).hexdigest()[:12]
    folder = ROOT / "benchmarks" / ".cache" / "kernel-ab" / digest
    folder.mkdir(parents=True, exist_ok=True)
    library = folder / "tenshu_cpu_base.so"
    if library.is_file():
        torch.ops.load_library(str(library))
    else:
        from torch.utils import cpp_extension

        (folder / "cpu_matmul.cpp").write_text(source)
        cpp_extension.load("tenshu_cpu_base", [str(folder / "cpu_matmul.cpp")],
                           extra_cflags=kernels._FLAGS, extra_ldflags=["-fopenmp"],
                           build_directory=str(folder), is_python_module=False)
    return torch.ops.tenshu_cpu_base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="the git revision to compare against")
    parser.add_argument("--rows", default="1,4,16", help="rows of x (decoding sequences)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--turns", type=int, default=15)
    parser.add_argument("--only", help="cases whose name contains this (bf16, Q6_K, paged, 7B)")
    parser.add_argument("--context", type=int, help="the attention cases' context (a multiple "
                        "of 16; 400 unless given)")
    parser.add_argument("--layers", type=int, default=1,
                        help="layers' caches the attention cases go through a call")
    args = parser.parse_args(argv)
    if (tree := built_ops()) is None:
        return 1
    base = base_ops(args.base)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; the tree against {args.base}")
    results = []
    for rows in [int(r) for r in args.rows.split(",")]:
        calls = []  # name, label, shape, a maker of (fn(ops), the multiply-adds of a call)
        for name, fmt, (n, k) in CASES:
            def weight(fmt=fmt, n=n, k=k, rows=rows):
                f, x = product(fmt, n, k), torch.randn(rows, k)
                return (lambda ops: f(ops, x)), n * k * rows
            calls.append((name, f"{n:>6d} x {k:<5d}", [n, k], weight))
        for name, dtype, context in ATTENTION:
            context = args.context or context
            calls.append((name, f"context {context:<5d}", [context, args.layers],
                          lambda dtype=dtype, context=context, rows=rows:
                          attention(dtype, context, rows, args.layers)))
        for name, label, shape, make in calls:
            if args.only and args.only not in name:
                continue
            call, work = make()
            got, want = call(tree), call(base)
            differs = ((got - want).abs().max() / want.abs().max()).item()
            reps = max(1, int(2e8 / work))  # a turn of ~10 ms or more
            ratios, times = [], []
            for _ in range(args.turns):
                start = time.perf_counter()
                for _ in range(reps):
                    call(tree)
                middle = time.perf_counter()
                for _ in range(reps):
                    call(base)
                ratios.append((time.perf_counter() - middle) / (middle - start))
                times.append((middle - start) / reps)
            low, median, high = statistics.quantiles(ratios, n=4)
            print(f"{rows:3d} row(s)  {name:30s} {label} tree {min(times) * 1e3:8.3f} ms"
                  f"  base/tree {median:5.2f}x ({low:.2f}-{high:.2f})  differs {differs:.0e}",
                  flush=True)
            results.append({"rows": rows, "weight": name, "shape": shape, "tree_ms":
                            min(times) * 1e3, "base_over_tree": median, "quartiles": [low, high]})
    out = ROOT / "benchmarks" / "results" / time.strftime("kernel-ab-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"base": args.base, "threads": args.threads,
                               "layers": args.layers, "results": results}, indent=1))
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
