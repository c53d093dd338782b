"""Training throughput of the learning loop on this machine: SFT and DPO LoRA adapters on the
built-in model, from a feedback log made for the purpose (48 prompts, each with a rated-up and a
rated-down answer), tokens per second as TRL counts them.

  python benchmarks/learn.py [--steps 24]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tenshu.config import DEFAULT_MODEL_DIR  # noqa: E402
from tenshu.learn.datasets import build  # noqa: E402
from tenshu.learn.train import TrainConfig, train  # noqa: E402
from tenshu.store import Principal  # noqa: E402
from tenshu.store.feedback import export_rows  # noqa: E402
from tests.learn.test_train import feedback_store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=24)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tenshu-bench-learn-"))
    with feedback_store(home / "state.db", n=48) as store:
        data = build(export_rows(store.engine, Principal.of(store.users.get("ana"))))
    print("| method | steps | batch | seconds | tokens/s |\n|---|---:|---:|---:|---:|")
    for method in ("sft", "dpo"):
        result = train(DEFAULT_MODEL_DIR, data, TrainConfig(method, max_steps=args.steps, nice=0),
                       home / method, progress=False)
        print(f"| {method.upper()} | {result.steps} | 4 | {result.seconds:.1f} | "
              f"{result.tokens_per_second:,.0f} |")


if __name__ == "__main__":
    main()
