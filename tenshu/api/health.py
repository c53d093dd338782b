"""/health (the process is alive), /ready (models loaded, not draining) and /metrics.

/health answers as soon as the process serves HTTP, while the embedded models are still loading
in the background (backends/loading.py). /ready answers 503 {"status": "loading", "models":
{name: "loading" | "ready" | "failed: why"}} until every one has loaded (and the adapters in
service are added), 503 "failed" if one could not be, then 200 as long as the server is not
draining; a model unloaded after its keep_alive still counts as ready (its next request loads
it). Both answer without a key (load balancers and supervisors probe them); /ready lists the
models only to a request that could list them through the API.
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
    may_list = await _may_list(request)
    states = gateway.load_states()
    adapters = getattr(request.app.state, "adapters", None)
    failed = any(state.startswith("failed") for state in states.values())
    if failed or not gateway.loaded() or (adapters is not None and not adapters.started):
        body = {"status": "failed" if failed else "loading"}
        if may_list:
            body["models"] = states
        return JSONResponse(body, status_code=503)
    if not may_list:
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
