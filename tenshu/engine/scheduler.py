"""Decides, at every step boundary, which sequences run and how many tokens each computes.

One step is one forward pass over a flat batch of tokens. Running sequences go first (a decode
is one token; a prompt still being prefilled gets a chunk), then waiting sequences are admitted
while the token budget (`max_num_batched_tokens`), `max_num_seqs` and free KV blocks allow.
When a running sequence needs a block and none is free, the most recently admitted running
sequence is preempted: its blocks are freed and it goes back to the front of the queue, to be
recomputed later (its computed blocks usually survive in the prefix cache).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from tenshu.engine.block_manager import BlockManager
from tenshu.engine.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    seqs: list[Sequence]
    num_new_tokens: list[int]  # tokens each sequence computes this step

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
    ):
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledBatch:
        bm = self.block_manager
        budget = self.max_num_batched_tokens
        scheduled: list[Sequence] = []
        counts: list[int] = []
        preempted = False

        # Decodes first, then prompts still being prefilled: a long prompt takes what is left
        # of the budget, so running decodes never wait for it; while requests wait, it takes at
        # most half, so new prompts are admitted beside it instead of queueing behind it.
        prefill_cap = self.max_num_batched_tokens // 2 if self.waiting else budget
        order = sorted(self.running, key=lambda s: s.num_uncomputed_tokens > 1)
        for seq in order:
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:  # preempted earlier in this loop
                continue
            n = min(seq.num_uncomputed_tokens, budget)
            if n > 1:
                n = max(1, min(n, prefill_cap))
            while not bm.can_allocate(seq, n):
                victim = self._victim(seq, scheduled)
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                bm.allocate(seq, n)
                scheduled.append(seq)
                counts.append(n)
                budget -= n

        # Admitting new work right after a preemption would only preempt again.
        while self.waiting and budget > 0 and not preempted:
            if len(self.running) >= self.max_num_seqs:
                break
            seq = self.waiting[0]
            prefix = bm.match_prefix(seq) if not seq.block_table else []
            uncomputed = seq.num_uncomputed_tokens - len(prefix) * bm.block_size
            n = min(uncomputed, budget)
            if not bm.can_allocate(seq, n, prefix):
                if not self.running and not scheduled:
                    raise RuntimeError(  # the engine checks this at add time; a bug otherwise
                        f"KV cache too small for one sequence of {seq.num_tokens} tokens"
                    )
                break
            self.waiting.popleft()
            if not seq.block_table:
                bm.take_prefix(seq, prefix)
            bm.allocate(seq, n)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            scheduled.append(seq)
            counts.append(n)
            budget -= n
        return ScheduledBatch(scheduled, counts)

    def _victim(self, seq: Sequence, scheduled: list[Sequence]) -> Sequence:
        """The most recently admitted running sequence not yet scheduled this step, else seq."""
        for candidate in reversed(self.running):
            if candidate is not seq and candidate not in scheduled:
                return candidate
        return seq

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free_seq(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def finish(self, seq: Sequence) -> None:
        """Remove a sequence that finished or was aborted, wherever it is, and free its blocks."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.block_manager.free_seq(seq)
        seq.status = SequenceStatus.FINISHED
