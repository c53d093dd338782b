"""ModelInfo: what a served model is, as every protocol's model listing reports it.

Backends fill it in (backends/); protocols read it (protocols/*_encode.py); it lives here so
that neither depends on the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelInfo:
    """What the model listings of every protocol report."""

    name: str
    context_window: int
    created: int  # unix seconds
    owned_by: str = "tenshu"
    kind: str = "chat"  # "chat" or "embedding"
    family: str = ""
    parameters: int = 0
    dtype: str = ""
    size_bytes: int = 0
    path: str = ""
    chat_template: str = ""
    details: dict = field(default_factory=dict)
    parent: str = ""  # for a LoRA adapter served as a model: the model it adapts
