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

        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_uncomputed_tokens, budget)
            while not bm.can_allocate(seq, n):
                victim = self.running.pop()
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                bm.allocate(seq, n)
                scheduled.append(seq)
                counts.append(n)
                budget -= n
                i += 1

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

    def _preempt(self, seq: Sequence) -> None:
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
