"""/health (the process is alive), /ready (models loaded, not draining) and /metrics.

/health and /ready answer without a key (load balancers and supervisors probe them); /ready
lists the models only to a request that could list them through the API.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from tenshu.api.context import authenticate
from tenshu.core.errors import TenshuError

router = APIRouter()


@router.get("/health", include_in_schema=False)
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready", include_in_schema=False)
async def ready(request: Request):
    gateway = request.app.state.gateway
    if gateway.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    if not await _may_list(request):
        return {"status": "ready"}
    return {"status": "ready", "models": [m.name for m in gateway.models()]}


async def _may_list(request: Request) -> bool:
    # /ready itself is open (auth.OPEN_PATHS), so ask as /v1/models would be asked
    try:
        await authenticate(Request({**request.scope, "path": "/v1/models"}))
    except TenshuError:
        return False
    return True


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    await authenticate(request)
    body = request.app.state.metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
