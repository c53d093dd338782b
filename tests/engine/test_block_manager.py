"""Block accounting: allocation, prefix sharing by content, reference counts, LRU eviction."""

from __future__ import annotations

from tenshu.engine.block_manager import BlockManager
from tenshu.engine.sampling import SamplingParams
from tenshu.engine.sequence import Sequence


def seq(tokens: list[int]) -> Sequence:
    return Sequence("r", 0, tokens, SamplingParams(), 16, None)


def admit(bm: BlockManager, s: Sequence) -> None:
    """What the scheduler does: take the cached prefix, allocate the rest, compute it."""
    prefix = bm.match_prefix(s)
    n = s.num_tokens - len(prefix) * bm.block_size
    assert bm.can_allocate(s, n, prefix)
    bm.take_prefix(s, prefix)
    bm.allocate(s, n)
    s.num_computed_tokens += n
    bm.cache_computed_blocks(s)


def test_a_shared_prefix_is_found_by_content_and_reference_counted():
    bm = BlockManager(num_blocks=10, block_size=4)
    a = seq(list(range(10)))  # two full blocks and a partial one
    admit(bm, a)
    assert bm.num_free_blocks == 7
    b = seq(list(range(8)) + [99, 98, 97])
    admit(bm, b)
    assert b.num_cached_tokens == 8
    assert b.block_table[:2] == a.block_table[:2]
    assert all(bm.blocks[i].ref_count == 2 for i in a.block_table[:2])
    assert bm.num_free_blocks == 6
    bm.free_seq(a)
    bm.free_seq(b)
    assert bm.num_free_blocks == 10


def test_a_different_earlier_block_breaks_the_chain():
    bm = BlockManager(num_blocks=10, block_size=4)
    admit(bm, seq([1, 2, 3, 4, 5, 6, 7, 8, 9]))
    other = seq([0, 2, 3, 4, 5, 6, 7, 8, 9])  # same second block, different first block
    assert bm.match_prefix(other) == []


def test_the_last_token_is_always_computed():
    bm = BlockManager(num_blocks=10, block_size=4)
    admit(bm, seq(list(range(8))))
    again = seq(list(range(8)))
    assert len(bm.match_prefix(again)) == 1  # the block holding the last token is recomputed


def test_freed_cached_blocks_are_revived_then_evicted_least_recently_used_first():
    bm = BlockManager(num_blocks=4, block_size=2)
    older, newer = seq([1, 2, 3]), seq([5, 6, 7])
    admit(bm, older)
    bm.free_seq(older)
    admit(bm, newer)
    bm.free_seq(newer)
    assert bm.num_free_blocks == 4  # free, yet both full blocks are still cached
    assert len(bm.match_prefix(seq([1, 2, 0]))) == 1
    assert len(bm.match_prefix(seq([5, 6, 0]))) == 1
    # three new blocks: the two uncached ones go first, then the least recently freed
    admit(bm, seq([9, 8, 7, 6, 5]))
    assert bm.match_prefix(seq([1, 2, 0])) == []
    assert len(bm.match_prefix(seq([5, 6, 0]))) == 1


def test_can_allocate_counts_free_cached_blocks_it_would_take():
    bm = BlockManager(num_blocks=3, block_size=2)
    first = seq([1, 2, 3, 4, 5])
    admit(bm, first)
    bm.free_seq(first)
    again = seq([1, 2, 3, 4, 5, 6, 7])
    prefix = bm.match_prefix(again)
    assert len(prefix) == 2
    # 2 cached free blocks are taken and 2 more needed for 3 remaining tokens: 4 > 3
    assert not bm.can_allocate(again, 3, prefix)
    assert bm.can_allocate(again, 2, prefix)


def test_fork_shares_the_prompt_blocks_except_the_last_token_block():
    bm = BlockManager(num_blocks=8, block_size=4)
    parent = seq(list(range(10)))
    admit(bm, parent)
    child = seq(list(range(10)))
    bm.fork(parent, child)
    assert child.block_table == parent.block_table[:2]
    assert child.num_computed_tokens == 8
    assert [bm.blocks[b].ref_count for b in parent.block_table] == [2, 2, 1]
    bm.free_seq(parent)
    bm.free_seq(child)
    assert bm.num_free_blocks == 8


def test_without_prefix_caching_nothing_is_shared():
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    admit(bm, seq(list(range(9))))
    assert bm.match_prefix(seq(list(range(9)))) == []
    assert bm.cached == {}
