"""Rotary position embeddings with a precomputed cos/sin table indexed by absolute position.

The inverse frequencies (and their scaling: linear, llama3, yarn, longrope) are computed by
transformers' own rope functions from the checkpoint's config, so every scaling scheme the
reference implementation knows is reproduced exactly; dynamic NTK, which changes with the
sequence length, is not supported.
"""

import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from tenshu.core.errors import UnsupportedModelError


def _default_inv_freq(config, head_dim: int) -> tuple[torch.Tensor, float]:
    base = config.rope_parameters["rope_theta"]
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim)), 1.0


class RotaryEmbedding:
    """Shared by all layers of a model; a plain object so its tables survive `to_empty`."""

    def __init__(self, config, head_dim: int, max_positions: int):
        rope = config.rope_parameters or {}
        rope_type = rope.get("rope_type", "default")
        if rope.get("partial_rotary_factor", 1.0) != 1.0:
            raise UnsupportedModelError("partial rotary embeddings are not supported")
        if rope_type != "default" and (rope_type not in ROPE_INIT_FUNCTIONS or rope_type == "dynamic"):
            raise UnsupportedModelError(f"rope scaling type {rope_type!r} is not supported")
        with torch.device("cpu"):  # real tables even while the model is built on "meta"
            if rope_type == "default":
                inv_freq, scaling = _default_inv_freq(config, head_dim)
            else:
                inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
        self.inv_freq, self.scaling, self.max_positions = inv_freq, scaling, max_positions
        self._tables()

    def _tables(self) -> None:
        with torch.device("cpu"):
            positions = torch.arange(self.max_positions, dtype=torch.float)
            freqs = positions[:, None] * self.inv_freq[None, :]  # [P, D/2]
            emb = torch.cat((freqs, freqs), dim=-1)  # [P, D]
            self.cos = emb.cos() * self.scaling
            # sin with its first half negated: rotate_half(x) * sin, which negates x's second
            # half, equals swap_halves(x) * signed_sin bit for bit (a product's sign is
            # symmetric), one op fewer per tensor
            half = freqs.shape[-1]
            sin = emb.sin() * self.scaling
            self.signed_sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)

    def scale_frequencies(self, factors: torch.Tensor) -> None:
        """Divide each inverse frequency by its factor: how a GGUF file stores llama3 rope
        scaling (its `rope_freqs` tensor). Call before `to(device)`."""
        if factors.shape != self.inv_freq.shape:
            raise UnsupportedModelError(f"rope_freqs has {factors.numel()} factors for "
                                        f"{self.inv_freq.numel()} frequencies")
        self.inv_freq = self.inv_freq / factors.cpu()
        self._tables()

    def to(self, device: torch.device) -> None:
        self.cos, self.signed_sin = self.cos.to(device), self.signed_sin.to(device)

    def tables(self, positions: torch.Tensor, dtype: torch.dtype
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin [T, 1, D] at `positions`, in the activations' dtype: looked up
        once a step, shared by every layer."""
        return (self.cos[positions].unsqueeze(1).to(dtype),
                self.signed_sin[positions].unsqueeze(1).to(dtype))

    def __call__(self, tables: tuple[torch.Tensor, torch.Tensor], q: torch.Tensor,
                 k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # q [T, H, D], k [T, KVH, D]: x * cos + rotate_half(x) * sin, as the reference does
        cos, sin = tables
        return q * cos + _swap_halves(q) * sin, k * cos + _swap_halves(k) * sin


def _swap_halves(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((x[..., half:], x[..., :half]), dim=-1)
