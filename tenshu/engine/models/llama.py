"""The Llama decoder family: Llama (2, 3, 3.1 rope scaling), Mistral, Qwen2/2.5, Qwen3.

They differ only in switches read from the checkpoint's config: biases on the q/k/v (Qwen2) or
all attention projections (`attention_bias`), an RMSNorm on each head's q and k (Qwen3), a
sliding attention window (Mistral, some Qwen layers), tied input/output embeddings, and a
`head_dim` that need not be hidden_size / num_heads. q/k/v and gate/up are fused into one
matmul each; the loader splits checkpoint tensors into them (see `stacked_params`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tenshu.engine import kernels, lora
from tenshu.engine.layers.attention import AttentionMetadata, PagedAttention
from tenshu.engine.layers.linear import Linear, linear
from tenshu.engine.layers.norm import RMSNorm
from tenshu.engine.layers.rotary import RotaryEmbedding


@dataclass(frozen=True)
class LlamaArch:
    """The switches that tell the family members apart."""

    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False


def layer_windows(config) -> list[int | None]:
    """Each layer's sliding attention window, or None for full attention."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is not None:
        return [window if t == "sliding_attention" else None for t in types]
    return [window] * config.num_hidden_layers


def _cpu_ops(x: torch.Tensor):
    """tenshu's CPU kernels where they may stand in for torch's operations on x: float32 rows on
    the CPU, no gradient wanted (they have no backward; the engine runs in inference mode)."""
    if x.dtype != torch.float32 or x.device.type != "cpu" or torch.is_grad_enabled():
        return None
    return kernels.ops()


