"""Serving side by side: `tenshu serve` against llama.cpp's `llama-server` on the same GGUF file.

  python benchmarks/serving.py                                  # 4-layer 0.6B shape, Q8_0 and Q4_K_M
  python benchmarks/serving.py --full --types q4_k_m            # the 28-layer Qwen3-0.6B shape
  python benchmarks/serving.py --shape qwen2.5-7b --types q4_k_m --streams 16
  python benchmarks/serving.py --idle                           # `tenshu serve`'s built-in model

Each server runs alone, in its own process, on the file benchmarks/quant.py makes, with the same
number of parallel slots (tenshu: `server.max_num_seqs`; llama-server: `--parallel`, each slot
with room for its prompt and its tokens) and the same threads. For each number of --streams:
that many requests at once over HTTP, each a 64-token prompt of random token ids and
--stream-tokens new tokens (greedy, EOS ignored, streamed: tenshu's /v1/completions, llama-server's
/completion, no prompt cache), after one short request to warm up; reported as aggregate output
tokens/s, prefill included, and the median time to the first token. Resident memory (VmRSS) is read
once the server is ready and idle, and the peak (VmHWM) after the streams. `--idle` reads only
the resident memory of `tenshu serve` on its built-in model (tenshu-tiny), ready and idle.

llama-server is built from the same llama.cpp as the Python peer (the llama-cpp-python sdist that
benchmarks/llamacpp_peer.py names), without the network features: `make bench-serving` builds it
once into benchmarks/.cache/llama-server and runs this script with the defaults. Elsewhere it is
found through $LLAMA_SERVER (or --llama-server), then on PATH. Results are saved to
benchmarks/results/serving-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.gateway import _stream as tenshu_stream  # noqa: E402
from benchmarks.gateway import http_throughput, start_server  # noqa: E402
from benchmarks.quant import SHAPES, file_bytes, gguf_file, process_memory, save  # noqa: E402
from tests.api.live import free_port  # noqa: E402

PROMPT_TOKENS = 64


def start_llama_server(binary: str, path: Path, port: int, slots: int, slot_tokens: int,
                       threads: int, timeout: float = 600) -> subprocess.Popen:
    """llama-server on `path` with `slots` parallel slots of `slot_tokens` each, once /health
    says the model is loaded."""
    proc = subprocess.Popen(
        [binary, "-m", str(path), "--host", "127.0.0.1", "--port", str(port),
         "--threads", str(threads), "--threads-batch", str(threads), "--parallel", str(slots),
         "--ctx-size", str(slots * slot_tokens), "--cont-batching", "--no-webui",
         "--cache-ram", "0"],  # no prompt cache kept in memory (the requests disable it)
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(f"http://127.0.0.1:{port}/health", proc, timeout)
    return proc


def _wait(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}) before {url} answered")
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


async def _llama_stream(client: httpx.AsyncClient, prompt: list[int],
                        max_tokens: int) -> tuple[int, float]:
    """(output tokens, seconds to the first token) of one streamed llama-server completion."""
    body = {"prompt": prompt, "n_predict": max_tokens, "temperature": 0, "ignore_eos": True,
            "cache_prompt": False, "stream": True}
    start, first, tokens = time.perf_counter(), None, 0
    async with client.stream("POST", "/completion", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            chunk = json.loads(line[6:])
            if first is None:
                first = time.perf_counter() - start
            if chunk.get("stop"):
                tokens = chunk["tokens_predicted"]
    return tokens, first


def streams_of(n: int, new_tokens: int, seed: int) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    return [([rng.randrange(151936) for _ in range(PROMPT_TOKENS)], new_tokens) for _ in range(n)]


def measure(name: str, proc: subprocess.Popen, port: int, slots: int, streams: list[int],
            new_tokens: int, stream) -> dict:
    """A ready server's resident memory, then each number of streams at once, then its peak
    memory; the server is stopped at the end."""
    try:
        out: dict = {"slots": slots, "idle": process_memory(proc.pid), "streams": {}}
        for n in streams:
            out["streams"][n] = asyncio.run(http_throughput(
                f"http://127.0.0.1:{port}", streams_of(n, new_tokens, n), stream))
            print(name, n, out["streams"][n], flush=True)
        out["after"] = process_memory(proc.pid)
        return out
    finally:
        proc.terminate()
        proc.wait(60)


def run_tenshu(path: Path | None, streams: list[int], new_tokens: int, home: Path) -> dict:
    port = free_port()
    slots = max(streams, default=0)  # none: the server's defaults
    proc = start_server(path, port, home, kv_cache_gib=4, timeout=1800,
                        settings=f"[server]\nmax_num_seqs = {slots}\n" if slots else "")
    return measure("tenshu", proc, port, slots, streams, new_tokens, tenshu_stream)


def run_llama_server(binary: str, path: Path, streams: list[int], new_tokens: int) -> dict:
    port = free_port()
    slots = max(streams, default=1)
    proc = start_llama_server(binary, path, port, slots, PROMPT_TOKENS + new_tokens + 16,
                              torch.get_num_threads())
    return measure("llama-server", proc, port, slots, streams, new_tokens, _llama_stream)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", default="q8_0,q4_k_m")
    parser.add_argument("--shape", choices=SHAPES, default=SHAPES[0])
    parser.add_argument("--full", action="store_true", help="all layers (default: 4 layers)")
    parser.add_argument("--streams", default="16,64", help="concurrent requests, comma-separated")
    parser.add_argument("--stream-tokens", type=int, default=32)
    parser.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER")
                        or shutil.which("llama-server"))
    parser.add_argument("--idle", action="store_true",
                        help="only `tenshu serve`'s resident memory on its built-in model")
    args = parser.parse_args(argv)
    streams = [int(n) for n in args.streams.split(",") if n]
    results: dict = {"threads": torch.get_num_threads(), "stream_tokens": args.stream_tokens,
                     "prompt_tokens": PROMPT_TOKENS, "files": {}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.idle:
            results["tenshu_builtin_idle"] = run_tenshu(None, [], 0, Path(tmp) / "idle")
            print("tenshu serve, built-in model, idle:", results["tenshu_builtin_idle"]["idle"])
            return save(results, name="serving")
        if not args.llama_server:
            parser.error("no llama-server: build it (see this file's docstring) and set "
                         "LLAMA_SERVER or pass --llama-server")
        results["model"] = f"{args.shape}-shape" + ("" if args.full else "-4layers")
        for kind in args.types.split(","):
            path = gguf_file(kind, not args.full, args.shape)
            res = results["files"][kind] = {"file": path.name, **file_bytes(path)}
            print(f"== {kind}: {path.name}", flush=True)
            res["tenshu"] = run_tenshu(path, streams, args.stream_tokens, Path(tmp) / kind)
            res["llama_server"] = run_llama_server(args.llama_server, path, streams,
                                                   args.stream_tokens)
            res["ratio_tenshu_over_llama_server"] = {
                n: res["tenshu"]["streams"][n]["tokens_per_s"]
                / res["llama_server"]["streams"][n]["tokens_per_s"] for n in streams}
            print(kind, "tenshu / llama-server:", res["ratio_tenshu_over_llama_server"],
                  "resident idle (GB):", res["tenshu"]["idle"]["VmRSS"] / 1e9,
                  res["llama_server"]["idle"]["VmRSS"] / 1e9, flush=True)
    return save(results, name="serving")


if __name__ == "__main__":
    raise SystemExit(main())
