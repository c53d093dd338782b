"""One run of the learning loop, as a scheduler (or cron) starts it each night:

    datasets from the feedback -> enough new since the last run? -> train the next version ->
    the gate against the version in service -> promote it if it passes

One run at a time per adapter (an exclusive lock on adapters/NAME/.lock; a second run started
meanwhile says so and does nothing), and every run, skipped or not, is one line of
adapters/NAME/runs.jsonl: when, what it found, what it did, and why.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tenshu.learn.datasets import Datasets
from tenshu.learn.registry import Registry
from tenshu.learn.train import TrainConfig


class Busy(RuntimeError):
    """Another run of the same adapter holds the lock."""


@dataclass
class Run:
    adapter: str
    started: str
    status: str = "running"  # skipped | rejected | promoted | failed
    why: str = ""
    version: str | None = None
    data: str = ""  # the datasets' content hash
    examples: int = 0  # the method's training examples
    seconds: float = 0.0
    verdict: dict = field(default_factory=dict)


def history(registry: Registry, adapter: str) -> list[dict]:
    """The adapter's runs, oldest first."""
    path = registry.folder(adapter) / "runs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def run(registry: Registry, adapter: str, base: Path, datasets: Datasets, config: TrainConfig,
        *, min_new: int = 8, log: Callable[[str], None] = print) -> Run:
    """One run for `adapter` on `base`. Raises Busy when another run holds the lock."""
    folder = registry.folder(adapter)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"a run of {adapter!r} is in progress already") from None
        started = time.perf_counter()
        done = Run(adapter, datetime.now(UTC).isoformat(timespec="seconds"),
                   data=datasets.content_hash(config.method),
                   examples=len(datasets.split(config.method)[0]))
        try:
            _steps(done, registry, base, datasets, config, min_new, log)
        except Exception as exc:
            done.status, done.why = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            done.seconds = round(time.perf_counter() - started, 3)
            with (folder / "runs.jsonl").open("a", encoding="utf-8") as runs:
                runs.write(json.dumps(asdict(done), sort_keys=True) + "\n")
    return done


def _steps(done: Run, registry: Registry, base: Path, datasets: Datasets,
           config: TrainConfig, min_new: int, log) -> None:
    from tenshu.learn.gate import judge, record
    from tenshu.learn.train import train

    if (need := datasets.needs(config.method)) is not None:
        done.status, done.why = "skipped", need
        log(f"skipped: {need}")
        return
    last = next((r for r in reversed(history(registry, done.adapter))
                 if r["status"] in ("rejected", "promoted")), None)
    if last is not None:
        new = done.examples - last["examples"]
        if done.data == last["data"] or new < min_new:
            done.status = "skipped"
            done.why = (f"not enough new feedback since the last run ({max(new, 0)} new "
                        f"{config.method.upper()} examples; {min_new} needed)")
            log(f"skipped: {done.why}")
            return
    out = registry.next_version(done.adapter)
    done.version = out.name
    log(f"training {done.adapter} {out.name} ({config.method.upper()}, {done.examples} "
        "examples)")
    result = train(base, datasets, config, out, progress=False)
    serving = registry.serving(done.adapter)
    incumbent = registry.get(done.adapter, serving).adapter if serving else None
    log(f"judging {out.name} against {serving or 'the base model'}")
    verdict = judge(base, result.adapter, incumbent, datasets)
    record(verdict, result.manifest)
    done.verdict = {"accuracy": verdict.accuracy, "reasons": verdict.reasons,
                    "against": serving or "base"}
    if verdict.promote:
        registry.promote(done.adapter, out.name)
        done.status, done.why = "promoted", f"{out.name} is in service"
    else:
        done.status, done.why = "rejected", "; ".join(verdict.reasons)
    log(f"{done.status}: {done.why}")
