"""/health (the process is alive), /ready (models loaded, not draining) and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

router = APIRouter()


@router.get("/health", include_in_schema=False)
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready", include_in_schema=False)
async def ready(request: Request):
    gateway = request.app.state.gateway
    if gateway.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    return {"status": "ready", "models": [m.name for m in gateway.models()]}


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    request.app.state.auth.check(request)
    body = request.app.state.metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
