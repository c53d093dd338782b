"""What the per-step overhead work buys: decode steps with tenshu's one-call paths against the
layers' Python code, in one process, the variants' steps taking turns.

  python benchmarks/decode_plan.py                              # bf16, Q8_0, Q4_K_M; 1 stream
  python benchmarks/decode_plan.py --types q4_k_m --streams 16 --steps 40
  python benchmarks/decode_plan.py --shape qwen2.5-7b --types q4_k_m --steps 12

The files are quant.py's (the 28-layer Qwen3-0.6B shape, or --shape's). Each file's model
decodes --streams sequences (64-token prompts, greedy), and every round runs one step of each
variant on them:
- plan: the step's layers in one kernel call (`decode_layers`, models/llama.py's DecodePlan);
- layers: the layers' own Python code (the plan turned off), with `attention_inputs` (a layer's
  q/k norms, rotary and cache write in one call);
- layers, unfused: the same without attention_inputs (torch's ~20 small operations a layer);
- layers, bf16 GEMM (bf16 files, several streams): the layers' code with the batch's products
  on torch's float GEMM (bf16 weights upcast into a scratch buffer, as a GGUF bf16 model has no
  float32 copy), as before 2026-12-07, where they now take bf16_matmul.
A step's time is divided by the plan's step of the same round: this host's speed drifts by a
third within minutes (docs/benchmarks.md), a drift both steps of a round share. The median and
the quartiles of those ratios are reported, and saved to benchmarks/results/decode-plan-*.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.quant import GREEDY, SHAPES, gguf_file, save  # noqa: E402
from tenshu import LLM, SamplingParams  # noqa: E402
from tenshu.engine import kernels  # noqa: E402
from tenshu.engine.models import llama  # noqa: E402


def measure(path: Path, streams: int, steps: int) -> dict:
    llm = LLM(path, skip_tokenizer_init=True, max_num_seqs=max(streams, 4),
              kv_cache_memory_gib=2)
    engine, model = llm.engine, llm.engine.runner.model
    for i in range(streams):
        engine.add_request(f"s{i}", {"prompt_token_ids": list(range(100 + i, 164 + i))},
                           SamplingParams(max_tokens=3 * steps + 16, **GREEDY))
    for _ in range(streams + 3):  # the prompts, then a few steps of decodes
        engine.step()
    plan = model.plan
    if not isinstance(plan, llama.DecodePlan):
        raise SystemExit(f"{path.name}: the model has no decode plan here (no CPU kernels?)")
    fused, bf16_rows = llama.Attention._cpu_kernels, kernels.BF16_MAX_ROWS
    variants = {
        "plan": (plan, fused, bf16_rows),
        "layers": (False, fused, bf16_rows),
        "layers, unfused": (False, lambda self, qkv: None, bf16_rows),
    }
    if streams > 1 and any(w is not None and w.dtype == torch.bfloat16 for w in plan.weights):
        variants["layers, bf16 GEMM"] = (False, fused, 1)
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(steps):
            for name, (step_plan, kernels_of, rows) in variants.items():
                model.plan, llama.Attention._cpu_kernels = step_plan, kernels_of
                kernels.BF16_MAX_ROWS = rows
                start = time.perf_counter()
                engine.step()
                times[name].append(time.perf_counter() - start)
    finally:
        llama.Attention._cpu_kernels, kernels.BF16_MAX_ROWS = fused, bf16_rows
    out = {}
    for name, spent in times.items():
        ratios = [t / p for t, p in zip(spent, times["plan"], strict=True)]
        quartiles = statistics.quantiles(ratios, n=4)
        out[name] = {"median_step_ms": statistics.median(spent) * 1e3,
                     "step_time_over_plan": statistics.median(ratios),
                     "quartiles": [quartiles[0], quartiles[2]]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", default="bf16,q8_0,q4_k_m")
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--steps", type=int, default=80, help="rounds (one step per variant)")
    parser.add_argument("--shape", choices=SHAPES, default=SHAPES[0])
    args = parser.parse_args()
    results = {"streams": args.streams, "steps": args.steps, "shape": args.shape, "files": {}}
    for kind in args.types.split(","):
        path = gguf_file(kind, quick=False, shape=args.shape)
        res = results["files"][kind] = measure(path, args.streams, args.steps)
        for name, r in res.items():
            print(f"{kind:7s} {args.streams:2d} stream(s)  {name:16s} "
                  f"{r['median_step_ms']:7.1f} ms a step  x{r['step_time_over_plan']:.3f} the "
                  f"plan's (quartiles {r['quartiles'][0]:.3f}-{r['quartiles'][1]:.3f})",
                  flush=True)
    return save(results, name="decode-plan")


if __name__ == "__main__":
    sys.exit(main())
