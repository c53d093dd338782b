"""The synchronous engine: add_request / step / abort_request, one scheduled batch per step.

Each step the scheduler picks the work, the model runner computes it, and the engine turns the
sampled tokens into text, checks every way a sequence can end, and reports RequestOutputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tenshu.core.errors import ContextLengthError, InvalidRequestError
from tenshu.engine.block_manager import BlockManager
from tenshu.engine.config import EngineConfig
from tenshu.engine.detokenizer import Detokenizer
from tenshu.engine.loader import load_model
from tenshu.engine.lora import LoRAError, LoRAManager, LoRARequest, LoRAWeights
from tenshu.engine.model_runner import ModelRunner
from tenshu.engine.outputs import CompletionOutput, RequestOutput
from tenshu.engine.sampling import Logprob, RequestOutputKind, SamplingParams
from tenshu.engine.scheduler import Scheduler
from tenshu.engine.sequence import FinishReason, Sequence

Prompt = str | list[int] | dict


@dataclass
class _Request:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    seqs: list[Sequence]
    detokenizers: list[Detokenizer | None]
    sent_text: list[int] = field(default_factory=list)  # chars already reported, per sequence
    sent_tokens: list[int] = field(default_factory=list)
    lora: LoRAWeights | None = None
    prompt_logprobs_sent: bool = False

    @property
    def finished(self) -> bool:
        return all(s.is_finished for s in self.seqs)


class LLMEngine:
    def __init__(self, config: EngineConfig):
        self.config = config
        loaded = load_model(config)
        self.tokenizer = loaded.tokenizer
        self.hf_config = loaded.hf_config
        self.eos_token_ids = loaded.eos_token_ids
        self.max_model_len = loaded.max_model_len
        self.vocab_size = loaded.hf_config.vocab_size
        self.dtype = loaded.dtype
        self.runner = ModelRunner(config, loaded)
        self.block_manager = BlockManager(
            self.runner.num_blocks, config.block_size, config.enable_prefix_caching
        )
        self.scheduler = Scheduler(self.block_manager, config.max_num_seqs, config.batched_tokens)
        self.requests: dict[str, _Request] = {}
        self.loras = LoRAManager(loaded.model, config.max_loras, config.max_lora_rank,
                                 self.runner.device, loaded.model.compute_dtype) \
            if config.enable_lora else None

    # -- requests -----------------------------------------------------------------------------

    def tokenize(self, prompt: Prompt) -> tuple[str | None, list[int]]:
        if isinstance(prompt, dict):
            if "prompt_token_ids" not in prompt:
                raise InvalidRequestError("a dict prompt needs 'prompt_token_ids'", field="prompt")
            return prompt.get("prompt"), list(prompt["prompt_token_ids"])
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise InvalidRequestError(
                    "this engine was started with skip_tokenizer_init=True: pass "
                    "{'prompt_token_ids': [...]} instead of text",
                    field="prompt",
                )
            return prompt, self.tokenizer.encode(prompt)
        return None, list(prompt)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        if self.tokenizer is None or not getattr(self.tokenizer, "chat_template", None):
            raise InvalidRequestError("this model has no chat template", field="messages")
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return self.tokenizer.encode(text, add_special_tokens=False)

    def add_request(self, request_id: str, prompt: Prompt, params: SamplingParams,
                    lora_request: LoRARequest | None = None) -> None:
        if request_id in self.requests:
            raise InvalidRequestError(f"request id {request_id!r} is already running")
        text, ids = self.tokenize(prompt)
        self._check_prompt(ids)
        budget = self.max_model_len - len(ids)
        if params.max_tokens is not None and params.max_tokens > budget:
            raise ContextLengthError(
                f"max_tokens {params.max_tokens} plus the prompt's {len(ids)} tokens exceeds "
                f"the context window of {self.max_model_len} tokens; ask for at most {budget}",
                field="max_tokens",
            )
        # a sequence must fit the KV cache on its own, or preemption could never make room
        capacity = self.runner.num_blocks * self.config.block_size - len(ids)
        if params.max_tokens is not None and params.max_tokens > capacity:
            raise ContextLengthError(
                f"max_tokens {params.max_tokens} plus the prompt's {len(ids)} tokens exceeds "
                f"the KV cache ({capacity + len(ids)} tokens); ask for at most {capacity} or "
                "give the engine a larger kv_cache_memory_gib",
                field="max_tokens",
            )
        max_tokens = params.max_tokens or min(budget, capacity)
        adapter = self._adapter(lora_request)
        seqs = [
            Sequence(request_id, i, ids, params, max_tokens, self._generator(params, i))
            for i in range(params.n)
        ]
        for seq in seqs:
            seq.lora = adapter
            seq.cache_salt = adapter.salt if adapter is not None else b""
        seqs[0].pending_forks = seqs[1:]
        detoks = [self._detokenizer(ids, params) for _ in seqs]
        self.requests[request_id] = _Request(
            request_id, text, ids, params, seqs, detoks, [0] * params.n, [0] * params.n,
            lora=adapter,
        )
        self.scheduler.add(seqs[0])

    # -- adapters, as vLLM's LLMEngine has them ------------------------------------------------

    def add_lora(self, lora_request: LoRARequest) -> bool:
        """Load an adapter ahead of its requests and keep it until remove_lora (any thread)."""
        self.lora_manager().add(lora_request)
        return True

    def remove_lora(self, lora_int_id: int) -> bool:
        """Give an adapter up (False: none has that id); refused while a request runs on it."""
        return self.lora_manager().remove(lora_int_id)

    def list_loras(self) -> set[int]:
        return set(self.lora_manager().loaded)

    def lora_manager(self) -> LoRAManager:
        """The adapters it holds; LoRAError for an engine started without enable_lora."""
        if self.loras is None:
            raise LoRAError("this engine was started without enable_lora=True: it serves no "
                            "adapters", field="lora_request")
        return self.loras

    def _adapter(self, lora_request: LoRARequest | None) -> LoRAWeights | None:
        """The adapter a request runs with, loaded if it is not (None: the base model)."""
        if lora_request is None:
            return None
        return self.lora_manager().acquire(lora_request)

    def _check_prompt(self, ids: list[int]) -> None:
        if not ids:
            raise InvalidRequestError("the prompt is empty", field="prompt")
        if any(not isinstance(t, int) or not 0 <= t < self.vocab_size for t in ids):
            raise InvalidRequestError(
                f"prompt token ids must be integers in [0, {self.vocab_size})", field="prompt"
            )
        if len(ids) >= self.max_model_len:
            raise ContextLengthError(
                f"the prompt has {len(ids)} tokens; the context window is {self.max_model_len} "
                "tokens and must also hold at least one generated token",
                field="prompt",
            )
        capacity = self.runner.num_blocks * self.config.block_size
        if len(ids) + 1 > capacity:
            raise ContextLengthError(
                f"the prompt has {len(ids)} tokens but the KV cache holds {capacity}",
                field="prompt",
            )

    def _generator(self, params: SamplingParams, index: int) -> torch.Generator | None:
        if params.seed is None:
            return None
        # each of the n sequences gets its own stream, all derived from the request's seed
        return torch.Generator().manual_seed(hash((params.seed, index)) & (2**63 - 1))

    def _detokenizer(self, ids: list[int], params: SamplingParams) -> Detokenizer | None:
        if self.tokenizer is None:
            return None
        return Detokenizer(
            self.tokenizer,
            ids,
            params.skip_special_tokens,
            params.stop_strings if params.constraint is None else (),
            params.include_stop_str_in_output,
            params.keep_special_token_ids,
        )

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Stop a request and free its blocks; returns its last output (finish_reason "abort"),
        or None if it was not running."""
        request = self.requests.get(request_id)
        if request is None:
            return None
        for seq in request.seqs:
            if not seq.is_finished:
                seq.finish_reason = FinishReason.ABORT
                self.scheduler.finish(seq)
        return self._output(request)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    # -- the step -----------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        batch = self.scheduler.schedule()
        if not batch.seqs:
            return []
        seqs, tokens, logprobs = self.runner.execute(batch)
        touched: dict[str, _Request] = {}
        for seq, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
            seq.num_computed_tokens += n
            self.block_manager.cache_computed_blocks(seq)
            if seq.pending_forks and seq.prompt_done:
                for child in seq.pending_forks:
                    self.block_manager.fork(seq, child)
                    self.scheduler.waiting.appendleft(child)
                seq.pending_forks = []
        for seq, token, lp in zip(seqs, tokens, logprobs, strict=True):
            request = self.requests[seq.request_id]
            seq.token_ids.append(token)
            if lp is not None:
                if self.tokenizer is not None:
                    for token_id, entry in lp.items():
                        entry.decoded_token = self.tokenizer.decode([token_id])
                seq.output_logprobs.append(lp)
                seq.cumulative_logprob += lp[token].logprob
            self._check_finish(seq, token, request.detokenizers[seq.index])
            if seq.finish_reason is not None:
                self.scheduler.finish(seq)
            touched[seq.request_id] = request
        return [self._output(r) for r in touched.values() if self._should_report(r)]

    def _check_finish(self, seq: Sequence, token: int, detok: Detokenizer | None) -> None:
        params = seq.params
        if seq.constraint is not None and not seq.constraint.accept(token):
            # the mask allowed nothing better (the grammar is broken or cannot continue):
            # end it as incomplete rather than report output that does not match as done
            seq.finish_reason = FinishReason.LENGTH
        elif seq.constraint is not None and seq.constraint.finished():
            seq.finish_reason = FinishReason.STOP
            if token not in self.eos_token_ids and detok is not None:
                detok.add(token)
        elif not params.ignore_eos and token in self.eos_token_ids:
            seq.finish_reason = FinishReason.STOP
        elif token in params.stop_token_ids and seq.constraint is None:
            seq.finish_reason, seq.stop_reason = FinishReason.STOP, token
        else:
            stop = detok.add(token) if detok is not None else None
            if stop is not None:
                seq.finish_reason, seq.stop_reason = FinishReason.STOP, stop
            elif seq.num_output_tokens >= seq.max_tokens or seq.num_tokens >= self.max_model_len:
                seq.finish_reason = FinishReason.LENGTH

    def _should_report(self, request: _Request) -> bool:
        return request.params.output_kind is not RequestOutputKind.FINAL_ONLY or request.finished

    def _output(self, request: _Request) -> RequestOutput:
        delta = request.params.output_kind is RequestOutputKind.DELTA
        outputs = []
        for i, (seq, detok) in enumerate(zip(request.seqs, request.detokenizers, strict=True)):
            text = detok.releasable(seq.is_finished) if detok is not None else ""
            tokens = seq.output_token_ids
            logprobs = seq.output_logprobs if seq.params.logprobs is not None else None
            sent_text, sent_tokens = request.sent_text[i], request.sent_tokens[i]
            request.sent_text[i], request.sent_tokens[i] = len(text), len(tokens)
            if delta:
                text, tokens = text[sent_text:], tokens[sent_tokens:]
                logprobs = logprobs[sent_tokens:] if logprobs is not None else None
            outputs.append(
                CompletionOutput(
                    index=i,
                    text=text,
                    token_ids=tokens,
                    logprobs=list(logprobs) if logprobs is not None else None,
                    cumulative_logprob=seq.cumulative_logprob if logprobs is not None else None,
                    finish_reason=seq.finish_reason.value if seq.finish_reason else None,
                    stop_reason=seq.stop_reason,
                )
            )
        prompt_logprobs = None
        first = request.seqs[0]
        complete = len(first.prompt_logprobs) == first.num_prompt_tokens
        if (request.params.prompt_logprobs is not None and complete
                and not (delta and request.prompt_logprobs_sent)):
            prompt_logprobs = self._decoded(first.prompt_logprobs)
            request.prompt_logprobs_sent = True
        finished = request.finished
        if finished and self.requests.pop(request.request_id, None) is not None and request.lora:
            self.loras.release(request.lora)
        return RequestOutput(
            request.request_id,
            request.prompt,
            request.prompt_token_ids,
            outputs,
            finished,
            request.seqs[0].num_cached_tokens,
            prompt_logprobs,
        )

    def _decoded(self, entries: list[dict[int, Logprob] | None]) -> list[dict[int, Logprob] | None]:
        """The entries with each token's text filled in (once; as the output logprobs have it)."""
        if self.tokenizer is not None:
            for entry in entries:
                for token_id, logprob in (entry or {}).items():
                    if logprob.decoded_token is None:
                        logprob.decoded_token = self.tokenizer.decode([token_id])
        return list(entries)