class Attention(nn.Module):
    def __init__(self, config, arch: LlamaArch, head_dim: int, rotary: RotaryEmbedding):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = head_dim
        self.q_size = self.num_heads * head_dim
        self.kv_size = self.num_kv_heads * head_dim
        self.qkv_proj = Linear(
            config.hidden_size, self.q_size + 2 * self.kv_size, bias=arch.qkv_bias
        )
        self.o_proj = Linear(self.q_size, config.hidden_size, bias=arch.o_bias)
        if arch.qk_norm:
            self.q_norm = RMSNorm(head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(head_dim, config.rms_norm_eps)
        self.qk_norm = arch.qk_norm
        self.rotary = rotary
        self.attn = PagedAttention(self.num_heads, self.num_kv_heads, head_dim, head_dim**-0.5)

    def forward(self, rope, x, k_cache, v_cache, meta: AttentionMetadata):
        t = x.shape[0]
        qkv = self.qkv_proj(x)
        if (cpu := self._cpu_kernels(qkv)) is not None:
            # norms, rotary and the cache write in one call: the same floats as below, about
            # twenty small operations fewer a layer (docs/benchmarks.md)
            q, k = cpu.attention_inputs(
                qkv, self.q_norm.float_weight() if self.qk_norm else None,
                self.k_norm.float_weight() if self.qk_norm else None,
                self.q_norm.eps if self.qk_norm else 0.0, *rope, self.num_heads,
                self.num_kv_heads, k_cache, v_cache, meta.slot_mapping)
            v = qkv[:, self.q_size + self.kv_size:].view(t, self.num_kv_heads, self.head_dim)
            out = self.attn.attend(q, k, v, k_cache, v_cache, meta)
            return self.o_proj(out.reshape(t, self.q_size))
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(t, self.num_heads, self.head_dim)
        k = k.view(t, self.num_kv_heads, self.head_dim)
        v = v.view(t, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rotary(rope, q, k)
        out = self.attn(q, k, v, k_cache, v_cache, meta)  # [T, H, D]
        return self.o_proj(out.reshape(t, self.q_size))

    def _cpu_kernels(self, qkv: torch.Tensor):
        """The kernels for attention_inputs (benchmarks/decode_plan.py turns this off)."""
        return _cpu_ops(qkv)


class MLP(nn.Module):
    def __init__(self, config, arch: LlamaArch):
        super().__init__()
        self.intermediate = config.intermediate_size
        self.gate_up_proj = Linear(
            config.hidden_size, 2 * self.intermediate, bias=arch.mlp_bias
        )
        self.down_proj = Linear(self.intermediate, config.hidden_size, bias=arch.mlp_bias)
        if getattr(config, "hidden_act", "silu") != "silu":
            raise ValueError(f"activation {config.hidden_act!r} is not supported (only silu)")

    def forward(self, x):
        gate_up = self.gate_up_proj(x)
        if gate_up.shape[0] <= kernels.int8_max_rows() and (cpu := _cpu_ops(gate_up)) is not None:
            # the integer products' rows (a decode step's, a prompt chunk's with VNNI): one call
            # for three (decode_layers makes this same call)
            return self.down_proj(cpu.silu_mul(gate_up))
        gate, up = gate_up.split(self.intermediate, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config, arch: LlamaArch, head_dim: int, rotary: RotaryEmbedding):
        super().__init__()
        self.self_attn = Attention(config, arch, head_dim, rotary)
        self.mlp = MLP(config, arch)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, rope, x, k_cache, v_cache, meta):
        x = x + self.self_attn(rope, self.input_layernorm(x), k_cache, v_cache, meta)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, config, arch: LlamaArch, max_positions: int):
        super().__init__()
        head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )
        rotary = RotaryEmbedding(config, head_dim, max_positions)
        self.rotary = rotary
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(config, arch, head_dim, rotary) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class DecodePlan:
    """What `decode_layers` (engine/kernels) needs to run a decode step's layers in one call:
    each layer's tensors and settings, flat, in the order cpu_matmul.cpp reads them (20 tensors:
    the two norms, q_norm, k_norm, then codes, scales, mins and bias of qkv, o, gate/up and
    down; 13 settings: bits, group size and offset of each product, the sliding window)."""

    def __init__(self, weights, config, eps, scale, heads, kv_heads, max_rows: int):
        self.weights, self.config, self.eps, self.scale = weights, config, eps, scale
        self.heads, self.kv_heads = heads, kv_heads
        self.max_rows = max_rows  # bf16 weights: only steps that linear() gives bf16_matmul
        self.caches: list[torch.Tensor] = []
        self.kv_source = None

    @staticmethod
    def of(model: LlamaForCausalLM) -> DecodePlan | None:
        """The plan of a model on the CPU whose products are all QuantWeights taking int8
        activations, bf16 or float32 matrices; None otherwise (the layers' own code runs). It
        holds the model's tensors as they are now: built at the first decode step, after
        loading."""
        if kernels.ops() is None:
            return None
        weights, config, max_rows = [], [], kernels.int8_max_rows()
        for layer, window in zip(model.model.layers, model.windows, strict=True):
            attn, mlp = layer.self_attn, layer.mlp
            norms = [layer.input_layernorm, layer.post_attention_layernorm]
            if attn.qk_norm:
                norms += [attn.q_norm, attn.k_norm]
            norms = [norm.float_weight() for norm in norms]  # as RMSNorm.forward multiplies
            if any(w.device.type != "cpu" for w in norms):
                return None
            weights += norms[:2] + (norms[2:] or [None, None])
            for linear_ in (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj):
                w = linear_.weight
                if isinstance(w, torch.Tensor) and w.device.type == "cpu" and \
                        w.dtype in (torch.bfloat16, torch.float32) and w.is_contiguous():
                    weights += [w, None, None, linear_.bias]
                    config += [16 if w.dtype == torch.bfloat16 else 32, 0, 0]
                    if w.dtype == torch.bfloat16:
                        max_rows = min(max_rows, kernels.BF16_MAX_ROWS)
                elif getattr(w, "int8_activations", False):
                    weights += [*w.packed(), linear_.bias]
                    config += [w.bits, w.group_size, w.offset]
                else:
                    return None
            config.append(window or 0)
        first = model.model.layers[0]
        return DecodePlan(weights, config, first.input_layernorm.eps, first.self_attn.attn.scale,
                          first.self_attn.num_heads, first.self_attn.num_kv_heads, max_rows)

    def use_caches(self, kv_caches) -> None:
        self.caches = [cache for pair in kv_caches for cache in pair]
        self.kv_source = kv_caches


