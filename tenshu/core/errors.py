"""The error hierarchy of tenshu. Each error knows its HTTP status and its kind.

    TenshuError                    500 internal_error
    ├── InvalidRequestError        400 invalid_request_error   (also a ValueError)
    │   ├── ConflictError          409 conflict_error           (a name already taken)
    │   ├── ContextLengthError     400 context_length_exceeded
    │   └── RequestTooLargeError   413 request_too_large
    ├── AuthenticationError        401 authentication_error
    ├── PermissionDeniedError      403 permission_error
    ├── NotFoundError              404 not_found_error
    │   └── ModelNotFoundError     404 model_not_found          (lists the models there are)
    ├── OverloadedError            429 rate_limit_error          (carries retry_after seconds)
    │   └── QuotaExceededError     429 rate_limit_error          (an upstream's quota or billing)
    ├── ModelLoadError             500 model_load_error
    │   └── UnsupportedModelError  400 unsupported_model        (also a ValueError)
    ├── ModelLoadingError          503 overloaded_error          (still loading after the wait)
    ├── EngineDeadError            503 engine_dead
    ├── UpstreamError              502 upstream_error            (an upstream server failed)
    │   └── UpstreamTimeoutError   504 timeout_error             (no connection, first token or
    │                                                             next token in time)
    ├── IntegrationError           502 integration_error         (a service's OAuth 2 server refused,
    │   │                                                          or the browser's answer was wrong)
    │   └── ReconnectRequiredError 409 reconnect_required        (no usable grant: connect again)
    └── ShuttingDownError          503 overloaded_error

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


class ConflictError(InvalidRequestError):
    """The request conflicts with what exists (a name already taken)."""

    status = 409
    kind = "conflict_error"


class ContextLengthError(InvalidRequestError):
    kind = "context_length_exceeded"


class RequestTooLargeError(InvalidRequestError):
    status = 413
    kind = "request_too_large"


class AuthenticationError(TenshuError):
    status = 401
    kind = "authentication_error"


class PermissionDeniedError(TenshuError):
    status = 403
    kind = "permission_error"


class NotFoundError(TenshuError):
    status = 404
    kind = "not_found_error"


class ModelNotFoundError(NotFoundError):
    kind = "model_not_found"

    def __init__(self, model: str, available: list[str]):
        names = ", ".join(available) or "none"
        super().__init__(f"model {model!r} not found; the models available are: {names}")
        self.model = model
        self.available = available


class OverloadedError(TenshuError):
    """Too many requests are waiting; the client should retry after `retry_after` seconds."""

    status = 429
    kind = "rate_limit_error"

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExceededError(OverloadedError):
    """An upstream refused for quota or billing (OpenAI's insufficient_quota, Anthropic's
    credit balance): unlike a rate limit, waiting a second will not help."""


class ModelLoadError(TenshuError):
    kind = "model_load_error"


class UnsupportedModelError(ModelLoadError, ValueError):
    status = 400
    kind = "unsupported_model"


class ModelLoadingError(TenshuError):
    """A model is still loading after the request waited for it as long as the server allows
    (server.load_timeout); retrying later will find it loaded."""

    status = 503
    kind = "overloaded_error"


class EngineDeadError(TenshuError):
    """The engine's step loop failed; requests in flight end with this error."""

    status = 503
    kind = "engine_dead"


class ShuttingDownError(TenshuError):
    """The server is stopping; in-flight streams that outlive the grace period end with this."""

    status = 503
    kind = "overloaded_error"


class UpstreamError(TenshuError):
    """An upstream server failed in a way that is not the client's fault: refused the
    connection, broke off a stream, answered 5xx, or refused tenshu's own credentials.
    `status` is the upstream's 5xx when it sent one."""

    status = 502
    kind = "upstream_error"


class UpstreamTimeoutError(UpstreamError):
    """No connection, no first token, or no next token within the configured time."""

    status = 504
    kind = "timeout_error"


class IntegrationError(TenshuError):
    """A connected service's OAuth 2 step failed: its server refused (its error is in the
    message), the browser brought back an answer that was not to tenshu's request, or none came
    in time."""

    status = 502
    kind = "integration_error"


class ReconnectRequiredError(IntegrationError):
    """An integration has no usable grant: never connected, revoked at the service, or a
    refresh the service refused. Only the person can fix it, by connecting again."""

    status = 409
    kind = "reconnect_required"


_BY_STATUS: dict[int, type[TenshuError]] = {
    400: InvalidRequestError, 401: AuthenticationError, 403: PermissionDeniedError,
    404: NotFoundError, 413: RequestTooLargeError, 422: InvalidRequestError, 429: OverloadedError,
}


def error_for_status(status: int, message: str, field: str | None = None) -> TenshuError:
    """The core error for an upstream's HTTP status (what upstream clients raise). A failure
    that is not the client's (5xx, or a status with no meaning here) keeps a 5xx status: 502
    when the upstream answered something unexpected, 503 for Anthropic's 529 (overloaded),
    which no other client knows."""
    cls = _BY_STATUS.get(status, UpstreamError)
    error = cls(message, field=field) if issubclass(cls, InvalidRequestError) else cls(message)
    if cls is UpstreamError:
        error.status = 503 if status == 529 else status if 500 <= status < 600 else 502
    return error
