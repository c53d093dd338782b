"""Engine benchmarks, each side by side with a peer in the same run, reported as ratios.

  python benchmarks/engine.py                  # everything (long on a 2-core CPU)
  python benchmarks/engine.py --only single    # one section: throughput, single, prefix
  python benchmarks/engine.py --quick          # a 4-layer model and a small workload

- throughput: a Qwen3-0.6B-shaped checkpoint with random bf16 weights, 64 requests with input
  and output lengths uniform in 64..512 (seeded), EOS ignored, greedy. tenshu generates them all
  at once; transformers `generate` runs them in static batches (left-padded, each batch as long
  as its longest request) and is credited only with each request's own tokens. Also: the
  compute bound (matmul FLOP/s measured here / model FLOPs per token).
- single: single-stream decode tokens/s against the memory-bandwidth limit (weight bytes read
  per token / read bandwidth measured here) and against transformers.
- prefix: 32 requests sharing a 2,048-token prefix: time to first token, cache warm vs cold.
- llama.cpp joins throughput and single when llama-cpp-python is installed (see
  benchmarks/llamacpp_peer.py).
Results print as a table and are saved to benchmarks/results/engine-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tenshu import LLM, SamplingParams  # noqa: E402
from tenshu.engine import EngineConfig, LLMEngine  # noqa: E402
from tests.checkpoints import QWEN3_06B_SHAPE, make_checkpoint  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache"
RESULTS = ROOT / "benchmarks" / "results"


def checkpoint(quick: bool) -> Path:
    shape = dict(QWEN3_06B_SHAPE)
    if quick:
        shape["num_hidden_layers"] = 4
    path = CACHE / ("qwen3-0.6b-shape-bf16" + ("-4layers" if quick else ""))
    if not (path / "config.json").is_file():
        print(f"making {path.name} (random bf16 weights) ...", flush=True)
        make_checkpoint(path, "qwen3", dtype=torch.bfloat16, **shape)
    return path


# -- what this machine can do ------------------------------------------------------------------


def matmul_flops(dtype: torch.dtype, m: int = 512, k: int = 1024, n: int = 3072) -> float:
    """FLOP/s of a model-shaped linear layer (the op the model's matmuls use), best of 10."""
    x, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        torch.nn.functional.linear(x, w)
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best


def read_bandwidth(gib: float = 1.0) -> float:
    """Bytes/s of the fastest streaming read torch does here: a sum over 1 GiB, best of 5."""
    x = torch.ones(int(gib * (1 << 30)) // 4, dtype=torch.float32)
    best = float("inf")
    for _ in range(6):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best


def model_costs(config, avg_context: float) -> dict:
    """Parameters read per token and FLOPs per token (matmuls + attention at avg_context)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    hd = config.head_dim
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    per_layer = h * (q + 2 * kv) + q * h + 3 * h * config.intermediate_size
    matmul_params = layers * per_layer + config.vocab_size * h  # + the output projection
    attention = 4 * layers * q * avg_context  # q.k and p.v
    return {"params_read": matmul_params, "flops_per_token": 2 * matmul_params + attention}


# -- workloads ---------------------------------------------------------------------------------


def workload(vocab: int, n: int, lo: int, hi: int, seed: int = 0) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    return [
        ([rng.randrange(vocab) for _ in range(rng.randint(lo, hi))], rng.randint(lo, hi))
        for _ in range(n)
    ]


def tenshu_throughput(path: Path, dtype: str, requests) -> dict:
    llm = LLM(path, dtype=dtype, max_num_seqs=len(requests), kv_cache_memory_gib=10)
    prompts = [{"prompt_token_ids": p} for p, _ in requests]
    params = [SamplingParams(temperature=0, max_tokens=o, ignore_eos=True) for _, o in requests]
    start = time.perf_counter()
    outs = llm.generate(prompts, params)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"output_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "preemptions": llm.engine.scheduler.num_preemptions}


def hf_model(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    model.generation_config.eos_token_id = None  # EOS ignored, as for tenshu
    return model


@torch.inference_mode()
def hf_throughput(path: Path, dtype: torch.dtype, requests, batch_size: int) -> dict:
    model = hf_model(path, dtype)
    start = time.perf_counter()
    for i in range(0, len(requests), batch_size):
        batch = requests[i : i + batch_size]
        width = max(len(p) for p, _ in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, (p, _) in enumerate(batch):
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        longest = max(o for _, o in batch)
        model.generate(ids, attention_mask=mask, max_new_tokens=longest, min_new_tokens=longest,
                       do_sample=False, pad_token_id=0)
    seconds = time.perf_counter() - start
    tokens = sum(o for _, o in requests)  # only each request's own tokens count
    return {"output_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "batch_size": batch_size}


def tenshu_single(path: Path, dtype: str, prompt: list[int], n_out: int) -> dict:
    engine = LLMEngine(EngineConfig(model=str(path), dtype=dtype, max_num_seqs=1))
    params = SamplingParams(temperature=0, max_tokens=n_out, ignore_eos=True)
    engine.add_request("warmup", {"prompt_token_ids": prompt}, SamplingParams(max_tokens=2))
    while engine.has_unfinished_requests():
        engine.step()
    engine.add_request("s", {"prompt_token_ids": prompt[::-1]}, params)
    engine.step()  # prefill and the first token
    start, count = time.perf_counter(), 0
    while engine.has_unfinished_requests():
        engine.step()
        count += 1
    return {"tokens_per_s": count / (time.perf_counter() - start)}


@torch.inference_mode()
def hf_single(path: Path, dtype: torch.dtype, prompt: list[int], n_out: int) -> dict:
    model = hf_model(path, dtype)
    ids = torch.tensor([prompt])

    def run(n: int) -> float:
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        return time.perf_counter() - start

    run(2)
    first, full = run(1), run(n_out)
    return {"tokens_per_s": (n_out - 1) / (full - first)}


def prefix_ttft(path: Path, dtype: str, vocab: int, n: int, prefix_len: int, cold: int) -> dict:
    rng = random.Random(1)
    prefix = [rng.randrange(vocab) for _ in range(prefix_len)]
    prompts = [prefix + [rng.randrange(vocab) for _ in range(16)] for _ in range(n)]
    engine = LLMEngine(EngineConfig(model=str(path), dtype=dtype, max_num_seqs=4))

    def ttft(i: int, prompt: list[int]) -> float:
        start = time.perf_counter()
        engine.add_request(f"p{i}-{time.time()}", {"prompt_token_ids": prompt},
                           SamplingParams(max_tokens=1))
        while engine.has_unfinished_requests():
            engine.step()
        return time.perf_counter() - start

    # cold: nothing cached (the cache is cleared by resetting the hash map between requests)
    cold_times = []
    for i, p in enumerate(prompts[:cold]):
        engine.block_manager.cached.clear()
        for block in engine.block_manager.blocks:
            block.hash = None
        cold_times.append(ttft(i, p))
    ttft(-1, prefix + [0])  # one request puts the prefix in the cache
    warm_times = [ttft(i, p) for i, p in enumerate(prompts)]
    cold_s = sum(cold_times) / len(cold_times)
    warm_s = sum(warm_times) / len(warm_times)
    return {"cold_ttft_s": cold_s, "warm_ttft_s": warm_s, "speedup": cold_s / warm_s,
            "cold_samples": len(cold_times), "warm_samples": len(warm_times)}


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="throughput,single,prefix")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dtype", default="auto", help="tenshu's dtype (auto: see README)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--hf-batch", type=int, default=16)
    parser.add_argument("--cold-samples", type=int, default=2,
                        help="cold prefills to time (each costs the same full prefill)")
    parser.add_argument("--no-llamacpp", action="store_true")
    parser.add_argument("--llamacpp-parallel", type=int, default=16,
                        help="sequences llama.cpp decodes together")
    args = parser.parse_args(argv)
    sections = set(args.only.split(","))
    torch.manual_seed(0)
    path = checkpoint(args.quick)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    engine_config = EngineConfig(model=str(path), dtype=args.dtype)
    weight_dtype, compute_dtype = engine_config.dtypes(torch.bfloat16)
    # the dtype the batches' products run in (engine/layers/linear.py); transformers runs in it
    # too, its fastest dtype for batches here (float32 on a CPU without native bf16)
    matmul_dtype = torch.bfloat16 if compute_dtype == torch.bfloat16 or \
        engine_config.bf16_batches(weight_dtype) else torch.float32
    n_req = 8 if args.quick else args.requests
    lo, hi = (32, 64) if args.quick else (64, 512)
    results: dict = {
        "model": path.name, "tenshu_dtype": args.dtype, "threads": torch.get_num_threads(),
        "tenshu_weights": str(weight_dtype), "tenshu_compute": str(compute_dtype),
        "machine": {
            "matmul_gflops_bf16": matmul_flops(torch.bfloat16) / 1e9,
            "matmul_gflops_fp32": matmul_flops(torch.float32) / 1e9,
            "read_gb_s": read_bandwidth() / 1e9,
        },
    }
    print(json.dumps(results, indent=1), flush=True)
    peer = None if args.no_llamacpp else _llamacpp(path)

    if "throughput" in sections:
        reqs = workload(config.vocab_size, n_req, lo, hi)
        avg_ctx = sum(len(p) + o / 2 for p, o in reqs) / len(reqs)
        costs = model_costs(config, avg_ctx)
        t = tenshu_throughput(path, args.dtype, reqs)
        print("tenshu throughput", t, flush=True)
        h = hf_throughput(path, matmul_dtype, reqs, args.hf_batch)
        print("transformers throughput", h, flush=True)
        total_tokens = sum(len(p) + o for p, o in reqs)
        flops = results["machine"][
            f"matmul_gflops_{'bf16' if matmul_dtype == torch.bfloat16 else 'fp32'}"
        ] * 1e9
        achieved = total_tokens * costs["flops_per_token"] / t["seconds"]
        results["throughput"] = {
            "tenshu": t, "transformers": h, "ratio_vs_transformers": t["tokens_per_s"] / h["tokens_per_s"],
            "flops_per_token": costs["flops_per_token"],
            "compute_bound_tokens_per_s": flops / costs["flops_per_token"],
            "tenshu_fraction_of_compute_bound": achieved / flops,
        }
        if peer is not None:
            print("llama.cpp throughput ...", flush=True)
            lc = peer.throughput(_gguf(peer, path), reqs, n_threads=torch.get_num_threads(),
                                 n_parallel=args.llamacpp_parallel)
            results["throughput"]["llamacpp"] = lc
            results["throughput"]["ratio_vs_llamacpp"] = t["tokens_per_s"] / lc["tokens_per_s"]

    if "single" in sections:
        prompt = workload(config.vocab_size, 1, 64, 64, seed=3)[0][0]
        n_out = 32 if args.quick else 128
        s = tenshu_single(path, args.dtype, prompt, n_out)
        h = {str(d): hf_single(path, d, prompt, n_out) for d in (torch.bfloat16, torch.float32)}
        best_hf = max(r["tokens_per_s"] for r in h.values())
        params = model_costs(config, 64)["params_read"]
        weight_bytes = params * torch.empty((), dtype=weight_dtype).element_size()
        limit = results["machine"]["read_gb_s"] * 1e9 / weight_bytes
        results["single"] = {
            "tenshu": s, "transformers": h, "weight_bytes_per_token": weight_bytes,
            "bandwidth_limit_tokens_per_s": limit,
            "tenshu_fraction_of_limit": s["tokens_per_s"] / limit,
            "ratio_vs_transformers_best": s["tokens_per_s"] / best_hf,
        }
        if peer is not None:
            lc = peer.single_stream(_gguf(peer, path), prompt, n_out, n_threads=torch.get_num_threads())
            results["single"]["llamacpp"] = lc
            lc["tokens_per_s"] = lc.pop("decode_tokens_per_s")
            lc.pop("tokens", None)
            results["single"]["ratio_vs_llamacpp"] = s["tokens_per_s"] / lc["tokens_per_s"]
        print("single", results["single"], flush=True)

    if "prefix" in sections:
        n, prefix_len = (8, 256) if args.quick else (32, 2048)
        results["prefix"] = prefix_ttft(path, args.dtype, config.vocab_size, n, prefix_len,
                                         args.cold_samples)
        print("prefix", results["prefix"], flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"engine-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    print(f"saved {out}")
    return 0


def _llamacpp(path: Path):
    try:
        from benchmarks import llamacpp_peer
    except ImportError:
        return None
    return llamacpp_peer if llamacpp_peer.available() else None


def _gguf(peer, path: Path) -> Path:
    gguf = path.parent / f"{path.name}.bf16.gguf"
    if not gguf.is_file():
        peer.convert_to_gguf(path, gguf, outtype="bf16")
    return gguf


if __name__ == "__main__":
    raise SystemExit(main())
