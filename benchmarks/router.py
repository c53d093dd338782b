"""Gateway overhead against an upstream that answers at once: tenshu and the LiteLLM proxy in
front of the same fast upstream, measured in one run, interleaved, beside the upstream alone.

  python benchmarks/router.py               # concurrency 1, 16, 64; plain and streaming
  python benchmarks/router.py --quick       # fewer requests, plain only
  python benchmarks/router.py --targets direct,litellm    # leave tenshu out
  python benchmarks/router.py --targets tenshu,recording --modes plain
                                            # conversation recording on against off

Three processes serve: benchmarks/fast_upstream.py; `tenshu serve` with one model of backend
"openai" pointing at it (a temporary TENSHU_HOME, no API keys, no embedder); and the LiteLLM
proxy (`litellm[proxy]`, from its own venv, .venv-litellm: see docs/benchmarks.md to make it)
with one model "openai/fast" at the same api_base, one worker, logging and database off. The
load generator sends the same chat completion to each, with a fixed number of connections
(the concurrency), each keeping one request in flight, over keep-alive. Targets take turns in
rounds, so that load from elsewhere on the machine falls on all of them alike.

The `recording` target is a second tenshu, whose every request starts a conversation
(`x-tenshu-conversation: new`) that is recorded: the cost of recording, against `tenshu`
beside it (goal: added p50 <= 1 ms, requests/s >= 90%).

Reported per target and concurrency: latency p50 / p99, requests/s, and the CPU the serving
process spent per request (the gateway's own process for tenshu and LiteLLM, the upstream's for
direct); the gateways' added latency (their p50 / p99 minus the upstream's) and tenshu's
requests/s over LiteLLM's. Goals (issue): added p99 <= 5 ms at concurrency 16, and >= 5x
LiteLLM's requests/s. The generator is a minimal HTTP/1.1 client on asyncio, not httpx: it
shares the CPU with the servers, and on the 2-core machine of docs/benchmarks.md
httpx.AsyncClient cost 1.1-3.0 ms of CPU per request (more with more pooled connections)
against 0.07-0.14 ms for this one; the run prints the generator's own CPU per request.
Results print as a markdown table and are saved to benchmarks/results/router-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
LITELLM_VENV = ROOT / ".venv-litellm"
TARGETS = ("direct", "tenshu", "recording", "litellm")
DEFAULT_TARGETS = ("direct", "tenshu", "litellm")
PROMPT = {"model": "fast", "messages": [{"role": "user", "content": "Say hello."}],
          "max_tokens": 16}
EXPECT = b"fast upstream"  # every answer carries the upstream's text


# -- the servers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(proc: subprocess.Popen, url: str, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"{name} was not ready at {url} after {timeout:.0f} s")


def start_upstream(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "fast_upstream.py"),
                             "--port", str(port)], stdout=subprocess.DEVNULL)
    _wait_ready(proc, f"http://127.0.0.1:{port}/health", "the fast upstream", 30)
    return proc


def tenshu_config(port: int, upstream: int) -> str:
    return (f'[server]\nport = {port}\nembedder = false\n\n'
            f'[[models]]\nname = "fast"\nbackend = "openai"\n'
            f'endpoint = "http://127.0.0.1:{upstream}/v1"\n')


def start_tenshu(port: int, upstream: int, home: Path) -> subprocess.Popen:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "tenshu.toml"
    config.write_text(tenshu_config(port, upstream))
    env = {**os.environ, "TENSHU_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "tenshu", "serve", "--config", str(config),
                             "--log-level", "warning"], env=env, cwd=ROOT)
    _wait_ready(proc, f"http://127.0.0.1:{port}/ready", "tenshu serve", 120)
    return proc


# Settings from LiteLLM's production and benchmark pages: no debug logs, no uvicorn access
# log (LITELLM_LOG=ERROR), no callbacks, no retries, no spend or error logs (there is no
# database either), the bundled model cost map instead of a fetch from GitHub at start-up.
# No master key, as tenshu runs here without API keys: neither side checks a key.
LITELLM_CONFIG = """\
model_list:
  - model_name: fast
    litellm_params:
      model: openai/fast
      api_base: http://127.0.0.1:{upstream}/v1
      api_key: x
litellm_settings:
  set_verbose: false
  json_logs: false
  callbacks: []
  num_retries: 0
  request_timeout: 600
general_settings:
  dangerously_permit_weak_or_unset_master_key: true
  disable_spend_logs: true
  disable_error_logs: true
