"""The public API is small and explicit."""

import tenshu
import tenshu.engine


def test_public_names():
    assert sorted(tenshu.__all__) == sorted([
        "LLM", "AsyncEngine", "CompletionOutput", "EngineConfig", "Logprob", "RequestOutput",
        "SamplingParams", "__version__",
    ])
    for name in tenshu.__all__:
        assert getattr(tenshu, name) is not None


def test_engine_imports_nothing_above_core():
    import sys

    engine_modules = [m for m in sys.modules if m.startswith("tenshu.engine")]
    assert engine_modules
    above = ("tenshu.api", "tenshu.gateway", "tenshu.router", "tenshu.backends", "tenshu.chat",
             "tenshu.protocols", "tenshu.cli")
    assert not [m for m in sys.modules if m.startswith(above)]
