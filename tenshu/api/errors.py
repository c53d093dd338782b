"""Errors on the wire: each protocol's own error format, chosen by the route a request came to.

The bodies themselves are written by protocols/<name>.py (`error_body`); here they become
responses with the right status and headers (Retry-After, request-id).
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tenshu.core.errors import (
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    TenshuError,
)
from tenshu.protocols import anthropic, ollama, openai

log = logging.getLogger("tenshu.api")
PROTOCOLS = {"openai": openai, "anthropic": anthropic, "ollama": ollama}


def protocol_of(scope) -> str:
    """Which protocol a request speaks, from its path (and headers, for /v1/models)."""
    path = scope["path"]
    if path.startswith("/api/"):
        return "ollama"
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/models"):
        headers = dict(scope.get("headers") or [])
        if b"anthropic-version" in headers:
            return "anthropic"
    return "openai"


def error_response(scope, exc: TenshuError) -> JSONResponse:
    protocol = PROTOCOLS[protocol_of(scope)]
    headers = {}
    if isinstance(exc, OverloadedError) or exc.status == 503:
        headers["Retry-After"] = str(getattr(exc, "retry_after", 1))
    return JSONResponse(protocol.error_body(exc), status_code=exc.status, headers=headers)


def validation_error(exc: RequestValidationError) -> InvalidRequestError:
    """FastAPI's 422 becomes a 400 that names the field, in words a person can act on."""
    first = exc.errors()[0] if exc.errors() else {}
    # pydantic names the union member it tried in the path (`prompt.str`, `input.list[str]`);
    # a person wants the field.
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _type_tag(p)]
    field = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return InvalidRequestError("the request body is not valid JSON", field=None)
    message = first.get("msg", "invalid request")
    return InvalidRequestError(f"{field}: {message}" if field else message, field=field)


def _type_tag(part) -> bool:
    part = str(part)
    return "[" in part or "-" in part or part in ("str", "int", "float", "bool", "list", "dict")


def install(app) -> None:
    @app.exception_handler(TenshuError)
    async def _tenshu(request: Request, exc: TenshuError):
        if exc.status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return error_response(request.scope, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error_response(request.scope, validation_error(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            err = NotFoundError(f"no route {request.method} {request.url.path}")
        elif exc.status_code == 405:
            err = InvalidRequestError(f"{request.method} is not allowed on {request.url.path}")
            err.status = 405
        elif exc.status_code < 500:  # e.g. FastAPI's 400 for a body it could not parse
            err = InvalidRequestError(str(exc.detail))
            err.status = exc.status_code
        else:
            err = TenshuError(str(exc.detail))
            err.status = exc.status_code
        response = error_response(request.scope, err)
        response.headers.update(exc.headers or {})  # Allow, on a 405
        return response

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError):
        # Only a request nested hundreds of levels deep (a tool schema, say) recurses this far:
        # the client's mistake. Handled here, not as an unexpected error, so the connection
        # stays usable.
        return error_response(request.scope, InvalidRequestError(
            "the request is nested too deeply to be read; flatten it", field=None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        return error_response(request.scope, TenshuError(f"internal error: {type(exc).__name__}"))