"""
LITELLM_ENV = {"LITELLM_LOG": "ERROR", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "LITELLM_MODE": "PRODUCTION"}


def litellm_version() -> str | None:
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        return None
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m;"
                          "print(m.version('litellm'))"], capture_output=True, text=True)
    return out.stdout.strip() or None


def start_litellm(port: int, upstream: int, workdir: Path) -> subprocess.Popen:
    config = workdir / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(upstream=upstream))
    env = {**os.environ, **LITELLM_ENV}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as pip leaves it: imports from cached bytecode
    proc = subprocess.Popen([str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config),
                             "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
                            env=env, cwd=workdir, stdout=subprocess.DEVNULL)
    _wait_ready(proc, f"http://127.0.0.1:{port}/health/liveliness", "the LiteLLM proxy", 180)
    return proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        todo += children.get(p, [])
    return total


# -- the load generator -------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection that sends a fixed request and reads the answer."""

    def __init__(self, port: int, request: bytes):
        self.port, self.request = port, request
        self.reader = self.writer = None

    async def send(self) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")  # no trailers are sent here
                    break
                parts.append((await self.reader.readexactly(size + 2))[:-2])
            body = b"".join(parts)
        else:
            at = lower.index(b"content-length:") + 15
            body = await self.reader.readexactly(int(lower[at : lower.index(b"\r\n", at)]))
        if b"connection: close" in lower:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def raw_request(port: int, stream: bool, record: bool = False) -> bytes:
    body = dict(PROMPT, stream=True, stream_options={"include_usage": True}) if stream else PROMPT
    data = json.dumps(body).encode()
    extra = b"x-tenshu-conversation: new\r\n" if record else b""
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n%s"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (port, extra, len(data), data))


async def drive(conns: list[Connection], count: int) -> tuple[list[float], float, int]:
    """Send count requests over the connections, one in flight on each: latencies, wall, errors."""
    latencies: list[float] = []
    errors = 0
    left = count

    async def worker(conn: Connection) -> None:
        nonlocal left, errors
        while left > 0:
            left -= 1
            start = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(conn.send(), 60)
                ok = status == 200 and EXPECT in body
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    return latencies, time.perf_counter() - start, errors


async def measure(port: int, pid: int | None, stream: bool, concurrency: int, count: int,
                  warmup: int, record: bool = False) -> dict:
    conns = [Connection(port, raw_request(port, stream, record)) for _ in range(concurrency)]
    try:
        await drive(conns, warmup)
        server_cpu, own_cpu = cpu_seconds(pid) if pid else 0.0, time.process_time()
        latencies, wall, errors = await drive(conns, count)
        own_cpu = time.process_time() - own_cpu
        server_cpu = cpu_seconds(pid) - server_cpu if pid else 0.0
    finally:
        for c in conns:
            c.close()
    return {"latencies": latencies, "wall": wall, "errors": errors,
            "server_cpu": server_cpu, "client_cpu": own_cpu}


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def summarize(parts: list[dict]) -> dict:
    latencies = sorted(x for p in parts for x in p["latencies"])
    done = len(latencies)
    wall = sum(p["wall"] for p in parts)
    n = done or 1
    return {
        "requests": done, "errors": sum(p["errors"] for p in parts),
        "p50_ms": percentile(latencies, 0.50) * 1e3 if done else None,
        "p99_ms": percentile(latencies, 0.99) * 1e3 if done else None,
        "req_per_s": done / wall if wall else None,
        "server_cpu_ms_per_req": sum(p["server_cpu"] for p in parts) / n * 1e3,
        "client_cpu_ms_per_req": sum(p["client_cpu"] for p in parts) / n * 1e3,
    }


async def run_all(ports: dict, pids: dict, modes, concurrencies, count, warmup, rounds) -> dict:
    results: dict = {}
    names = list(ports)
    for mode in modes:
        for c in concurrencies:
            parts: dict[str, list[dict]] = {name: [] for name in names}
            for r in range(rounds):
                for name in names[r % len(names):] + names[: r % len(names)]:
                    parts[name].append(await measure(ports[name], pids[name], mode == "stream",
                                                     c, count // rounds, warmup,
                                                     record=name == "recording"))
            for name in names:
                s = summarize(parts[name])
                if not s["requests"]:
                    raise RuntimeError(f"every request to {name} failed ({mode}, c={c})")
                results.setdefault(mode, {}).setdefault(str(c), {})[name] = s
                print(f"  {mode:6} c={c:<3} {name:8} p50 {s['p50_ms']:7.2f} ms  "
                      f"p99 {s['p99_ms']:7.2f} ms  {s['req_per_s']:8.1f} req/s  "
                      f"errors {s['errors']}", flush=True)
    return results


# -- the report ---------------------------------------------------------------------------------