class LlamaForCausalLM(nn.Module):
    # checkpoint tensor -> (our fused parameter, which shard of it)
    stacked_params = {
        "q_proj": ("qkv_proj", 0),
        "k_proj": ("qkv_proj", 1),
        "v_proj": ("qkv_proj", 2),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, config, arch: LlamaArch, max_positions: int):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config, arch, max_positions)
        self.windows = layer_windows(config)
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        # activations' dtype; the weights may be stored narrower (see layers/linear.py)
        self.compute_dtype = torch.float32
        self.wide_output_weight: torch.Tensor | None = None
        self.plan: DecodePlan | bool | None = None  # None: not looked at yet; False: none
        if not self.tie_word_embeddings:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        for i, layer in enumerate(self.model.layers):  # what LoRA adapters may adapt
            for module, name in ((layer.self_attn.qkv_proj, "qkv_proj"),
                                 (layer.self_attn.o_proj, "o_proj"),
                                 (layer.mlp.gate_up_proj, "gate_up_proj"),
                                 (layer.mlp.down_proj, "down_proj")):
                module.lora_key = (i, name)

    @property
    def head_dim(self) -> int:
        return self.model.layers[0].self_attn.head_dim

    def forward(
        self,
        input_ids: torch.Tensor,  # [T]
        positions: torch.Tensor,  # [T]
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        metas: dict[int | None, AttentionMetadata],
    ) -> torch.Tensor:
        x = self.model.embed_tokens(input_ids).to(self.compute_dtype)  # [T, hidden]
        rope = self.model.rotary.tables(positions, x.dtype)  # once a step, for every layer
        if (plan := self._decode_plan(x, kv_caches, metas)) is not None:
            meta = next(iter(metas.values()))
            x = kernels.ops().decode_layers(
                x, plan.weights, plan.config, plan.eps, plan.scale, plan.heads, plan.kv_heads,
                *rope, plan.caches, meta.slot_mapping, meta.decode_slots, meta.decode_lens)
            return self.model.norm(x)
        for layer, window, (k_cache, v_cache) in zip(
            self.model.layers, self.windows, kv_caches, strict=True
        ):
            x = layer(rope, x, k_cache, v_cache, metas[window])
        return self.model.norm(x)

    def _decode_plan(self, x: torch.Tensor, kv_caches, metas) -> DecodePlan | None:
        """The plan when this step can run its layers in one kernel call (decode_layers): every
        row a decode read in place, few enough rows for the integer products (for bf16_matmul
        with bf16 weights), no adapters, no gradient, and a model DecodePlan.of takes."""
        if x.shape[0] > kernels.int8_max_rows() or lora.current.get() is not None or \
                _cpu_ops(x) is None:
            return None
        if any(m.prefills or m.decode_lens is None for m in metas.values()):
            return None
        if self.plan is None:
            self.plan = DecodePlan.of(self) or False
        if not self.plan or x.shape[0] > self.plan.max_rows:
            return None
        if self.plan.kv_source is not kv_caches:
            self.plan.use_caches(kv_caches)
        return self.plan

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.model.embed_tokens.weight if self.tie_word_embeddings else self.lm_head.weight
        return linear(hidden, weight, None, self.wide_output_weight)  # [N, V]

    def keep_wide_copies(self) -> None:
        """Keep compute-dtype copies of narrower matmul weights (see layers/linear.py)."""
        for module in self.modules():
            if isinstance(module, Linear) and isinstance(module.weight, torch.Tensor) and \
                    module.weight.dtype != self.compute_dtype:  # not a QuantWeight
                module.wide_weight = module.weight.to(self.compute_dtype)
        weight = self.model.embed_tokens.weight if self.tie_word_embeddings else self.lm_head.weight
        if weight.dtype != self.compute_dtype:
            self.wide_output_weight = weight.to(self.compute_dtype)
