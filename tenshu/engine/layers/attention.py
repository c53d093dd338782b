"""Attention over the paged KV cache.

Every layer first writes the step's new keys and values into their cache slots, then attends:
- prefill chunks, one sequence at a time: queries against the sequence's whole context (cached
  blocks plus the chunk), causal with the chunk's offset; a chunk with no cached context uses
  the fresh keys directly;
- decodes, all at once: one query per sequence against its blocks. On a CPU with tenshu's
  kernels (engine/kernels) they are read where they lie in the cache; elsewhere they are
  gathered and padded to the longest context in the batch.
Prefills, and gathered decodes, use torch's scaled_dot_product_attention (a fused kernel on CPU
and CUDA), with GQA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tenshu.engine import kernels


@dataclass
class PrefillChunk:
    start: int  # first row of the chunk in the flat batch
    num_tokens: int
    context_len: int  # tokens in the sequence once this chunk is computed
    slots: torch.Tensor | None  # [context_len] cache slots, None when there is no cached context
    mask: torch.Tensor | None  # [num_tokens, context_len] bool, None for plain causal


@dataclass
class AttentionMetadata:
    """What the attention layers need for one step; built once per step by the model runner."""

    slot_mapping: torch.Tensor  # [T] where each new token's K/V goes
    prefills: list[PrefillChunk]
    decode_rows: torch.Tensor | None  # [B] rows of the flat batch that are decodes
    decode_slots: torch.Tensor | None  # [B, L] context slots, padded
    decode_mask: torch.Tensor | None  # [B, 1, 1, L] bool, False on padding
    # [2, N, KVH, D] reused buffer for gathered keys and values: gathering into fresh memory
    # every layer costs more in page faults than the copy itself
    workspace: torch.Tensor | None = None
    # [B] context lengths when decodes are read in place by the CPU kernel (None: gathered)
    decode_lens: torch.Tensor | None = None
    window: int | None = None  # the sliding window these metadata mask with


def causal_mask(
    num_tokens: int, context_len: int, sliding_window: int | None, device: torch.device
) -> torch.Tensor | None:
    """[num_tokens, context_len] mask for a chunk whose first query sits at
    context_len - num_tokens; None when plain top-left causal attention is equivalent."""
    if num_tokens == context_len and sliding_window is None:
        return None
    q_pos = torch.arange(context_len - num_tokens, context_len, device=device)[:, None]
    k_pos = torch.arange(context_len, device=device)[None, :]
    mask = k_pos <= q_pos
    if sliding_window is not None:
        mask &= k_pos > q_pos - sliding_window
    return mask


class PagedAttention:
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float):
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = scale

    def __call__(
        self,
        q: torch.Tensor,  # [T, H, D]
        k: torch.Tensor,  # [T, KVH, D]
        v: torch.Tensor,  # [T, KVH, D]
        k_cache: torch.Tensor,  # [num_slots, KVH, D]
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        k_cache.index_copy_(0, meta.slot_mapping, k.to(k_cache.dtype))  # rounded where the
        v_cache.index_copy_(0, meta.slot_mapping, v.to(v_cache.dtype))  # cache is narrower
        return self.attend(q, k, v, k_cache, v_cache, meta)

    def attend(self, q, k, v, k_cache, v_cache, meta: AttentionMetadata) -> torch.Tensor:
        """Attention once the step's keys and values are in the caches (as __call__ writes
        them, or the CPU kernel attention_inputs): [T, H, D]."""
        if not meta.prefills and meta.decode_lens is not None:  # decodes only: rows 0..B-1
            return kernels.ops().paged_decode(q, k_cache, v_cache, meta.decode_slots,
                                              meta.decode_lens, self.scale, meta.window or 0)
        out = torch.empty_like(q)
        for chunk in meta.prefills:
            rows = slice(chunk.start, chunk.start + chunk.num_tokens)
            if chunk.slots is None:
                keys, values = k[rows], v[rows]
            else:
                keys, values = self._gather(k_cache, v_cache, chunk.slots, meta.workspace)
            out[rows] = self._attend(
                q[rows].transpose(0, 1).unsqueeze(0),  # [1, H, t, D]
                keys.transpose(0, 1).unsqueeze(0),  # [1, KVH, c, D]
                values.transpose(0, 1).unsqueeze(0),
                chunk.mask,
                causal=chunk.mask is None,
            )[0].transpose(0, 1)
        if meta.decode_lens is not None:
            out[meta.decode_rows] = kernels.ops().paged_decode(
                q[meta.decode_rows], k_cache, v_cache, meta.decode_slots, meta.decode_lens,
                self.scale, meta.window or 0)
        elif meta.decode_rows is not None:
            b, length = meta.decode_slots.shape
            keys, values = self._gather(
                k_cache, v_cache, meta.decode_slots.reshape(-1), meta.workspace
            )
            keys = keys.view(b, length, self.num_kv_heads, self.head_dim)
            values = values.view(b, length, self.num_kv_heads, self.head_dim)
            out[meta.decode_rows] = self._attend(
                q[meta.decode_rows].unsqueeze(2),  # [B, H, 1, D]
                keys.transpose(1, 2),  # [B, KVH, L, D]
                values.transpose(1, 2),
                meta.decode_mask,
                causal=False,
            ).squeeze(2)
        return out  # [T, H, D]

    @staticmethod
    def _gather(k_cache, v_cache, slots, workspace) -> tuple[torch.Tensor, torch.Tensor]:
        n = slots.numel()
        keys = torch.index_select(k_cache, 0, slots, out=workspace[0, :n])
        values = torch.index_select(v_cache, 0, slots, out=workspace[1, :n])
        return keys, values

    def _attend(self, q, k, v, mask, causal: bool) -> torch.Tensor:
        return F.scaled_dot_product_attention(  # keys from a narrower cache are widened
            q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask, is_causal=causal, scale=self.scale,
            enable_gqa=self.num_heads != self.num_kv_heads,
        )
