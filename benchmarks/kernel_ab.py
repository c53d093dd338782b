"""tenshu's weight products (`quant_matmul_int8`, `bf16_matmul`) as the tree builds them, against
the same products built from another git revision's kernel source, in one process, taking turns.

  python benchmarks/kernel_ab.py --base HEAD~1
  python benchmarks/kernel_ab.py --base 461bc46 --rows 1,4 --threads 1

This machine's speed drifts by a third within minutes, more than most kernel changes: two runs
of quant.py cannot tell a 10% change from the drift. Here each turn times the tree's product
and then the base's on the same operands, and the median of the turns' ratios (and their
quartiles) is reported. The base's source is built under another operator namespace
(tenshu_cpu_base), into benchmarks/.cache/kernel-ab/. The weights are random, in the shapes of
the Qwen3-0.6B model's layers, in the formats GGUF files become (see quant/ggml.py) and bf16.
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

from kernels import quant_weight_of  # noqa: E402

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
]


def product(fmt, n: int, k: int):
    """The call the engine makes for a weight of format `fmt` (None: bf16), as fn(ops, x)."""
    if fmt is None:
        w = torch.randn(n, k).bfloat16()
        return lambda ops, x: ops.bf16_matmul(x, w)
    operands = (*quant_weight_of(*fmt, n, k).packed(), *fmt[:3])
    return lambda ops, x: ops.quant_matmul_int8(x, *operands)


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
    parser.add_argument("--only", help="weights whose name contains this (e.g. bf16, Q6_K)")
    args = parser.parse_args(argv)
    tree = kernels.ops()
    if tree is None:
        print("the CPU kernels could not be built here (see the log)")
        return 1
    base = base_ops(args.base)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; the tree against {args.base}")
    results = []
    for rows in [int(r) for r in args.rows.split(",")]:
        for name, fmt, (n, k) in CASES:
            if args.only and args.only not in name:
                continue
            call = product(fmt, n, k)
            x = torch.randn(rows, k)
            got, want = call(tree, x), call(base, x)
            differs = ((got - want).abs().max() / want.abs().max()).item()
            reps = max(1, int(2e8 / (n * k * rows)))  # a turn of ~10 ms or more
            ratios, times = [], []
            for _ in range(args.turns):
                start = time.perf_counter()
                for _ in range(reps):
                    call(tree, x)
                middle = time.perf_counter()
                for _ in range(reps):
                    call(base, x)
                ratios.append((time.perf_counter() - middle) / (middle - start))
                times.append((middle - start) / reps)
            low, median, high = statistics.quantiles(ratios, n=4)
            print(f"{rows:3d} row(s)  {name:30s} {n:>6d} x {k:<5d} tree {min(times) * 1e3:8.3f} ms"
                  f"  base/tree {median:5.2f}x ({low:.2f}-{high:.2f})  differs {differs:.0e}",
                  flush=True)
            results.append({"rows": rows, "weight": name, "shape": [n, k], "tree_ms":
                            min(times) * 1e3, "base_over_tree": median, "quartiles": [low, high]})
    out = ROOT / "benchmarks" / "results" / time.strftime("kernel-ab-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"base": args.base, "threads": args.threads, "results": results},
                              indent=1))
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
