"""tenshu's inference engine: paged KV cache, prefix caching, continuous batching.

Imports nothing from tenshu but `core`. Offline use: `LLM(model=path).generate(...)`; serving:
`AsyncEngine(EngineConfig(model=path)).generate(request_id, prompt, params)`.
"""

from tenshu.engine.async_engine import AsyncEngine
from tenshu.engine.config import EngineConfig
from tenshu.engine.llm import LLM
from tenshu.engine.llm_engine import LLMEngine
from tenshu.engine.lora import LoRARequest
from tenshu.engine.outputs import CompletionOutput, RequestOutput
from tenshu.engine.sampling import Logprob, RequestOutputKind, SamplingParams

__all__ = [
    "LLM",
    "AsyncEngine",
    "CompletionOutput",
    "EngineConfig",
    "LLMEngine",
    "Logprob",
    "LoRARequest",
    "RequestOutput",
    "RequestOutputKind",
    "SamplingParams",
]
