"""The gate on real adapters: one trained on what the person preferred (answers that end with a
sign-off) beats the base model on held-out pairs and is promoted; one trained on the flipped
labels is rejected, and so is any candidate with too few held-out pairs to decide on; `tenshu
learn gate` records the verdict and moves the alias only when the candidate passes."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from tenshu.config import DEFAULT_MODEL_DIR
from tenshu.learn.datasets import Datasets
from tenshu.learn.gate import judge
from tenshu.learn.registry import Registry
from tenshu.learn.train import train


@pytest.fixture(scope="module")
def trained(first_night, tmp_path_factory):
    """ana's data (60 prompts, each a rated-up answer with the sign-off and a rated-down one
    without), the adapter the first night trained on it (DPO, 16 steps: v1 of `mine`), and one
    trained the same way on the same pairs flipped."""
    data = first_night["data"]
    flipped = Datasets(sft=data.sft, kto=data.kto, dpo=[
        dataclasses.replace(e, chosen=e.rejected, rejected=e.chosen) for e in data.dpo])
    good = Registry(first_night["home"] / "adapters").get("mine", "v1")
    bad = train(DEFAULT_MODEL_DIR, flipped, first_night["config"],
                tmp_path_factory.mktemp("gate") / "bad", progress=False)
    return {"home": first_night["home"], "data": data, "good": good, "bad": bad}


def test_the_adapter_that_learned_the_preference_is_promoted(trained):
    verdict = judge(DEFAULT_MODEL_DIR, trained["good"].adapter, None, trained["data"])
    assert verdict.promote, verdict.reasons
    assert verdict.pairs >= 4
    assert verdict.accuracy["interval"][0] > 0
    assert verdict.accuracy["candidate"] > verdict.accuracy["incumbent"]
    assert verdict.general_loss["candidate"] <= verdict.general_loss["incumbent"] * 1.1
    assert verdict.generation["candidate"]["end_of_turn"] > 0.5
    # the same adapters and data: the same verdict as the first night's judging recorded
    recorded = json.loads((trained["good"].path / "manifest.json").read_text())["verdict"]
    assert recorded == verdict.to_json()


def test_flipped_labels_are_rejected_against_the_base_and_the_incumbent(trained):
    against_base = judge(DEFAULT_MODEL_DIR, trained["bad"].adapter, None, trained["data"])
    assert not against_base.promote
    assert any("not surely better" in r for r in against_base.reasons)
    against_good = judge(DEFAULT_MODEL_DIR, trained["bad"].adapter, trained["good"].adapter,
                         trained["data"])
    assert not against_good.promote
    assert against_good.accuracy["difference"] < 0


def test_too_few_held_out_pairs_decide_nothing(trained):
    few = Datasets(dpo=trained["data"].split("dpo")[1][:2])
    verdict = judge(DEFAULT_MODEL_DIR, trained["good"].adapter, None, few)
    assert not verdict.promote
    assert any("needs 4 to decide" in r for r in verdict.reasons)


def test_tenshu_learn_gate_records_the_verdict_and_promotes_only_a_winner(trained, tmp_path):
    registry = Registry(tmp_path / "adapters")
    for run in ("bad", "good"):
        folder = registry.next_version("mine")
        shutil.copytree(trained[run].adapter.parent, folder,
                        ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copy(trained["home"] / "state.db", tmp_path / "state.db")
    env = {**os.environ, "TENSHU_HOME": str(tmp_path)}

    def gate(*args):
        return subprocess.run([sys.executable, "-m", "tenshu", "learn", "gate", "mine", *args,
                               "--user", "ana"], capture_output=True, text=True, timeout=600,
                              env=env)

    rejected = gate("v1")
    assert rejected.returncode == 0, rejected.stderr[-2000:]
    assert "rejected:" in rejected.stdout and registry.serving("mine") is None
    verdict = json.loads((tmp_path / "adapters/mine/v1/manifest.json").read_text())["verdict"]
    assert verdict["decision"] == "reject" and verdict["data"] == trained["data"].content_hash()
    promoted = gate()  # the newest: v2
    assert "promoted: mine v2 is in service" in promoted.stdout, promoted.stdout
    assert registry.serving("mine") == "v2"
