"""The public API is small and explicit."""

import subprocess
import sys

import tenshu
import tenshu.engine


def test_public_names():
    assert sorted(tenshu.__all__) == sorted([
        "LLM", "AsyncEngine", "CompletionOutput", "EngineConfig", "Logprob", "LoRARequest", "RequestOutput",
        "SamplingParams", "__version__",
    ])
    for name in tenshu.__all__:
        assert getattr(tenshu, name) is not None


def test_engine_imports_nothing_above_core():
    # a fresh interpreter, so what other tests imported cannot hide or fake a violation
    code = (
        "import sys, tenshu.engine; "
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('tenshu.')}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['core', 'engine']"
