"""LLM: offline batch generation in vLLM's shape, `LLM(model=path).generate(prompts, params)`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence as Seq
from itertools import count

from tqdm import tqdm

from tenshu.core.errors import InvalidRequestError
from tenshu.engine.config import EngineConfig
from tenshu.engine.llm_engine import LLMEngine, Prompt
from tenshu.engine.lora import LoRARequest
from tenshu.engine.outputs import RequestOutput
from tenshu.engine.sampling import RequestOutputKind, SamplingParams


class LLM:
    """An engine for offline use. Keyword arguments are EngineConfig fields (dtype, device,
    max_model_len, kv_cache_memory_gib, max_num_seqs, enable_prefix_caching, ...)."""

    def __init__(self, model: str, **engine_config):
        self.engine = LLMEngine(EngineConfig(model=str(model), **engine_config))
        self._ids = count()

    def get_tokenizer(self):
        return self.engine.tokenizer

    def generate(
        self,
        prompts: Prompt | Seq[Prompt],
        sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
        use_tqdm: bool = False,
        lora_request: LoRARequest | Seq[LoRARequest | None] | None = None,
    ) -> list[RequestOutput]:
        """Generate completions for all prompts together; outputs come back in prompt order.
        `lora_request`: one adapter for every prompt, or one (or None: the base model) per
        prompt; the engine needs enable_lora=True."""
        if isinstance(prompts, str | dict) or (
            isinstance(prompts, list) and prompts and isinstance(prompts[0], int)
        ):
            prompts = [prompts]
        params = sampling_params if sampling_params is not None else SamplingParams()
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise InvalidRequestError(
                f"got {len(params)} sampling params for {len(prompts)} prompts; pass one, "
                "or one per prompt",
                field="sampling_params",
            )
        loras = lora_request if isinstance(lora_request, list | tuple) else \
            [lora_request] * len(prompts)
        if len(loras) != len(prompts):
            raise InvalidRequestError(
                f"got {len(loras)} LoRA requests for {len(prompts)} prompts; pass one, or one "
                "per prompt", field="lora_request")
        ids = []
        try:
            for prompt, p, adapter in zip(prompts, params, loras, strict=True):
                request_id = str(next(self._ids))
                final = dataclasses.replace(p, output_kind=RequestOutputKind.FINAL_ONLY)
                self.engine.add_request(request_id, prompt, final, lora_request=adapter)
                ids.append(request_id)
        except Exception:
            for request_id in ids:  # all or nothing: no half-submitted batch stays queued
                self.engine.abort_request(request_id)
            raise
        results: dict[str, RequestOutput] = {}
        bar = tqdm(total=len(ids), desc="generating", disable=not use_tqdm)
        while self.engine.has_unfinished_requests():
            for out in self.engine.step():
                results[out.request_id] = out
                bar.update(1)
        bar.close()
        return [results[i] for i in ids]

    def chat(
        self,
        messages: list[dict] | list[list[dict]],
        sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
        add_generation_prompt: bool = True,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Apply the model's chat template to one conversation or a list of them, then generate."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        prompts = [
            {"prompt_token_ids": self.engine.apply_chat_template(c, add_generation_prompt)}
            for c in conversations
        ]
        return self.generate(prompts, sampling_params, use_tqdm)
