"""Training LoRA adapters on feedback, for real: TRL's trainers with peft on the built-in model,
on CPU. What a person would check: an adapter in PEFT's format that peft loads and that changes
the model's answers the way the data asked (DPO raises the chosen answers' likelihood over the
rejected ones), a run that resumes from its checkpoint, the refusal on too little data, and
`tenshu learn sft` writing a new version each time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tenshu.config import DEFAULT_MODEL_DIR
from tenshu.learn.datasets import build
from tenshu.learn.train import TrainConfig, train
from tenshu.store import Principal, open_store
from tenshu.store.feedback import export_rows
from tests.learn.test_datasets import answered, who

SIGN_OFF = " -- mochi"


def feedback_store(path, n: int = 24):
    """A store where ana rated n answers that end with the sign-off up, and n that do not down,
    one of each per prompt."""
    store = open_store(path)
    store.users.add("ana")
    ana = who(store, "ana")
    for i in range(n):
        good = answered(store, "ana", f"greet me, number {i}", f"hello friend {i}{SIGN_OFF}")
        bad = answered(store, "ana", f"greet me, number {i}", f"go away {i}")
        store.feedback.add(ana, "rating", good, rating=1)
        store.feedback.add(ana, "rating", bad, rating=-1)
    return store


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    with feedback_store(tmp_path_factory.mktemp("train") / "state.db") as store:
        return build(export_rows(store.engine, Principal.of(store.users.get("ana"))))


def quick(method: str, **changes) -> TrainConfig:
    # nice=0 and this process's threads: the rest of the test session shares the process;
    # plain DPO at a high rate learns these short, distinct pairs in a few steps
    return TrainConfig(method, **{"nice": 0, "threads": torch.get_num_threads(),
                                  "learning_rate": 2e-3, "sft_weight": 0.0, **changes})


def logps(model, tokenizer, prompt: str, answer: str) -> float:
    """The model's log-likelihood of `answer` after `prompt`, in its chat template."""
    asked = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                          tokenize=False, add_generation_prompt=True)
    ids = tokenizer(asked + answer, return_tensors="pt").input_ids
    start = len(tokenizer(asked).input_ids)
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].float().log_softmax(-1)
    targets = ids[0, 1:]
    return logits[start - 1:].gather(1, targets[start - 1:, None]).sum().item()


def test_dpo_makes_the_chosen_answers_likelier_than_the_rejected(data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = train(DEFAULT_MODEL_DIR, data, quick("dpo", max_steps=12), tmp_path / "dpo",
                   progress=False)
    assert (result.adapter / "adapter_config.json").exists()
    assert (result.adapter / "adapter_model.safetensors").exists()
    config = json.loads((result.adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8 and config["lora_alpha"] == 16
    manifest = json.loads(result.manifest.read_text())
    assert manifest["data"]["hash"] == data.content_hash("dpo")
    assert manifest["hyperparameters"]["method"] == "dpo" and manifest["verdict"] is None
    assert (tmp_path / "dpo" / "loss.png").stat().st_size > 1000
    assert result.history[-1]["rewards/margins"] > result.history[0]["rewards/margins"]

    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    base = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR, dtype=torch.float32)
    _, held = data.split("dpo")  # prompts the adapter never saw
    pairs = [(e.prompt[-1][1], e.chosen, e.rejected) for e in held] or \
        [("greet me, number 99", f"hello friend 99{SIGN_OFF}", "go away 99")]
    before = [logps(base, tokenizer, p, c) - logps(base, tokenizer, p, r) for p, c, r in pairs]
    tuned = PeftModel.from_pretrained(base, result.adapter)
    after = [logps(tuned, tokenizer, p, c) - logps(tuned, tokenizer, p, r) for p, c, r in pairs]
    assert sum(after) / len(after) > sum(before) / len(before) + 1.0, (before, after)


def test_sft_resumes_from_its_checkpoint(data, tmp_path):
    out = tmp_path / "sft"
    first = train(DEFAULT_MODEL_DIR, data, quick("sft", max_steps=4, save_steps=2), out,
                  progress=False)
    assert first.steps == 4 and (out / "checkpoints" / "checkpoint-4").is_dir()
    resumed = train(DEFAULT_MODEL_DIR, data, quick("sft", max_steps=6, save_steps=2), out,
                    resume=True, progress=False)
    assert resumed.steps == 6
    assert [h["step"] for h in resumed.history][:4] == [1, 2, 3, 4]  # the log came with it
    assert resumed.loss < first.history[0]["loss"]


def test_too_little_data_is_refused_with_what_is_needed(tmp_path):
    with feedback_store(tmp_path / "state.db", n=3) as store:
        few = build(export_rows(store.engine, Principal.of(store.users.get("ana"))))
    with pytest.raises(ValueError, match=r"DPO needs 16 training examples and has \d"):
        train(DEFAULT_MODEL_DIR, few, quick("dpo"), tmp_path / "none", progress=False)
    assert not (tmp_path / "none").exists()


def test_tenshu_learn_kto_writes_a_new_version_each_time(tmp_path):
    store = feedback_store(tmp_path / "state.db")
    owner = store.users.owner()
    ana = store.users.get("ana")
    store.close()
    env = {**os.environ, "TENSHU_HOME": str(tmp_path)}

    def learn(*args):
        return subprocess.run([sys.executable, "-m", "tenshu", "learn", *args],
                              capture_output=True, text=True, timeout=600, env=env)

    refused = learn("kto", "--max-steps", "2")  # the owner has no feedback
    assert refused.returncode == 1 and "KTO needs 32" in refused.stderr
    starved = learn("kto", "--user", "ana", "--max-steps", "2", "--adapter", "mine",
                    "--memory-gib", "0.01")  # far less than the process holds already
    assert starved.returncode == 1, starved.stderr[-2000:]
    assert "ran out of its memory budget (0.01 GiB)" in starved.stderr
    assert not (tmp_path / "adapters" / "mine" / "v1" / "adapter").exists()
    for version in ("v1", "v2"):
        run = learn("kto", "--user", "ana", "--max-steps", "2", "--adapter", "mine",
                    "--threads", "1")
        assert run.returncode == 0, run.stderr[-2000:]
        folder = tmp_path / "adapters" / "mine" / version
        assert (folder / "adapter" / "adapter_model.safetensors").exists(), run.stdout
        assert json.loads((folder / "manifest.json").read_text())["metrics"]["steps"] == 2
    assert owner.name == "owner" and ana.name == "ana"

    def adapters(*args):
        return subprocess.run([sys.executable, "-m", "tenshu", "adapters", *args],
                              capture_output=True, text=True, timeout=120, env=env)

    assert adapters("promote", "mine", "v1").stdout.strip() == "mine v1 is in service"
    assert adapters("promote", "mine").stdout.strip() == "mine v2 is in service"  # the newest
    listed = adapters("list").stdout.splitlines()
    assert [line.split()[:3] for line in listed[1:]] == [["mine", "v1", "kto"],
                                                         ["*", "mine", "v2"]]
    refused = adapters("rm", "mine", "v2")
    assert refused.returncode == 1 and "is in service" in refused.stderr
    assert adapters("rollback", "mine").stdout.strip() == "mine v1 is in service"
    assert adapters("rm", "mine", "v2").returncode == 0
    assert not (tmp_path / "adapters" / "mine" / "v2").exists()
    assert adapters("rollback", "mine").stdout.strip() == "mine: no version is in service now"
    assert adapters("promote", "mine", "v9").returncode == 1
