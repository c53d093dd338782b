"""Which upstream class speaks which wire protocol: the one place that knows them all.

backends/upstream.py holds what every upstream shares; each protocol's subclass (openai.py,
openai_responses.py, anthropic.py, ollama.py) builds on it, and this module picks among them,
so that the shared base never imports its own subclasses.
"""

from __future__ import annotations

from typing import Any

from tenshu.backends.anthropic import AnthropicBackend
from tenshu.backends.base import Backend
from tenshu.backends.ollama import OllamaBackend
from tenshu.backends.openai import OpenAIBackend
from tenshu.backends.openai_responses import OpenAIResponsesBackend

CLASSES = {"openai": OpenAIBackend, "openai-responses": OpenAIResponsesBackend,
           "anthropic": AnthropicBackend, "ollama": OllamaBackend}


def upstream_backend(protocol: str, name: str, endpoint: str, **options: Any) -> Backend:
    """The backend that forwards to `endpoint`, given as that protocol's official SDK takes it:
    OpenAI's with /v1 (for both of its APIs), Anthropic's and Ollama's without. `options` are
    UpstreamBackend's keyword arguments (upstream_model, api_key, timeouts, ...)."""
    if protocol not in CLASSES:
        raise ValueError(f"unknown upstream protocol {protocol!r}; use one of {sorted(CLASSES)}")
    return CLASSES[protocol](name, endpoint, **options)
