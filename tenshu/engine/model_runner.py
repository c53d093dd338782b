"""Runs one scheduled step: lays the batch out as flat tensors, runs the model, samples.

The KV cache is one tensor per layer for keys and one for values, [num_blocks * block_size,
kv_heads, head_dim]; a token at position p of a sequence lives in slot
block_table[p // block_size] * block_size + p % block_size. The same code runs on CPU and CUDA.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import sys

import torch

from tenshu.engine import kernels, lora
from tenshu.engine.config import EngineConfig
from tenshu.engine.layers.attention import AttentionMetadata, PrefillChunk, causal_mask
from tenshu.engine.loader import LoadedModel
from tenshu.engine.quant import QuantWeight
from tenshu.engine.sampling import Logprob, Sampler, logprob_entries
from tenshu.engine.scheduler import ScheduledBatch
from tenshu.engine.sequence import Sequence

GIB = 1 << 30
_LOGIT_ROWS = 256  # prompt positions whose logits are computed at once (prompt logprobs)


def tune_cpu_allocator() -> None:
    """Keep freed memory in glibc's heap instead of returning it to the OS: every step makes
    and frees tensors of many MiB, and fresh pages cost a page fault each (prefill measured
    25% faster on a 2-core CPU). A no-op where glibc is not the allocator."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)  # the largest glibc accepts
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_top_pad, 64 << 20)


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The KV cache's memory, zeroed: padded decode rows read slots they mask out, and a masked
    NaN from uninitialised memory would still poison the softmax-weighted sum (0 * NaN = NaN).
    On a CPU it is anonymous memory, which the OS hands out as zero pages when first touched, so
    a server holds only the blocks it has used: it starts at its weights' size and grows with
    the load, up to the budget (torch.zeros would write the whole budget at start-up)."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    # the tensor keeps the mapping alive; it is unmapped with the last view of the cache
    return torch.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype).view(shape)


