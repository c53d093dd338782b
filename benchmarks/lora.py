"""LoRA in the engine: throughput with four different adapters mixed in one batch against the
base model alone, the same requests, in one run (goal: at least 0.8 of the base's).

  python benchmarks/lora.py            # the Qwen3-0.6B shape, 4 layers (benchmarks/engine.py's
                                       # --quick checkpoint), bf16 weights on the CPU
  python benchmarks/lora.py --full     # all 28 layers of the shape (slow on a CPU)

Four random rank-16 adapters on every projection (q, k, v, o, gate, up, down), made with peft;
the requests take turns over them (8 each of 32). Every request has a 128-token prompt and makes
64 tokens (ignore_eos), so both runs do the same work but for the adapters' products. Each run
is timed twice, taking turns, and the better time kept.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine import CACHE, checkpoint  # noqa: E402
from tenshu import LLM, LoRARequest, SamplingParams  # noqa: E402
from tests.engine.reference import random_prompts  # noqa: E402
from tests.engine.test_lora import make_adapter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--full", action="store_true", help="all 28 layers (slow on a CPU)")
    args = parser.parse_args()
    base = checkpoint(quick=not args.full)
    adapters = []
    for i in range(4):
        folder = CACHE / f"{base.name}-lora{i}"
        if not (folder / "adapter_model.safetensors").exists():
            make_adapter(base, folder, seed=i, rank=16)
        adapters.append(LoRARequest(f"lora{i}", i + 1, str(folder)))
    llm = LLM(base, enable_lora=True, max_loras=4, max_lora_rank=16,
              max_num_seqs=args.requests)
    prompts = [{"prompt_token_ids": p}
               for p in random_prompts(llm.engine.vocab_size, [128] * args.requests)]
    params = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
    mixed = [adapters[i % 4] for i in range(args.requests)]
    llm.generate(prompts[:4], params, lora_request=mixed[:4])  # warm up, adapters loaded
    best = {"base": float("inf"), "mixed": float("inf")}
    for _ in range(2):
        for name, loras in (("base", None), ("mixed", mixed)):
            start = time.perf_counter()
            llm.generate(prompts, params, lora_request=loras)
            best[name] = min(best[name], time.perf_counter() - start)
    tokens = args.requests * 64
    print(f"{base.name}, {args.requests} requests x 64 tokens, best of 2")
    print("| | seconds | tokens/s |\n|---|---:|---:|")
    for name in ("base", "mixed"):
        print(f"| {name} | {best[name]:.2f} | {tokens / best[name]:.0f} |")
    print(f"mixed / base throughput: {best['base'] / best['mixed']:.3f}")


if __name__ == "__main__":
    main()
