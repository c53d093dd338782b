"""The gateway's cost: the engine's throughput workload through HTTP against the same workload
in-process, in one run, reported as ratios.

  python benchmarks/gateway.py               # 4-layer Qwen3-0.6B-shaped model, 64 requests
  python benchmarks/gateway.py --full        # the engine benchmark's full workload (slow)

- throughput: 64 requests (prompt and output lengths uniform in --lo..--hi, seeded, EOS
  ignored, greedy), first run in-process with `LLM.generate`, then sent by 64 concurrent
  streaming clients to `tenshu serve` (a separate process, /v1/completions with token-id
  prompts) on the same checkpoint. Goal: HTTP output tok/s >= 90% of in-process.
- ttft: one short request at a time (64-token prompt, 1 output token), --ttft-samples times:
  the median time to first token in-process (AsyncEngine, first output) and over HTTP (first
  streamed chunk), and their difference. Goal: under 5 ms.
Results print as a table and are saved to benchmarks/results/gateway-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.engine import CACHE, RESULTS, checkpoint, tenshu_throughput, workload  # noqa: E402
from tenshu import AsyncEngine, EngineConfig, SamplingParams  # noqa: E402
from tests.api.live import free_port  # noqa: E402


def start_server(path: Path | None, port: int, home: Path, *, kv_cache_gib: float = 10,
                 settings: str = "", timeout: float = 300) -> subprocess.Popen:
    """`tenshu serve` on `path` as the model "bench" (None: the built-in model), once /ready
    answers; `settings` is written to its tenshu.toml."""
    env = {**os.environ, "TENSHU_HOME": str(home)}
    home.mkdir(parents=True, exist_ok=True)
    (home / "tenshu.toml").write_text(settings)
    model = [] if path is None else ["--model", f"bench={path}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tenshu", "serve", *model, "--port", str(port),
         "--kv-cache-gib", str(kv_cache_gib), "--log-level", "warning"], env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError("tenshu serve exited")
    raise RuntimeError("tenshu serve did not become ready")


async def _stream(client: httpx.AsyncClient, prompt: list[int], max_tokens: int) -> tuple[int, float]:
    """(output tokens, seconds to the first token) of one streamed completion."""
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and first is None:
                first = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return tokens, first


async def http_throughput(url: str, requests, stream=_stream) -> dict:
    """Every (prompt ids, max tokens) request at once through `stream` (tenshu's
    /v1/completions; benchmarks/serving.py passes llama-server's)."""
    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as client:
        await stream(client, requests[0][0][:8], 2)  # connect and warm up
        start = time.perf_counter()
        results = await asyncio.gather(*(stream(client, p, o) for p, o in requests))
        seconds = time.perf_counter() - start
    tokens = sum(t for t, _ in results)
    return {"output_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "ttft_median_s": statistics.median(f for _, f in results)}


async def http_ttft(url: str, prompts: list[list[int]]) -> list[float]:
    async with httpx.AsyncClient(base_url=url, timeout=None) as client:
        await _stream(client, prompts[0], 1)
        return [(await _stream(client, p, 1))[1] for p in prompts]


async def inprocess_ttft(path: Path, prompts: list[list[int]]) -> list[float]:
    engine = AsyncEngine(EngineConfig(model=str(path), kv_cache_memory_gib=2))
    params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    times = []
    try:
        for i, prompt in enumerate([prompts[0], *prompts]):
            start = time.perf_counter()
            async for _ in engine.generate(f"t{i}", {"prompt_token_ids": prompt}, params):
                break
            times.append(time.perf_counter() - start)
    finally:
        engine.shutdown()
    return times[1:]  # the first one warms up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help="the full 28-layer model and 64..512-token requests")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--lo", type=int, default=32)
    parser.add_argument("--hi", type=int, default=128)
    parser.add_argument("--ttft-samples", type=int, default=30)
    parser.add_argument("--only", default="throughput,ttft")
    args = parser.parse_args(argv)
    lo, hi = (64, 512) if args.full else (args.lo, args.hi)
    path = checkpoint(quick=not args.full)
    vocab = json.loads((path / "config.json").read_text())["vocab_size"]
    requests = workload(vocab, args.requests, lo, hi)
    ttft_prompts = [p[:64] for p, _ in workload(vocab, args.ttft_samples, 64, 64, seed=1)]
    home = CACHE / "gateway-home"  # its own state.db: no keys, nothing of the user's
    port = free_port()
    result: dict = {"model": path.name, "requests": args.requests, "lengths": [lo, hi]}
    only = set(args.only.split(","))
    if "throughput" in only:
        print("in-process throughput ...", flush=True)
        result["inprocess"] = tenshu_throughput(path, "auto", requests)
    if "ttft" in only:
        print("in-process ttft ...", flush=True)
        result["inprocess_ttft_s"] = asyncio.run(inprocess_ttft(path, ttft_prompts))
    proc = start_server(path, port, home)
    url = f"http://127.0.0.1:{port}"
    try:
        if "throughput" in only:
            print("HTTP throughput ...", flush=True)
            result["http"] = asyncio.run(http_throughput(url, requests))
        if "ttft" in only:
            print("HTTP ttft ...", flush=True)
            result["http_ttft_s"] = asyncio.run(http_ttft(url, ttft_prompts))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    report(result)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"gateway-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")
    return 0


def report(r: dict) -> None:
    if "http" in r:
        a, b = r["inprocess"], r["http"]
        print(f"\nthroughput, {r['requests']} requests, lengths {r['lengths']}:")
        print(f"  in-process  {a['tokens_per_s']:8.1f} tok/s  ({a['output_tokens']} tokens, "
              f"{a['seconds']:.1f} s)")
        print(f"  HTTP        {b['tokens_per_s']:8.1f} tok/s  ({b['output_tokens']} tokens, "
              f"{b['seconds']:.1f} s)")
        print(f"  HTTP / in-process = {b['tokens_per_s'] / a['tokens_per_s']:.3f}  (goal >= 0.90)")
    if "http_ttft_s" in r:
        a = statistics.median(r["inprocess_ttft_s"]) * 1000
        b = statistics.median(r["http_ttft_s"]) * 1000
        print(f"\ntime to first token, one request at a time (median of "
              f"{len(r['http_ttft_s'])}):")
        print(f"  in-process {a:.2f} ms   HTTP {b:.2f} ms   overhead {b - a:.2f} ms  (goal < 5 ms)")


if __name__ == "__main__":
    sys.exit(main())
