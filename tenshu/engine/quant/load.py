"""Loading a safetensors checkpoint into QuantWeights: what the loader (engine/loader.py) hands
the tensors of the quantized Linear weights to, while it copies every other tensor into the
model's float parameters.

A `QuantLoad` names its targets (the model's fused parameters that become QuantWeights, such as
`model.layers.0.self_attn.qkv_proj.weight`) before any memory is allocated: their float
parameters are dropped from the model, so the float weights are never resident beside the
quantized ones. Each checkpoint tensor of a target is then turned into a QuantWeight part as it
is read (`add`), and `install` concatenates the fused parts (q/k/v, gate/up) and puts the
QuantWeights in place of the Linears' weights. Three kinds: quantize.py (float checkpoint,
quantized on load), cache.py (those QuantWeights read back from the cache), gptq.py (GPTQ and
AWQ checkpoints, converted exactly).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tenshu.core.errors import ModelLoadError
from tenshu.engine.layers.linear import Linear
from tenshu.engine.quant.weight import QuantEmbedding, QuantWeight


def drop_weight(model: nn.Module, target: str) -> None:
    """Remove a float parameter that a QuantWeight will replace, before memory is allocated."""
    module = model.get_submodule(target.rsplit(".", 1)[0])
    if target.rsplit(".", 1)[1] != "weight" or not isinstance(module, Linear | nn.Embedding):
        raise ModelLoadError(f"{target}: a quantized tensor where the engine needs floats")
    del module.weight


def install_weight(model: nn.Module, target: str, weight: QuantWeight, shape) -> None:
    if weight.shape != shape:
        raise ModelLoadError(f"{target}: quantized shape {tuple(weight.shape)} does not fit "
                             f"{tuple(shape)}")
    module_name = target.rsplit(".", 1)[0]
    if module_name == "model.embed_tokens":
        model.model.embed_tokens = QuantEmbedding(weight)
    else:
        model.get_submodule(module_name).weight = weight


def decoder_linears(model: nn.Module) -> list[str]:
    """The weights quantization on load applies to: every Linear of the decoder layers
    (q/k/v, o, gate/up, down). The embeddings and the lm_head stay float."""
    return [f"{name}.weight" for name, module in model.named_modules()
            if isinstance(module, Linear) and name.startswith("model.layers.")]


def fused_shards(model: nn.Module, target: str) -> set[int | None]:
    """The checkpoint tensors a target is made of: q/k/v are three shards, gate/up two."""
    module = target.split(".")[-2]
    shards = {s for fused, s in model.stacked_params.values() if fused == module}
    return shards or {None}


class QuantLoad:
    """Receives the checkpoint tensors of the quantized targets (see the module docstring)."""

    def __init__(self, model: nn.Module, targets: list[str]):
        self.shapes = {t: model.get_parameter(t).shape for t in targets}
        self.shards = {t: fused_shards(model, t) for t in targets}
        self.parts: dict[str, dict[int | None, QuantWeight]] = {}
        for target in targets:
            drop_weight(model, target)

    @property
    def targets(self) -> list[str]:
        return list(self.shapes)

    def claims(self, name: str, target: str) -> bool:
        """Whether checkpoint tensor `name` (the model's `target` once fused) is ours."""
        return f"{target.rsplit('.', 1)[0]}.weight" in self.shapes

    def add(self, name: str, target: str, shard: int | None,
            read: Callable[[], torch.Tensor]) -> None:
        """One claimed tensor; `read()` reads it from the file (not called if not needed)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Called once every file is read, before the parts are concatenated."""

    def install(self, model: nn.Module, device: torch.device) -> dict[str, QuantWeight]:
        """Concatenate each target's parts and install them; returns {target: QuantWeight}."""
        self.finish()
        installed = {}
        for target in self.targets:
            parts = self.parts.pop(target, {})
            missing = self.shards[target] - set(parts)
            if missing:
                raise ModelLoadError(f"checkpoint is missing weights: {target} (shard "
                                     f"{', '.join(str(s) for s in sorted(missing, key=str))})")
            order = sorted(parts, key=lambda s: s or 0)
            weight = QuantWeight.cat([parts.pop(s) for s in order]).to(device)
            install_weight(model, target, weight, self.shapes[target])
            installed[target] = weight
        return installed