def table(results: dict) -> str:
    rows = ["| mode | conc. | target | p50 ms | p99 ms | req/s | added p50 / p99 ms | "
            "server CPU ms/req | tenshu / LiteLLM req/s |", "|---|---|---|---|---|---|---|---|---|"]
    for mode, by_c in results.items():
        for c, by_target in by_c.items():
            direct = by_target.get("direct")
            for name, s in by_target.items():
                added = ratio = ""
                if direct and name != "direct":
                    added = (f"{s['p50_ms'] - direct['p50_ms']:+.2f} / "
                             f"{s['p99_ms'] - direct['p99_ms']:+.2f}")
                if name == "tenshu" and "litellm" in by_target:
                    ratio = f"**{s['req_per_s'] / by_target['litellm']['req_per_s']:.2f}x**"
                errors = f" ({s['errors']} errors)" if s["errors"] else ""
                rows.append(f"| {mode} | {c} | {name}{errors} | {s['p50_ms']:.2f} | "
                            f"{s['p99_ms']:.2f} | {s['req_per_s']:.0f} | {added} | "
                            f"{s['server_cpu_ms_per_req']:.2f} | {ratio} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, plain mode only")
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                        help="any of direct, tenshu, recording, litellm (default: direct, "
                             "tenshu, litellm)")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--modes", help="plain, stream or both (default: plain,stream)")
    parser.add_argument("--requests", type=int, help="measured requests per target and cell")
    parser.add_argument("--warmup", type=int, help="requests before each measured batch")
    parser.add_argument("--rounds", type=int, default=3,
                        help="turns each target takes per cell, the requests split among them")
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    modes = (args.modes or ("plain" if args.quick else "plain,stream")).split(",")
    count = args.requests or (600 if args.quick else 3000)
    warmup = args.warmup if args.warmup is not None else (30 if args.quick else 100)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    if "litellm" in targets and litellm_version() is None:
        parser.error(f"no LiteLLM at {LITELLM_VENV}: make it as docs/benchmarks.md says, "
                     "or leave it out with --targets direct,tenshu")

    upstream = free_port()
    procs: dict[str, subprocess.Popen] = {}
    ports: dict[str, int] = {}
    work = Path(tempfile.mkdtemp(prefix="tenshu-bench-router-"))
    try:
        procs["upstream"] = start_upstream(upstream)
        if "direct" in targets:
            ports["direct"] = upstream
        starters = {"tenshu": lambda p: start_tenshu(p, upstream, work / "tenshu"),
                    "recording": lambda p: start_tenshu(p, upstream, work / "recording"),
                    "litellm": lambda p: start_litellm(p, upstream, work)}
        for name in ("tenshu", "recording", "litellm"):
            if name in targets:
                ports[name] = free_port()
                print(f"starting {name} ...", flush=True)
                procs[name] = starters[name](ports[name])
        pids = {name: procs["upstream" if name == "direct" else name].pid for name in ports}
        print(f"measuring {', '.join(ports)}: {count} requests per cell in {args.rounds} "
              f"rounds, {warmup} warm-up requests before each", flush=True)
        results = asyncio.run(run_all(ports, pids, modes, concurrencies, count, warmup,
                                      args.rounds))
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)

    record = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
              "litellm": litellm_version() if "litellm" in targets else None,
              "requests_per_cell": count, "warmup": warmup, "rounds": args.rounds,
              "results": results}
    print("\n" + table(results))
    client = [s["client_cpu_ms_per_req"] for by_c in results.values() for by_t in by_c.values()
              for s in by_t.values()]
    print(f"\nthe load generator's own CPU: {min(client):.3f}-{max(client):.3f} ms per request")
    goals(results)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"router-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(record, indent=2))
    print(f"saved {out}")
    return 0


def goals(results: dict) -> None:
    plain = results.get("plain", {})
    c16 = plain.get("16", {})
    if "tenshu" in c16 and "direct" in c16:
        added = c16["tenshu"]["p99_ms"] - c16["direct"]["p99_ms"]
        print(f"\ngoal: added p99 at concurrency 16 <= 5 ms: {added:+.2f} ms")
    best = {name: max(by_t[name]["req_per_s"] for by_t in plain.values() if name in by_t)
            for name in ("tenshu", "litellm") if any(name in by_t for by_t in plain.values())}
    if len(best) == 2:
        print(f"goal: max req/s >= 5x LiteLLM's: tenshu {best['tenshu']:.0f}, "
              f"LiteLLM {best['litellm']:.0f}: {best['tenshu'] / best['litellm']:.2f}x")
    for c, by_t in plain.items():
        if "recording" in by_t and "tenshu" in by_t:
            on, off = by_t["recording"], by_t["tenshu"]
            print(f"goal (c={c}): recording adds <= 1 ms at p50 and keeps >= 90% of req/s: "
                  f"{on['p50_ms'] - off['p50_ms']:+.2f} ms, "
                  f"{on['req_per_s'] / off['req_per_s']:.0%}")


if __name__ == "__main__":
    sys.exit(main())
