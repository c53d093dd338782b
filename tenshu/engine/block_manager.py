"""Paged KV-cache blocks: allocation, hashed-prefix sharing, reference counts, LRU eviction.

A block holds `block_size` consecutive tokens of one or more sequences. A block becomes
cacheable when it is full and its K/V have been computed: it is then keyed by a hash chained
over every token from the start of the sequence, so equal keys mean equal prefixes. Blocks are
reference counted; a block nobody references is free, but keeps its cached content (and can be
revived by a hit) until it is the least recently freed block and a new allocation needs it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from tenshu.engine.sequence import Sequence


def chain_hash(parent: bytes, token_ids: list[int]) -> bytes:
    # A cryptographic hash: a collision would hand one user's cached K/V to another prompt.
    return hashlib.sha256(parent + np.asarray(token_ids, dtype=np.int64).tobytes()).digest()


class Block:
    __slots__ = ("block_id", "ref_count", "hash")

    def __init__(self, block_id: int):
        self.block_id = block_id
        self.ref_count = 0
        self.hash: bytes | None = None


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # free blocks, least recently freed first; the front is evicted first
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.cached: dict[bytes, int] = {}  # prefix hash -> block id
        self.num_cached_hits = 0  # tokens served from the prefix cache (for metrics)
        self.num_cached_queries = 0  # prompt tokens looked up in it

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # -- the prefix cache ---------------------------------------------------------------------

    def match_prefix(self, seq: Sequence) -> list[int]:
        """Blocks already holding a prefix of `seq`. The last token is never matched, so the
        step that admits the sequence always computes at least one token and gets its logits.
        A sequence that wants its prompt's logprobs matches nothing: it needs every logit."""
        if not self.enable_prefix_caching or seq.params.prompt_logprobs is not None:
            return []
        hashes, parent = [], seq.cache_salt
        bs = self.block_size
        for i in range((seq.num_tokens - 1) // bs):
            parent = chain_hash(parent, seq.token_ids[i * bs : (i + 1) * bs])
            block_id = self.cached.get(parent)
            if block_id is None:
                break
            hashes.append(block_id)
        return hashes

    def cache_computed_blocks(self, seq: Sequence) -> None:
        """Register the blocks that became full and computed in the last step."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        full = seq.num_computed_tokens // bs
        for i in range(len(seq.block_hashes), full):
            parent = seq.block_hashes[-1] if seq.block_hashes else seq.cache_salt
            h = chain_hash(parent, seq.token_ids[i * bs : (i + 1) * bs])
            seq.block_hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if block.hash is None and h not in self.cached:
                block.hash = h
                self.cached[h] = block.block_id

    # -- allocation ---------------------------------------------------------------------------

    def can_allocate(self, seq: Sequence, num_new_tokens: int, prefix: list[int] = ()) -> bool:
        """Whether `seq` can hold `num_new_tokens` more tokens, after taking `prefix` blocks."""
        prefix_free = sum(1 for b in prefix if self.blocks[b].ref_count == 0)
        have = len(seq.block_table) + len(prefix)
        need = self.blocks_needed(seq.num_computed_tokens + len(prefix) * self.block_size
                                  + num_new_tokens) - have
        return need + prefix_free <= self.num_free_blocks

    def take_prefix(self, seq: Sequence, prefix: list[int]) -> None:
        """Share the cached blocks of `prefix` with a sequence that holds no blocks yet."""
        assert not seq.block_table and seq.num_computed_tokens == 0
        self.num_cached_queries += seq.num_tokens
        for block_id in prefix:
            self._ref(block_id)
            seq.block_table.append(block_id)
            seq.block_hashes.append(self.blocks[block_id].hash)
        seq.num_computed_tokens = len(prefix) * self.block_size
        seq.num_cached_tokens = max(seq.num_cached_tokens, seq.num_computed_tokens)
        self.num_cached_hits += seq.num_computed_tokens

    def allocate(self, seq: Sequence, num_new_tokens: int) -> None:
        """Grow the block table to hold `num_new_tokens` more tokens; check can_allocate first."""
        need = self.blocks_needed(seq.num_computed_tokens + num_new_tokens) - len(seq.block_table)
        for _ in range(need):
            block_id, _ = self.free.popitem(last=False)
            block = self.blocks[block_id]
            if block.hash is not None:  # evict its cached content
                del self.cached[block.hash]
                block.hash = None
            block.ref_count = 1
            seq.block_table.append(block_id)

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Give `child` (same prompt) the parent's full prompt blocks, except the one holding
        the last prompt token: the child recomputes that one to get its own first logits."""
        shared = (parent.num_prompt_tokens - 1) // self.block_size
        for block_id in parent.block_table[:shared]:
            self._ref(block_id)
        child.block_table = parent.block_table[:shared]
        child.block_hashes = parent.block_hashes[:shared]
        child.num_computed_tokens = shared * self.block_size

    def free_seq(self, seq: Sequence) -> None:
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
                if block.hash is None:  # nothing worth keeping: reuse it first
                    self.free.move_to_end(block_id, last=False)
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    def _ref(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free[block_id]
        block.ref_count += 1
