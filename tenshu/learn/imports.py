"""Adapters trained elsewhere, into the registry: a PEFT LoRA folder as it is, or an mlx-lm one
converted to PEFT's format, so every version in the registry is one the engine and peft read.

mlx-lm keeps, per adapted linear layer, `lora_a` [in, r] and `lora_b` [r, out] and adds
scale * (x @ lora_a) @ lora_b; PEFT keeps `lora_A.weight` [r, in] and `lora_B.weight` [out, r]
and adds (lora_alpha / r) * x A^T B^T. So A and B are the transposes, and lora_alpha is
scale * r: the same product, exactly (the conversion only moves numbers).
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from tenshu.learn.registry import Registry, Version

_MLX_KEY = re.compile(r"(.+)\.lora_([ab])")
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


def kind_of(folder: Path) -> str:
    """"peft" or "mlx-lm" (ValueError for anything else)."""
    if all((folder / name).is_file() for name in PEFT_FILES):
        return "peft"
    if (folder / "adapters.safetensors").is_file() and (folder / "adapter_config.json").is_file():
        return "mlx-lm"
    raise ValueError(f"{folder} is neither a PEFT adapter (adapter_config.json and "
                     "adapter_model.safetensors) nor an mlx-lm one (adapter_config.json and "
                     "adapters.safetensors)")


def import_adapter(registry: Registry, name: str, source: Path, *, base: str = "") -> Version:
    """A new version of `name` holding the adapter in `source` (PEFT or mlx-lm), with a
    manifest saying where it came from. Nothing is left behind when it cannot be read."""
    source = Path(source).expanduser()
    kind = kind_of(source)
    out = registry.next_version(name)
    try:
        if kind == "peft":
            (out / "adapter").mkdir(parents=True)
            for file in PEFT_FILES:
                shutil.copy2(source / file, out / "adapter" / file)
            config = json.loads((source / "adapter_config.json").read_text(encoding="utf-8"))
            base = base or config.get("base_model_name_or_path") or ""
        else:
            mlx_to_peft(source, out / "adapter", base=base)
        manifest = {"method": "import", "format": kind, "source": str(source.resolve()),
                    "base": base, "imported": datetime.now(UTC).isoformat(timespec="seconds"),
                    "verdict": None}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n",
                                           encoding="utf-8")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return registry.get(name, out.name)


def mlx_to_peft(source: Path, out: Path, *, base: str = "") -> None:
    """Write mlx-lm's adapter in `source` as a PEFT LoRA adapter in `out`."""
    from safetensors.torch import load_file, save_file

    config = json.loads((source / "adapter_config.json").read_text(encoding="utf-8"))
    kind = config.get("fine_tune_type", "lora")
    if kind != "lora":
        raise ValueError(f"{source}: a {kind} adapter of mlx-lm; only LoRA can be imported")
    params = config.get("lora_parameters") or {}
    rank, scale = params.get("rank"), params.get("scale")
    if not isinstance(rank, int) or rank < 1 or not isinstance(scale, int | float):
        raise ValueError(f"{source}: adapter_config.json has no lora_parameters rank and scale")
    tensors = load_file(str(source / "adapters.safetensors"))
    converted, targets = {}, set()
    for key, tensor in tensors.items():
        found = _MLX_KEY.fullmatch(key)
        if found is None or tensor.dim() != 2:
            raise ValueError(f"{source}: {key} is not a LoRA matrix of a linear layer (only "
                             "those can be imported: no embeddings, no mixtures of experts)")
        module, which = found.groups()
        want = tensor.shape[1] if which == "a" else tensor.shape[0]
        if want != rank:
            raise ValueError(f"{source}: {key} has shape {tuple(tensor.shape)}, not rank {rank}")
        peft = "lora_A" if which == "a" else "lora_B"
        converted[f"base_model.model.{module}.{peft}.weight"] = tensor.T.contiguous()
        targets.add(module.rsplit(".", 1)[-1])
    if not converted:
        raise ValueError(f"{source}: adapters.safetensors holds no LoRA matrices")
    out.mkdir(parents=True)
    save_file(converted, str(out / "adapter_model.safetensors"))
    peft_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": scale * rank,
        "lora_dropout": float(params.get("dropout", 0.0)), "target_modules": sorted(targets),
        "bias": "none", "use_rslora": False, "use_dora": False, "fan_in_fan_out": False,
        "inference_mode": True, "base_model_name_or_path": base or config.get("model", ""),
    }
    (out / "adapter_config.json").write_text(json.dumps(peft_config, indent=2) + "\n",
                                             encoding="utf-8")
