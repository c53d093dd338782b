"""`tenshu train tiny` end to end on a shortened recipe (seconds): it learns, its checkpoint loads
in transformers and in tenshu with the same greedy output, and interrupted runs resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tenshu import LLM, SamplingParams
from tenshu.learn.tiny import TinyRecipe, train_tiny

SHORT = dict(size="micro", conversations=300, steps=30, checkpoint_every=5, eval_every=10)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "run"
    results = train_tiny(out, TinyRecipe(**SHORT), progress=False, log=lambda _: None)
    return out, results


def test_loss_goes_down(trained):
    _, results = trained
    first = [loss for _, loss in results["train_loss"][:3]]
    last = [loss for _, loss in results["train_loss"][-3:]]
    assert sum(last) / 3 < sum(first) / 3 - 1.0
    # ln(512) = 6.24 nats is a uniform guess over the micro vocabulary
    assert results["heldout_loss"] < 5.0
    curve = [loss for _, loss in results["heldout_curve"]]
    assert curve[-1] < curve[0]


def test_writes_a_standard_checkpoint_a_loss_curve_and_a_model_card(trained):
    out, results = trained
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["dtype"] == "bfloat16"
    weights = load_file(out / "model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in weights.values())
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tok_config["chat_template"]
    gen = json.loads((out / "generation_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert gen["eos_token_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (out / "README.md").read_text()
    assert "not** a capable assistant" in card and f"{results['heldout_loss']:.4f}" in card
    evals = json.loads((out / "eval.json").read_text())
    assert [e["temperature"] for e in evals] == [0.0, 0.7]
    assert evals[0]["replies"] == sum(len(t["checks"]) for t in evals[0]["transcripts"])
    marker = json.loads((out / "tenshu-train.json").read_text())
    assert marker["status"] == "done" and marker["results"]["steps"] == SHORT["steps"]


def test_transformers_and_tenshu_agree_on_greedy_output(trained):
    out, _ = trained
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    # float32 on both sides: on a CPU with native bf16, `auto` would compute in bf16, whose
    # rounding (0.4%) is not transformers' float32
    llm = LLM(str(out), kv_cache_memory_gib=0.1, dtype="float32")
    conversations = [
        [{"role": "user", "content": "hello mochi"}],
        [{"role": "user", "content": "what do you eat?"},
         {"role": "assistant", "content": "fish, mostly. mrrp."},
         {"role": "user", "content": "tell me more"}],
    ]
    for messages in conversations:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt = tokenizer(ids, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            expected = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                                      attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                      output_logits=True, return_dict_in_generate=True)
        got = llm.chat(messages, SamplingParams(temperature=0, max_tokens=24))[0]
        assert list(got.prompt_token_ids) == prompt
        assert_greedy_agrees(list(got.outputs[0].token_ids),
                             expected.sequences[0, len(prompt):].tolist(), expected.logits)


def assert_greedy_agrees(got: list[int], expected: list[int], logits) -> None:
    """Token for token, up to a step where transformers' own top two logits are tied within
    float32 noise (a briefly trained model has such ties; the same weights summed in another
    order may pick either). After such a step the two continue from different tokens."""
    for step, (a, b) in enumerate(zip(got, expected, strict=False)):
        if a == b:
            continue
        top = logits[step][0].float().topk(2)
        gap = (top.values[0] - top.values[1]).item()
        assert a == top.indices[1].item() and gap <= 1e-4 * max(1.0, top.values[0].abs().item()), \
            f"step {step}: tenshu chose {a}, transformers {b} by a margin of {gap:.2e}"
        return
    assert len(got) == len(expected)


def test_a_directory_that_is_not_a_run_is_refused_and_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a tenshu training run"):
        train_tiny(tmp_path, TinyRecipe(**SHORT), progress=False, log=lambda _: None)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    result = tenshu("train", "tiny", "--out", str(tmp_path), "--size", "micro")
    assert result.returncode == 1 and "not a tenshu training run" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_earlier_run_needs_resume_or_overwrite(trained, tmp_path):
    out, _ = trained
    with pytest.raises(FileExistsError, match="--resume to continue it or --overwrite"):
        train_tiny(out, TinyRecipe(**SHORT), progress=False, log=lambda _: None)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_tiny(tmp_path / "new", TinyRecipe(**SHORT), resume=True, log=lambda _: None)


def tenshu(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tenshu", *args], capture_output=True,
                          text=True, timeout=300, **kwargs)


def start_training(out, steps=40) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tenshu", "train", "tiny", "--out", str(out), "--size", "micro",
         "--conversations", "300", "--steps", str(steps), "--checkpoint-every", "2", "--no-eval"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_checkpoint(proc: subprocess.Popen, out) -> None:
    deadline = time.monotonic() + 240
    while not (out / "checkpoint" / "state.pt").exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


def steps_logged(out) -> list[int]:
    marker = json.loads((out / "tenshu-train.json").read_text())
    return [step for step, _ in marker["results"]["train_loss"]]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run that each interrupted one is compared with, made once."""
    out = tmp_path_factory.mktemp("straight") / "run"
    done = tenshu("train", "tiny", "--out", str(out), "--size", "micro", "--conversations",
                  "300", "--steps", "40", "--checkpoint-every", "2", "--no-eval")
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, sig, straight):
    out = tmp_path / "run"
    proc = start_training(out)
    wait_for_checkpoint(proc, out)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, stderr
        assert "interrupted at step" in stderr and "--resume" in stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists()  # no model file until it is complete
    saved = torch.load(out / "checkpoint" / "state.pt", weights_only=True)["state"]["step"]
    assert 0 < saved < 40

    resumed = tenshu("train", "tiny", "--out", str(out), "--resume", "--no-eval")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from step {saved}/40" in resumed.stderr
    assert steps_logged(out) == list(range(1, 41))  # each step once: continued, not restarted

    # Same batches, same optimizer state: the uninterrupted run's weights. (Bitwise on an idle
    # machine; a few CPU kernels accumulate in thread order, so allow float32 noise. A resume
    # that lost the optimizer state or replayed batches would be further off.)
    a, b = (torch.load(d / "checkpoint" / "state.pt", weights_only=True)["model"]
            for d in (out, straight))
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
