"""/openapi.json and /docs: the API's own description, behind the same keys as the API.

FastAPI's built-in pages answer without authentication and load Swagger UI from a CDN; these
answer only a request that may use the API, and /docs loads Swagger UI from the files the
`fastapi-swagger` package ships (its MIT licence is in that package), so a browser opening it
makes no connection beyond this server. The bundle's files themselves are public (they are the
same in every installation); the document and the page are not.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse

from tenshu.api.context import request_context
from tenshu.core.errors import NotFoundError
from tenshu.gateway import RequestContext

router = APIRouter(include_in_schema=False)
Context = Annotated[RequestContext, Depends(request_context)]

_ASSETS = {  # the files /docs needs, by the name it asks for them
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
# Swagger UI would otherwise fetch a validity badge from validator.swagger.io.
_PARAMETERS = {"validatorUrl": None, "tryItOutEnabled": True, "displayRequestDuration": True}


@router.get("/openapi.json")
async def openapi(request: Request, ctx: Context) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def docs(request: Request, ctx: Context):
    return get_swagger_ui_html(
        openapi_url="/openapi.json", title=f"{request.app.title} API",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon-32x32.png",
        swagger_ui_parameters=_PARAMETERS)


@router.get("/docs/assets/{name}")
async def asset(name: str) -> FileResponse:
    if name not in _ASSETS:
        raise NotFoundError(f"no such file: /docs/assets/{name}")
    path = resources.files("fastapi_swagger") / "resources" / name
    return FileResponse(str(path), media_type=_ASSETS[name],
                        headers={"Cache-Control": "public, max-age=86400"})
