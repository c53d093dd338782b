"""LoRA adapters in service, loaded and unloaded without a restart (learn/serving.py).

    POST /v1/load_lora_adapter        admins: vLLM's, {"lora_name", "lora_path"} serves the
                                      adapter in that folder as the model `lora_name`;
                                      tenshu's additions: no lora_path = the registry's version
                                      in service, "load_inplace": true replaces a served one
                                      (hot-swap), "base_model_name" picks the model it adapts
    POST /v1/unload_lora_adapter      admins: vLLM's, {"lora_name"}; answers once the
                                      adapter's last request has finished
    GET  /tenshu/v1/adapters          admins: the registry's adapters and versions, and what is
                                      served
    POST /tenshu/v1/adapters/{name}/promote   admins: put a version in service (the newest by
                                      default) and serve it now
    POST /tenshu/v1/adapters/{name}/rollback  admins: back to the version served before

As in vLLM, the two /v1 endpoints answer a line of text on success and an error in OpenAI's
shape otherwise.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict

from tenshu.api.tenshu import _ERRORS, Context, _run
from tenshu.core.errors import NotFoundError, PermissionDeniedError
from tenshu.gateway import RequestContext
from tenshu.learn.serving import AdapterService

router = APIRouter(tags=["adapters"])


class LoadLoRAAdapter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lora_name: str
    lora_path: str | None = None
    load_inplace: bool = False
    base_model_name: str | None = None


class UnloadLoRAAdapter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lora_name: str
    lora_int_id: int | None = None  # vLLM's; the name is what identifies it here


class Promote(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = None


def service_of(request: Request, ctx: RequestContext) -> AdapterService:
    if not ctx.principal.admin:
        raise PermissionDeniedError("only an admin may load, unload or promote adapters")
    service = getattr(request.app.state, "adapters", None)
    if service is None:
        raise NotFoundError("this server serves no LoRA adapters (it has no embedded model)")
    return service


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse, responses=_ERRORS)
async def load_lora_adapter(body: LoadLoRAAdapter, request: Request, ctx: Context):
    await service_of(request, ctx).load(body.lora_name, body.lora_path,
                                        base=body.base_model_name, replace=body.load_inplace)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse, responses=_ERRORS)
async def unload_lora_adapter(body: UnloadLoRAAdapter, request: Request, ctx: Context):
    await service_of(request, ctx).unload(body.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")


@router.get("/tenshu/v1/adapters", responses=_ERRORS)
async def list_adapters(request: Request, ctx: Context) -> dict:
    service = service_of(request, ctx)
    registry = service.registry
    versions = []
    if registry is not None:
        versions = await _run(lambda: [v.to_json() for name in registry.names()
                                       for v in registry.versions(name)])
    return {"object": "list", "served": [s.to_json() for s in service.list()],
            "data": versions}


@router.post("/tenshu/v1/adapters/{name}/promote", responses=_ERRORS)
async def promote(name: str, body: Promote, request: Request, ctx: Context) -> dict:
    service = _with_registry(request, ctx, name)
    version = await _run(service.registry.promote, name, body.version)
    await service.sync()
    return version.to_json()


@router.post("/tenshu/v1/adapters/{name}/rollback", responses=_ERRORS)
async def rollback(name: str, request: Request, ctx: Context) -> dict:
    service = _with_registry(request, ctx, name)
    version = await _run(service.registry.rollback, name)
    await service.sync()
    return {"object": "adapter", "name": name, "serving": version}


def _with_registry(request: Request, ctx: RequestContext, name: str) -> AdapterService:
    service = service_of(request, ctx)
    if service.registry is None:
        raise NotFoundError("this server has no adapter registry")
    if name not in service.registry.names():
        raise NotFoundError(f"no adapter named {name[:64]!r} in the registry")
    return service
