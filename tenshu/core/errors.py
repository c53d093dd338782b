"""The error hierarchy of tenshu. Each error knows its HTTP status and its kind.

    TenshuError                    500 internal_error
    ├── InvalidRequestError        400 invalid_request_error   (also a ValueError)
    │   └── ContextLengthError     400 context_length_exceeded
    ├── ModelLoadError             500 model_load_error
    │   └── UnsupportedModelError  400 unsupported_model        (also a ValueError)
    └── EngineDeadError            503 engine_dead

Protocols map `kind` to their own error formats; the message is written for the person who
sent the request: what was wrong and what to do about it.
"""


class TenshuError(Exception):
    status: int = 500
    kind: str = "internal_error"


class InvalidRequestError(TenshuError, ValueError):
    """The request itself is wrong; `field` names the offending parameter when there is one."""

    status = 400
    kind = "invalid_request_error"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class ContextLengthError(InvalidRequestError):
    kind = "context_length_exceeded"


class ModelLoadError(TenshuError):
    kind = "model_load_error"


class UnsupportedModelError(ModelLoadError, ValueError):
    status = 400
    kind = "unsupported_model"


class EngineDeadError(TenshuError):
    """The engine's step loop failed; requests in flight end with this error."""

    status = 503
    kind = "engine_dead"