class ModelRunner:
    def __init__(self, config: EngineConfig, loaded: LoadedModel):
        if config.torch_device.type == "cpu" and sys.platform.startswith("linux"):
            tune_cpu_allocator()
        # tenshu's CPU kernels, built or loaded now (while the model loads, not at its first
        # request); with them decode attention reads the cache in place
        self.decode_in_place = config.torch_device.type == "cpu" and kernels.ops() is not None
        self.model = loaded.model
        for module in self.model.modules():
            if isinstance(module, QuantWeight):
                module.use_int8_activations(config.int8_activations)
        self.device = config.torch_device
        self.dtype = loaded.dtype
        self.kv_dtype = config.kv_dtype(loaded.dtype, loaded.weight_dtype)
        self.block_size = config.block_size
        hf = loaded.hf_config
        self.num_kv_heads = hf.num_key_value_heads
        self.head_dim = self.model.head_dim
        self.num_layers = hf.num_hidden_layers
        self.num_blocks = self._num_blocks(config, loaded.max_model_len)
        slots = self.num_blocks * self.block_size
        cache = _zeros(  # [2, layers, slots, kv_heads, head_dim]
            (2, self.num_layers, slots, self.num_kv_heads, self.head_dim), self.kv_dtype,
            self.device)
        self.kv_caches = [(cache[0, i], cache[1, i]) for i in range(self.num_layers)]
        self._workspace = torch.empty(0, device=self.device)
        self.windows = sorted(set(self.model.windows), key=lambda w: (w is not None, w or 0))
        self.sampler = Sampler(config.seed)

    @property
    def kv_bytes_per_token(self) -> int:
        elem = torch.empty((), dtype=self.kv_dtype).element_size()
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * elem

    def _num_blocks(self, config: EngineConfig, max_model_len: int) -> int:
        if config.num_kv_blocks is not None:
            return config.num_kv_blocks
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            budget = free * config.gpu_memory_utilization
        else:
            budget = config.kv_cache_memory_gib * GIB
        num = int(budget // (self.kv_bytes_per_token * self.block_size))
        # never more than every allowed sequence at full context could use
        most = config.max_num_seqs * -(-max_model_len // self.block_size)
        num = min(num, most)
        if num < 1:
            raise ValueError("the KV cache budget is too small for a single block")
        return num

    @torch.inference_mode()
    def execute(
        self, batch: ScheduledBatch
    ) -> tuple[list[Sequence], list[int], list[dict[int, Logprob] | None]]:
        """Compute the batch; return the sequences that reached their last token, each with its
        next token and logprobs. Sequences in the middle of a prompt sample nothing."""
        input_ids, positions, slot_mapping, sample_rows, prompt_rows = [], [], [], [], []
        adapters: dict[int, tuple[object, list[int]]] = {}  # adapter id -> (weights, its rows)
        decodes: list[tuple[int, Sequence]] = []
        prefills: list[tuple[int, int, Sequence]] = []
        bs = self.block_size
        for seq, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
            start = len(input_ids)
            c = seq.num_computed_tokens
            input_ids.extend(seq.token_ids[c : c + n])
            positions.extend(range(c, c + n))
            table = seq.block_table
            slot_mapping.extend(table[p // bs] * bs + p % bs for p in range(c, c + n))
            if n == 1:
                decodes.append((start, seq))
            else:
                prefills.append((start, n, seq))
            if c + n == seq.num_tokens:
                sample_rows.append((len(input_ids) - 1, seq))
            if seq.params.prompt_logprobs is not None and c + 1 < seq.num_prompt_tokens:
                prompt_rows.append((start, n, seq))
            if seq.lora is not None:
                rows = adapters.setdefault(seq.lora.request.lora_int_id, (seq.lora, []))[1]
                rows.extend(range(start, len(input_ids)))
        dev = self.device
        slots = torch.tensor(slot_mapping, dtype=torch.long, device=dev)
        workspace = self._workspace_for(prefills, decodes)
        metas = self._metadata(slots, prefills, decodes, workspace)
        token = lora.current.set(self._lora_batch(adapters, len(input_ids)))
        try:
            hidden = self.model(
                torch.tensor(input_ids, dtype=torch.long, device=dev),
                torch.tensor(positions, dtype=torch.long, device=dev),
                self.kv_caches,
                metas,
            )
        finally:
            lora.current.reset(token)
        for start, n, seq in prompt_rows:
            self._prompt_logprobs(hidden, start, n, seq)
        if not sample_rows:
            return [], [], []
        rows = torch.tensor([r for r, _ in sample_rows], dtype=torch.long, device=dev)
        logits = self.model.compute_logits(hidden[rows])  # [N, V]
        seqs = [s for _, s in sample_rows]
        tokens, logprobs = self.sampler(logits.cpu() if dev.type != "cpu" else logits, seqs)
        return seqs, tokens, logprobs

    def _prompt_logprobs(self, hidden: torch.Tensor, start: int, n: int, seq: Sequence) -> None:
        """Append to seq.prompt_logprobs the entries of the prompt tokens this chunk predicts:
        the row at position p gives the logits of the token at p + 1. Entries a preempted
        sequence made before are kept, not made again; logits go in slices (a 150k vocabulary
        makes 600 kB of them per row)."""
        c = seq.num_computed_tokens
        first = max(c + 1, len(seq.prompt_logprobs))
        last = min(c + n, seq.num_prompt_tokens - 1)  # the last prompt position predicted here
        top = seq.params.prompt_logprobs
        for lo in range(first, last + 1, _LOGIT_ROWS):
            hi = min(lo + _LOGIT_ROWS, last + 1)
            rows = hidden[start + lo - 1 - c : start + hi - 1 - c]
            logprobs = torch.log_softmax(self.model.compute_logits(rows).float(), dim=-1)
            seq.prompt_logprobs += logprob_entries(logprobs, seq.token_ids[lo:hi], top)

    def _lora_batch(self, adapters: dict, rows: int) -> lora.LoRABatch | None:
        """Which rows each adapter of the batch adds its product to (None: no adapters)."""
        if not adapters:
            return None
        return lora.LoRABatch([
            (weights, None if len(mine) == rows else
             torch.tensor(mine, dtype=torch.long, device=self.device))
            for weights, mine in adapters.values()])

    def _slots(self, seqs: list[Sequence], length: int) -> torch.Tensor:
        """[len(seqs), length] cache slots of positions 0..length-1 of each sequence."""
        nb = -(-length // self.block_size)
        tables = torch.tensor(
            [s.block_table[:nb] + [0] * (nb - len(s.block_table[:nb])) for s in seqs],
            dtype=torch.long, device=self.device,
        )  # [B, nb]
        offsets = torch.arange(self.block_size, device=self.device)
        return (tables[:, :, None] * self.block_size + offsets).view(len(seqs), -1)[:, :length]

    def _workspace_for(self, prefills, decodes) -> torch.Tensor:
        """A [2, N, KVH, D] buffer big enough for this step's gathers; it only ever grows."""
        need = max((s.num_computed_tokens + n for _, n, s in prefills), default=0)
        if decodes and not self.decode_in_place:
            need = max(need, len(decodes) * max(s.num_computed_tokens + 1 for _, s in decodes))
        have = self._workspace.shape[1] if self._workspace.dim() > 1 else 0
        if need > have:
            size = max(need, have + have // 2)  # grow in steps, not on every longer context
            self._workspace = torch.empty(
                2, size, self.num_kv_heads, self.head_dim, dtype=self.kv_dtype,
                device=self.device,
            )
        return self._workspace

    def _metadata(self, slots, prefills, decodes, workspace) -> dict[int | None, AttentionMetadata]:
        """One AttentionMetadata per distinct sliding window; only the masks differ, so the
        slot tables are built once and shared."""
        dev = self.device
        chunk_slots = [
            self._slots([seq], seq.num_computed_tokens + n)[0] if seq.num_computed_tokens else None
            for _, n, seq in prefills
        ]
        decode_rows = decode_slots = lens = pos = None
        if decodes:
            seqs = [s for _, s in decodes]
            lens = torch.tensor([s.num_computed_tokens + 1 for s in seqs], device=dev)[:, None]
            length = int(lens.max())
            pos = torch.arange(length, device=dev)[None, :]
            decode_rows = torch.tensor([r for r, _ in decodes], dtype=torch.long, device=dev)
            decode_slots = self._slots(seqs, length)
        metas = {}
        for window in self.windows:
            chunks = [
                PrefillChunk(
                    start=start,
                    num_tokens=n,
                    context_len=seq.num_computed_tokens + n,
                    slots=cs,
                    mask=causal_mask(n, seq.num_computed_tokens + n, window, dev),
                )
                for (start, n, seq), cs in zip(prefills, chunk_slots, strict=True)
            ]
            decode_mask = None
            if decodes and not self.decode_in_place:  # the kernel masks by length and window
                decode_mask = pos < lens  # [B, L]
                if window is not None:
                    decode_mask &= pos >= lens - window
                decode_mask = decode_mask[:, None, None, :]
            metas[window] = AttentionMetadata(
                slots, chunks, decode_rows, decode_slots, decode_mask, workspace,
                decode_lens=lens.view(-1) if decodes and self.decode_in_place else None,
                window=window,
            )
        return metas
