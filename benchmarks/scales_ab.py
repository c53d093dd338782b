"""The scales of GGUF weights held as the file holds them (float16 for 32-value blocks,
two-level for the K-quants) against flat float32, in one process, taking turns: the
integer-dot products of the same codes from DRAM.

  python benchmarks/scales_ab.py
  python benchmarks/scales_ab.py --rows 1,4 --turns 15 --only Q4_K

Each case is a weight in the shape of a Qwen3-0.6B layer, in as many copies as one pass of the
28-layer model reads (so that they come from DRAM, not from the 32 MB of L3), in each form;
a turn times a pass over the flat copies, then over the file's form, and the median of the
turns' ratios is reported with its quartiles. The fused q/k/v of a Q4_K_M layer whose v is
Q6_K is compared with what it was before two-level scales: codes widened to a byte, flat
scales. Results go to benchmarks/results/scales-ab-*.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from kernels import built_ops  # noqa: E402

from tenshu.engine.quant.weight import SUPER_BLOCK, QuantWeight, _flat, two_level  # noqa: E402

# name, (bits, group, offset, mins) flat, the same in the file's form, that form,
# (rows, columns), copies
CASES = [
    ("Q8_0 ffn_gate_up", (8, 32, 0, False), (8, 32, 0, False), "half", (6144, 1024), 28),
    ("Q4_K ffn_gate_up", (4, 32, 0, True), (4, 32, 0, True), "two-level", (6144, 1024), 28),
    ("Q6_K ffn_down", (6, 16, 32, False), (6, 16, 32, False), "two-level", (1024, 3072), 14),
    ("Q6_K lm_head", (6, 16, 32, False), (6, 16, 32, False), "two-level", (151936, 1024), 1),
    ("q/k/v, Q4_K beside a Q6_K v: bytes and flat / 6 bits and two-level",
     (8, 16, 0, True), (6, 16, 32, True), "two-level", (4096, 1024), 14),
]


def weight(fmt: tuple, n: int, k: int, form: str, g: torch.Generator) -> QuantWeight:
    bits, group, offset, mins = fmt
    if bits == 8:
        q = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    else:
        q = torch.randint(0, 256, (n, k * bits // 8), dtype=torch.uint8, generator=g)

    def factors(low: int) -> torch.Tensor:
        t = two_level(torch.rand(n, k // SUPER_BLOCK, generator=g) * 0.01,
                      torch.randint(low, 64, (n, k // group), generator=g))
        if form == "two-level":
            return t
        return _flat(t, k // group).to(torch.float16 if form == "half" else torch.float32)

    return QuantWeight(q, factors(-32), factors(0) if mins else None, bits=bits,
                       group_size=group, offset=offset, in_features=k)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,4", help="rows of x (decoding sequences)")
    parser.add_argument("--turns", type=int, default=9)
    parser.add_argument("--only", help="cases whose name contains this (Q4_K, lm_head, q/k/v)")
    args = parser.parse_args(argv)
    if (ops := built_ops()) is None:
        return 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; the file's form / flat")
    results = []
    g = torch.Generator().manual_seed(0)
    for name, flat_fmt, file_fmt, form, (n, k), copies in CASES:
        if args.only and args.only not in name:
            continue
        forms = {"flat": [weight(flat_fmt, n, k, "flat", g) for _ in range(copies)],
                 form: [weight(file_fmt, n, k, form, g) for _ in range(copies)]}
        for rows in [int(r) for r in args.rows.split(",")]:
            x = torch.randn(rows, k, generator=g)

            def one_pass(form: str, forms=forms, x=x) -> float:
                start = time.perf_counter()
                for w in forms[form]:
                    ops.quant_matmul_int8(x, *w.packed(), w.bits, w.group_size, w.offset)
                return time.perf_counter() - start

            one_pass("flat"), one_pass(form)
            times: dict[str, list[float]] = {"flat": [], form: []}
            for _ in range(args.turns):
                for f in times:
                    times[f].append(one_pass(f))
            ratios = sorted(f / t for f, t in zip(times["flat"], times[form], strict=True))
            quartiles = statistics.quantiles(ratios, n=4)
            mb = {f: sum(w.nbytes() for w in ws) / 1e6 for f, ws in forms.items()}
            ms = {f: statistics.median(ts) * 1e3 for f, ts in times.items()}
            print(f"{rows:3d} row(s)  {name:<40.40s} {mb['flat']:6.0f} MB flat {ms['flat']:7.2f} ms"
                  f"  {mb[form]:6.0f} MB {form} {ms[form]:7.2f} ms  speed "
                  f"{statistics.median(ratios):.2f}x ({quartiles[0]:.2f}-{quartiles[2]:.2f})")
            results.append({"case": name, "form": form, "rows": rows, "shape": [n, k],
                            "copies": copies, "mb": mb, "median_ms": ms,
                            "speed_over_flat": statistics.median(ratios),
                            "quartiles": [quartiles[0], quartiles[2]]})
    out = ROOT / "benchmarks" / "results" / time.strftime("scales-ab-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": torch.get_num_threads(), "results": results},
                              indent=1))
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
