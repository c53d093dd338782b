"""The nightly run of the learning loop, as a schedule would start it: the first run trains,
gates and promotes; a run with nothing new is skipped and says why; new feedback makes the next
version, judged against the one in service; a second run while one holds the lock does nothing;
every run is in the history."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys

import pytest

from tenshu.config import DEFAULT_MODEL_DIR
from tenshu.learn.datasets import build
from tenshu.learn.nightly import Busy, history, run
from tenshu.learn.registry import Registry
from tenshu.store import Principal, open_store
from tenshu.store.feedback import export_rows
from tests.learn.test_datasets import answered, who
from tests.learn.test_train import SIGN_OFF, feedback_store, quick


def data_of(store):
    return build(export_rows(store.engine, Principal.of(store.users.get("ana"))))


def test_runs_train_gate_promote_then_wait_for_new_feedback(first_night, tmp_path):
    first, config = first_night["run"], first_night["config"]  # on 60 rated pairs
    assert first.status == "promoted", first.why
    assert any("judging v1 against the base model" in line for line in first_night["log"])
    home = shutil.copytree(first_night["home"], tmp_path / "home")  # to go on from it
    registry = Registry(home / "adapters")
    assert registry.serving("mine") == "v1"
    with open_store(home / "state.db") as store:
        again = run(registry, "mine", DEFAULT_MODEL_DIR, data_of(store), config)
        assert again.status == "skipped" and "not enough new feedback" in again.why
        assert again.version is None and registry.next_version("mine").name == "v2"

        ana = who(store, "ana")
        for i in range(12):  # new prompts, rated
            good = answered(store, "ana", f"a new greeting {i}", f"welcome {i}{SIGN_OFF}")
            bad = answered(store, "ana", f"a new greeting {i}", f"leave {i}")
            store.feedback.add(ana, "rating", good, rating=1)
            store.feedback.add(ana, "rating", bad, rating=-1)
        third = run(registry, "mine", DEFAULT_MODEL_DIR, data_of(store), config)
    assert third.version == "v2" and third.status in ("promoted", "rejected")
    assert third.verdict["against"] == "v1"  # judged against the version in service
    runs = history(registry, "mine")
    assert [r["status"] for r in runs] == ["promoted", "skipped", third.status]
    assert runs[0]["data"] != runs[2]["data"]


def test_a_second_run_meanwhile_does_nothing(tmp_path):
    registry = Registry(tmp_path / "adapters")
    folder = registry.folder("mine")
    folder.mkdir(parents=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(Busy, match="in progress already"):
            run(registry, "mine", DEFAULT_MODEL_DIR, build([]), quick("dpo"))
    assert history(registry, "mine") == []


def test_too_little_data_is_a_skipped_run_that_says_what_is_needed(tmp_path):
    feedback_store(tmp_path / "state.db", n=3).close()  # the home's own database
    env = {**os.environ, "TENSHU_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "tenshu", "learn", "nightly", "--user", "ana"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipped: DPO needs 16 training examples" in done.stdout
    shown = subprocess.run([sys.executable, "-m", "tenshu", "learn", "history"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert shown.stdout.splitlines()[1].split()[1] == "skipped"
