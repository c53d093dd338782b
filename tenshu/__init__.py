"""tenshu: a sovereign, always-on AI server. The public API of the package.

Offline generation in vLLM's shape:

    from tenshu import LLM, SamplingParams
    llm = LLM(model="path/to/checkpoint")
    print(llm.generate("Hello", SamplingParams(max_tokens=32))[0].outputs[0].text)
"""

from tenshu.engine import (
    LLM,
    AsyncEngine,
    CompletionOutput,
    EngineConfig,
    Logprob,
    RequestOutput,
    SamplingParams,
)

__version__ = "0.1.0"

__all__ = [
    "LLM",
    "AsyncEngine",
    "CompletionOutput",
    "EngineConfig",
    "Logprob",
    "RequestOutput",
    "SamplingParams",
    "__version__",
]
