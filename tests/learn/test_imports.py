"""Adapters trained elsewhere, imported with `tenshu adapters import`: a PEFT folder as it is, an
mlx-lm one converted (the same adapter saved as mlx-lm saves it answers exactly as the PEFT
original does, in the engine and in peft); what cannot be imported is refused with nothing
left in the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from tenshu import LLM, LoRARequest, SamplingParams
from tenshu.learn.imports import import_adapter
from tenshu.learn.registry import Registry
from tests.engine.test_lora import make_adapter, peft_greedy


def as_mlx(peft_dir, out, *, kind: str = "lora"):
    """The PEFT adapter in `peft_dir` as mlx-lm writes one: lora_a [in, r] and lora_b [r, out]
    per layer, the scale in adapter_config.json."""
    config = json.loads((peft_dir / "adapter_config.json").read_text())
    rank, scale = config["r"], config["lora_alpha"] / config["r"]
    tensors = {}
    for key, tensor in load_file(peft_dir / "adapter_model.safetensors").items():
        module = key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
        which = "a" if ".lora_A." in key else "b"
        tensors[f"{module}.lora_{which}"] = tensor.T.contiguous()
    out.mkdir()
    save_file(tensors, out / "adapters.safetensors")
    (out / "adapter_config.json").write_text(json.dumps({
        "fine_tune_type": kind, "num_layers": 2, "model": "some/model",
        "lora_parameters": {"rank": rank, "scale": scale, "dropout": 0.0}}))
    return out


@pytest.fixture(scope="module")
def adapters(checkpoint, tmp_path_factory):
    base = checkpoint("qwen3")
    root = tmp_path_factory.mktemp("imports")
    peft = make_adapter(base, root / "peft", seed=7)
    return {"base": base, "peft": peft, "mlx": as_mlx(peft, root / "mlx"), "root": root}


def test_an_mlx_adapter_imported_answers_exactly_as_its_peft_original(adapters, tmp_path):
    registry = Registry(tmp_path / "adapters")
    env = {**os.environ, "TENSHU_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "tenshu", "adapters", "import", "mine",
                           str(adapters["mlx"]), "--base", str(adapters["base"]), "--promote"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "imported mlx-lm adapter as mine v1" in done.stdout
    version = registry.get("mine")
    assert version.version == "v1" and version.manifest["format"] == "mlx-lm"
    imported = version.adapter
    original = load_file(adapters["peft"] / "adapter_model.safetensors")
    converted = load_file(imported / "adapter_model.safetensors")
    assert original.keys() == converted.keys()
    assert all(torch.equal(original[k], converted[k]) for k in original)

    prompt = [5, 17, 42, 8, 99, 3]
    assert peft_greedy(adapters["base"], imported, prompt) == \
        peft_greedy(adapters["base"], adapters["peft"], prompt)
    llm = LLM(str(adapters["base"]), enable_lora=True, max_loras=2)
    params = SamplingParams(temperature=0, max_tokens=10)
    answers = [llm.generate([{"prompt_token_ids": prompt}], params,
                            lora_request=LoRARequest(n, i, str(path)))[0].outputs[0].token_ids
               for i, (n, path) in enumerate([("a", adapters["peft"]), ("b", imported)], 1)]
    assert answers[0] == answers[1]


def test_a_peft_folder_is_kept_as_it_is(adapters, tmp_path):
    registry = Registry(tmp_path / "adapters")
    version = import_adapter(registry, "theirs", adapters["peft"])
    assert version.manifest["format"] == "peft"
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (version.adapter / name).read_bytes() == (adapters["peft"] / name).read_bytes()


def test_what_cannot_be_imported_is_refused_and_leaves_nothing(adapters, tmp_path):
    registry = Registry(tmp_path / "adapters")
    dora = as_mlx(adapters["peft"], adapters["root"] / "dora", kind="dora")
    for source, says in ((dora, "a dora adapter of mlx-lm"),
                         (tmp_path, "neither a PEFT adapter")):
        with pytest.raises(ValueError, match=says):
            import_adapter(registry, "mine", source)
    assert registry.versions("mine") == []
