"""The learning loop end to end, through a real server on the built-in model: a scripted user
chats and corrects answers to end with their sign-off (HTTP API), the nightly run builds the
datasets, trains a DPO adapter, gates and promotes it, the server hot-loads it, and the served
model's habit is measured on prompts it never trained on, before and after (Wilson 95%
intervals). Also: the nightly run's wall time, the hot-load time (promotion to first answer of
the new version), and what a hot-swap does to the p99 latency of requests running meanwhile.

  python benchmarks/learn_loop.py [--train 64] [--held-out 64] [--steps 48] [--lr 5e-4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from tenshu.config import DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME  # noqa: E402
from tenshu.learn.datasets import build  # noqa: E402
from tenshu.learn.nightly import run  # noqa: E402
from tenshu.learn.registry import Registry  # noqa: E402
from tenshu.learn.train import TrainConfig  # noqa: E402
from tenshu.store import Principal  # noqa: E402
from tenshu.store.feedback import export_rows  # noqa: E402
from tests.api.live import live_server  # noqa: E402
from tests.learn import scripted  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=64, help="prompts the user corrects")
    parser.add_argument("--held-out", type=int, default=64, help="prompts measured")
    parser.add_argument("--steps", type=int, default=48, help="DPO steps")
    parser.add_argument("--lr", type=float, default=5e-4)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tenshu-bench-loop-"))
    registry = Registry(home / "adapters")
    held = range(args.train, args.train + args.held_out)  # of the same kind, never rated
    with live_server(home / "state.db", key_name=None, adapters_root=registry.root) as live:
        store = live.server.store
        store.users.add("ana")
        key = store.keys.create("ana-key", user="ana")[1]
        admin = store.keys.create("admin-key")[1]
        with httpx.Client(base_url=live.base_url, timeout=300,
                          headers={"Authorization": f"Bearer {key}"}) as http:
            started = time.perf_counter()
            sent = scripted.teach(http, DEFAULT_MODEL_NAME, range(args.train))
            print(f"scripted user: {sent} corrections in {time.perf_counter() - started:.1f} s")
            before = scripted.answers(http, DEFAULT_MODEL_NAME, held)
            data = build(export_rows(store.engine, Principal.of(store.users.get("ana"))))
            config = TrainConfig("dpo", max_steps=args.steps, learning_rate=args.lr, nice=0)
            started = time.perf_counter()
            done = run(registry, "mine", DEFAULT_MODEL_DIR, data, config, log=print)
            nightly = time.perf_counter() - started
            if done.status != "promoted":
                sys.exit(f"nightly run: {done.status}: {done.why}")
            promoted = time.monotonic()
            while "mine" not in {m["id"] for m in http.get("/v1/models").json()["data"]}:
                time.sleep(0.05)
            hot_load = time.monotonic() - promoted
            after = scripted.answers(http, "mine", held)
        print(f"nightly run: {done.status} ({done.why}) in {nightly:.1f} s, "
              f"{done.examples} DPO pairs, verdict {done.verdict}")
        print(f"promotion seen and served after {hot_load:.2f} s (the watch polls every 2 s)")
        print(f"signed answers, base: {scripted.rate(before)}")
        print(f"signed answers, mine: {scripted.rate(after)}")
        print("swap under load:", asyncio.run(_swap_under_load(live, registry, admin)))


async def _swap_under_load(live, registry: Registry, key: str) -> str:
    """p50/p99 of requests to the adapter with nobody swapping, then with a hot-swap (the same
    version loaded again in place) every second meanwhile."""

    async def load(h: httpx.AsyncClient, seconds: float, swap: bool) -> list[float]:
        times: list[float] = []
        end = time.monotonic() + seconds

        async def client(i: int) -> None:
            while time.monotonic() < end:
                t = time.perf_counter()
                r = await h.post("/v1/chat/completions", json={
                    "model": "mine", "temperature": 0, "max_tokens": 16,
                    "messages": [{"role": "user", "content": scripted.prompt(i)}]})
                assert r.status_code == 200, r.text
                times.append(time.perf_counter() - t)

        async def swapper() -> list[float]:
            took = []
            path = str(registry.get("mine").adapter)
            while time.monotonic() < end:
                await asyncio.sleep(1.0)
                t = time.perf_counter()
                r = await h.post("/v1/load_lora_adapter", json={
                    "lora_name": "mine", "lora_path": path, "load_inplace": True})
                assert r.status_code == 200, r.text
                took.append(time.perf_counter() - t)
            return took

        tasks = [client(i) for i in range(4)]
        swaps = await asyncio.gather(*tasks, *([swapper()] if swap else []))
        if swap:
            load.swaps = swaps[-1]
        return times

    async with httpx.AsyncClient(base_url=live.base_url, timeout=300,
                                 headers={"Authorization": f"Bearer {key}"}) as h:
        quiet = await load(h, 20, swap=False)
        busy = await load(h, 20, swap=True)

    def p(times, q):
        return statistics.quantiles(times, n=100)[q - 1] * 1000

    return (f"without swaps p50 {p(quiet, 50):.0f} ms p99 {p(quiet, 99):.0f} ms ({len(quiet)} "
            f"requests); with a swap every second p50 {p(busy, 50):.0f} ms p99 "
            f"{p(busy, 99):.0f} ms ({len(busy)} requests); load_lora_adapter took "
            f"{statistics.median(load.swaps) * 1000:.0f} ms median")


if __name__ == "__main__":
    main()
