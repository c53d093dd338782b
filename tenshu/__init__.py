"""tenshu: a sovereign, always-on AI server. The public API of the package.

Offline generation in vLLM's shape:

    from tenshu import LLM, SamplingParams
    llm = LLM(model="path/to/checkpoint")
    print(llm.generate("Hello", SamplingParams(max_tokens=32))[0].outputs[0].text)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tenshu.engine import (
        LLM,
        AsyncEngine,
        CompletionOutput,
        EngineConfig,
        Logprob,
        LoRARequest,
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
    "LoRARequest",
    "RequestOutput",
    "SamplingParams",
    "__version__",
]


def __getattr__(name: str):
    """The engine's names, imported when first asked for: importing the engine brings torch
    (seconds), which commands such as `tenshu users list` do not need."""
    if name in __all__ and name != "__version__":
        import tenshu.engine

        return getattr(tenshu.engine, name)
    raise AttributeError(f"module 'tenshu' has no attribute {name!r}")
