"""The server's edges under attack, measured: the figures of docs/security.md.

  python benchmarks/edges.py                        # about a minute on two cores
  python benchmarks/edges.py --checkout OTHER_CLONE  # the servers run that clone's tenshu

Each measurement starts `tenshu serve` in a process of its own (tests/api/process.py) and
does to it what the red team did:

- loop: a 2 MB prompt counted and a 12 MB chat request sent to a model with a 1M-token window
  (a random Qwen3-shaped checkpoint, byte-level BPE), while /health is asked every 10 ms: how
  long each big request took, and the slowest /health answer meanwhile.
- headers: 40 connections each sending a 10 MB header that never ends: the server's resident
  memory before and after, and what each was answered.
- slow clients: 100 connections that send a byte a second and 100 that send nothing: how many
  are still open 15 s later (header_timeout is 10 s).
- sigterm: SIGTERM while a 1,100-input embedding runs (grace 2 s): seconds until the process
  has exited, and its exit code.
- kill -9: 96 concurrent chat requests answered, then SIGKILL, then a restart: how many of the
  answered requests are in the audit log.
Results print as a table and are saved to benchmarks/results/edges-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tenshu.store import open_store  # noqa: E402
from tests.api import process  # noqa: E402
from tests.checkpoints import make_checkpoint  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CHECKOUT: dict = {}  # process.start's cwd and PYTHONPATH, when --checkout names another clone


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def health_during(url: str, send) -> dict:
    """Run `send()` (a big request) while asking /health every 10 ms."""
    latencies: list[float] = []
    done = threading.Event()
    outcome: dict = {}

    def big():
        started = time.perf_counter()
        response = send()
        outcome.update(status=response.status_code, seconds=time.perf_counter() - started,
                       message=response.text[:120])
        done.set()

    thread = threading.Thread(target=big)
    thread.start()
    with httpx.Client(timeout=600) as client:
        while not done.is_set():
            started = time.perf_counter()
            client.get(url + "/health")
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)
    thread.join()
    return {**outcome, "health_asked": len(latencies),
            "health_p50_ms": round(statistics.median(latencies) * 1000, 2),
            "health_max_ms": round(max(latencies) * 1000, 2)}


def loop(work: Path) -> dict:
    model = make_checkpoint(work / "wide", "qwen3", max_position_embeddings=1_000_000)
    words = [f"w{i % 977}x{i % 13}" for i in range(400_000)]
    text_2mb = " ".join(words)[:2_000_000]
    text_12mb = (text_2mb + " ") * 6
    out = {}
    with process.running(work / "loop", "--model", f"wide={model}", "--kv-cache-gib",
                         "0.25", **CHECKOUT) as server:
        out["count_tokens_2mb"] = health_during(server.url, lambda: httpx.post(
            server.url + "/v1/messages/count_tokens", timeout=600, json={
                "model": "wide", "messages": [{"role": "user", "content": text_2mb}]}))
        out["chat_12mb"] = health_during(server.url, lambda: httpx.post(
            server.url + "/v1/chat/completions", timeout=600, json={
                "model": "wide", "max_tokens": 4,
                "messages": [{"role": "user", "content": text_12mb}]}))
    return out


def headers(work: Path) -> dict:
    with process.running(work / "headers", **CHECKOUT) as server:
        port = int(server.url.rsplit(":", 1)[1])
        before = rss_mib(server.process.pid)
        answers: list[str] = []

        def endless():
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                try:
                    sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
                    for _ in range(10 * 64):
                        sock.sendall(b"a" * 16_384)
                except OSError:
                    pass
                try:
                    answers.append(sock.recv(200).split(b"\r\n")[0].decode())
                except OSError as exc:
                    answers.append(type(exc).__name__)

        threads = [threading.Thread(target=endless) for _ in range(40)]
        for thread in threads:
            thread.start()
        peak = before
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss_mib(server.process.pid))
            time.sleep(0.05)
        after = rss_mib(server.process.pid)
    return {"rss_before_mib": round(before, 1), "rss_peak_mib": round(peak, 1),
            "rss_after_mib": round(after, 1),
            "answers": {a: answers.count(a) for a in sorted(set(answers))}}


def slow_clients(work: Path) -> dict:
    with process.running(work / "slow", **CHECKOUT) as server:
        port = int(server.url.rsplit(":", 1)[1])
        trickling = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
        request = b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n" + b"X-Pad: " + b"p" * 100
        started = time.monotonic()
        for i in range(15):
            for sock in trickling:
                with contextlib.suppress(OSError):
                    sock.sendall(request[i:i + 1])
            time.sleep(max(0.0, started + i + 1 - time.monotonic()))

        def open_(sock: socket.socket) -> bool:
            """Still waiting: nothing answered, not closed."""
            sock.setblocking(False)
            try:
                sock.recv(4096)  # an answer (408) or the end: cut off
            except BlockingIOError:
                return True
            except OSError:
                pass
            return False

        result = {"trickling_open_after_15s": sum(open_(s) for s in trickling),
                  "silent_open_after_15s": sum(open_(s) for s in silent)}
        for sock in trickling + silent:
            sock.close()
    return result


def sigterm(work: Path) -> dict:
    server = process.start(work / "sigterm", "--grace", "2", **CHECKOUT)
    httpx.post(server.url + "/v1/embeddings", timeout=120,
               json={"model": "all-minilm-l6-v2", "input": "load"})
    thread = threading.Thread(target=lambda: httpx.post(
        server.url + "/v1/embeddings", timeout=900,
        json={"model": "all-minilm-l6-v2", "input": ["the castle keep at dusk, " * 40] * 1_100}))
    thread.daemon = True
    thread.start()
    time.sleep(3)
    started = time.monotonic()
    try:
        code = server.stop(signal.SIGTERM, timeout=120)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        return {"seconds_to_exit": "over 120 (killed)", "exit_code": None}
    return {"seconds_to_exit": round(time.monotonic() - started, 2), "exit_code": code}


def kill_9(work: Path) -> dict:
    home = work / "kill"
    server = process.start(home, "--max-queue", "512", **CHECKOUT)

    async def load() -> list[str]:
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
            async def one(i: int) -> str | None:
                response = await client.post("/v1/chat/completions", json={
                    "model": "tenshu-tiny", "max_tokens": 8,
                    "messages": [{"role": "user", "content": f"hello {i}"}]})
                return response.headers["request-id"] if response.status_code == 200 else None

            return await asyncio.gather(*(one(i) for i in range(96)))

    answered = [rid for rid in asyncio.run(load()) if rid]
    server.process.kill()
    server.process.wait()
    with process.running(home, **CHECKOUT):
        pass
    with open_store(home / "state.db") as store:
        logged = sum(store.audit.find(rid) is not None for rid in answered)
    return {"answered": len(answered), "logged_after_restart": logged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkout", type=Path, help="run the servers from this clone")
    args = parser.parse_args()
    if args.checkout:
        CHECKOUT["checkout"] = args.checkout.resolve()
    with tempfile.TemporaryDirectory(prefix="tenshu-edges-") as tmp:
        work = Path(tmp)
        results = {}
        for name, measure in [("loop", loop), ("headers", headers), ("slow", slow_clients),
                              ("sigterm", sigterm), ("kill_9", kill_9)]:
            print(f"measuring {name} ...", file=sys.stderr)
            results[name] = measure(work)
            print(json.dumps(results[name], indent=1))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"edges-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"saved {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
