"""Run tenshu's benchmarks against peers in the same run and print ratios.

  tenshu bench engine            the engine benchmarks (throughput, single-stream decode,
                                 prefix cache), with transformers (and llama.cpp when built)
  tenshu bench engine --quick    a smaller model and workload, for a smoke run

The benchmarks live in the source checkout (benchmarks/); results and the commands that
produced them are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

BENCHMARKS = {"engine": "engine.py"}


def add_arguments(parser) -> None:
    parser.add_argument("suite", choices=sorted(BENCHMARKS))
    parser.add_argument("rest", nargs="*", help="arguments passed to the benchmark")


def main(args) -> int:
    root = Path(__file__).resolve().parents[2] / "benchmarks"
    script = root / BENCHMARKS[args.suite]
    if not script.is_file():
        print(f"tenshu bench: {script} not found; benchmarks run from a source checkout",
              file=sys.stderr)
        return 1
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0
