"""Protocol-neutral types shared by every layer; see core/errors.py for the error tree."""

from tenshu.core.errors import (
    ContextLengthError,
    EngineDeadError,
    InvalidRequestError,
    ModelLoadError,
    TenshuError,
    UnsupportedModelError,
)

__all__ = [
    "ContextLengthError",
    "EngineDeadError",
    "InvalidRequestError",
    "ModelLoadError",
    "TenshuError",
    "UnsupportedModelError",
]
