"""Model families by architecture name, as written in a checkpoint's config.json."""

from __future__ import annotations

from tenshu.core.errors import UnsupportedModelError
from tenshu.engine.models.llama import LlamaArch, LlamaForCausalLM


def _arch(config) -> LlamaArch:
    model_type = getattr(config, "model_type", "")
    if model_type == "qwen2":
        return LlamaArch(qkv_bias=True)
    if model_type == "qwen3":
        bias = bool(getattr(config, "attention_bias", False))
        return LlamaArch(qkv_bias=bias, o_bias=bias, qk_norm=True)
    bias = bool(getattr(config, "attention_bias", False))
    return LlamaArch(
        qkv_bias=bias, o_bias=bias, mlp_bias=bool(getattr(config, "mlp_bias", False))
    )


MODEL_REGISTRY = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": LlamaForCausalLM,
    "Qwen3ForCausalLM": LlamaForCausalLM,
}


def build_model(config, max_positions: int) -> LlamaForCausalLM:
    archs = getattr(config, "architectures", None) or []
    for name in archs:
        if name in MODEL_REGISTRY:
            return MODEL_REGISTRY[name](config, _arch(config), max_positions)
    raise UnsupportedModelError(
        f"architecture {', '.join(archs) or '(none given)'} is not supported; "
        f"supported: {', '.join(sorted(MODEL_REGISTRY))}"
    )


__all__ = ["MODEL_REGISTRY", "build_model"]
