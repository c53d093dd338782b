"""/tenshu/v1/memory: the caller's collections, their documents, and search. JSON in OpenAI's
error shape; in the OpenAPI document.

    GET    /tenshu/v1/memory/collections                         the caller's, then those shared
    POST   /tenshu/v1/memory/collections                         {"name", "description", "cloud"}
    GET    /tenshu/v1/memory/collections/{name}                  one (?owner=ana: one ana shares)
    PATCH  /tenshu/v1/memory/collections/{name}                  {"description", "cloud"}
    DELETE /tenshu/v1/memory/collections/{name}                  it, with everything in it
    GET    /tenshu/v1/memory/collections/{name}/shares           who else may read it
    PUT    /tenshu/v1/memory/collections/{name}/shares/{user}    let them read it
    DELETE /tenshu/v1/memory/collections/{name}/shares/{user}    no longer
    GET    /tenshu/v1/memory/collections/{name}/documents        its documents and their status
    POST   /tenshu/v1/memory/collections/{name}/documents        upload a file (multipart `file`),
                                                                 indexed in the background (202)
                                                                 or before the answer (?wait=true)
    GET    /tenshu/v1/memory/collections/{name}/documents/{id}   one, with its status
    DELETE /tenshu/v1/memory/collections/{name}/documents/{id}   it and its chunks
    GET    /tenshu/v1/memory/collections/{name}/review           chunks that keep being rated down
    GET    /tenshu/v1/memory/collections/{name}/indexes          its live index, and one being
                                                                 built beside it (a reindex)
    GET    /tenshu/v1/memory/chunks/{id}                         one chunk, where it sits
    POST   /tenshu/v1/memory/search                              {"query", "collection", "k"}

Whose collection a request reaches is the store's to decide (store/collections.resolve): another
user's collection answers as a missing one (404) unless it is shared with the caller, and then
it is read-only (403 on a change).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import Field

from tenshu.api.tenshu import _ERRORS, Context, _Body, _run
from tenshu.core.errors import InvalidRequestError, NotFoundError
from tenshu.memory import Memory

router = APIRouter(prefix="/tenshu/v1/memory", tags=["memory"])
Owner = Annotated[str | None, Query(description="the owner of a collection shared with you")]
# ids are SQL integers: a larger number is a 422, not an overflow in the database
DocumentId = Annotated[int, Path(ge=1, le=2**63 - 1)]
ChunkId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class CollectionIn(_Body):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field("", max_length=2000)
    cloud: bool = Field(False, description="its chunks may be sent to cloud models")


class CollectionUpdate(_Body):
    description: str | None = Field(None, max_length=2000)
    cloud: bool | None = None


class SearchIn(_Body):
    query: str = Field(min_length=1, max_length=4000)
    collection: str | list[str] = Field(
        description="a collection's name (yours, or owner/name for one shared with you), or "
                    "several")
    k: int = Field(10, ge=1, le=100)
    source: str | None = Field(None, max_length=1000,
                               description="only documents whose source matches this glob")
    since: datetime | None = Field(None, strict=False,
                                   description="only documents changed at or after (ISO 8601)")
    until: datetime | None = Field(None, strict=False,
                                   description="only documents changed before (ISO 8601)")


def memory_of(request: Request) -> Memory:
    memory = request.app.state.memory
    if memory is None:
        raise NotFoundError("memory is not available on this server")
    return memory


def _name(name: str, owner: str | None) -> str:
    return f"{owner}/{name}" if owner else name


# -- collections --------------------------------------------------------------------------------


@router.get("/collections", responses=_ERRORS)
async def list_collections(request: Request, ctx: Context) -> dict:
    found = await _run(memory_of(request).store.collections.list, ctx.principal)
    return {"object": "list", "data": [c.to_json() for c in found]}


@router.post("/collections", status_code=201, responses={**_ERRORS, 409: {
    "description": "a collection of that name exists"}})
async def create_collection(body: CollectionIn, request: Request, ctx: Context) -> dict:
    memory = memory_of(request)
    made = await _run(memory.store.collections.create, ctx.principal, body.name,
                      embedder=memory.settings.embedder, description=body.description,
                      cloud=body.cloud)
    return made.to_json()


@router.get("/collections/{name}", responses=_ERRORS)
async def get_collection(name: str, request: Request, ctx: Context, owner: Owner = None) -> dict:
    found = await _run(memory_of(request).store.collections.get, ctx.principal,
                       _name(name, owner))
    return found.to_json()


@router.patch("/collections/{name}", responses=_ERRORS)
async def update_collection(name: str, body: CollectionUpdate, request: Request,
                            ctx: Context, owner: Owner = None) -> dict:
    found = await _run(memory_of(request).store.collections.update, ctx.principal,
                       _name(name, owner), description=body.description, cloud=body.cloud)
    return found.to_json()


@router.delete("/collections/{name}", responses=_ERRORS)
async def delete_collection(name: str, request: Request, ctx: Context,
                            owner: Owner = None) -> dict:
    gone = await _run(memory_of(request).store.collections.delete, ctx.principal,
                      _name(name, owner))
    return {"deleted": True, **gone}


@router.get("/collections/{name}/shares", responses=_ERRORS)
async def list_shares(name: str, request: Request, ctx: Context, owner: Owner = None) -> dict:
    users = await _run(memory_of(request).store.collections.shared_with, ctx.principal,
                       _name(name, owner))
    return {"object": "list", "data": users}


@router.put("/collections/{name}/shares/{user}", responses=_ERRORS)
async def share(name: str, user: str, request: Request, ctx: Context,
                owner: Owner = None) -> dict:
    await _run(memory_of(request).store.collections.share, ctx.principal, _name(name, owner),
               user)
    return {"collection": name, "user": user, "shared": True}


@router.delete("/collections/{name}/shares/{user}", responses=_ERRORS)
async def unshare(name: str, user: str, request: Request, ctx: Context,
                  owner: Owner = None) -> dict:
    await _run(memory_of(request).store.collections.share, ctx.principal, _name(name, owner),
               user, shared=False)
    return {"collection": name, "user": user, "shared": False}


# -- documents ----------------------------------------------------------------------------------


@router.get("/collections/{name}/documents", responses=_ERRORS)
async def list_documents(name: str, request: Request, ctx: Context, owner: Owner = None,
                         status: Annotated[str | None, Query(
                             pattern="^(pending|indexing|ready|failed)$")] = None,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                         offset: Annotated[int, Query(ge=0, le=2**62)] = 0) -> dict:
    docs = await _run(memory_of(request).store.collections.documents, ctx.principal,
                      _name(name, owner), status=status, limit=limit + 1, offset=offset)
    return {"object": "list", "data": [d.to_json() for d in docs[:limit]],
            "has_more": len(docs) > limit}


@router.post("/collections/{name}/documents", status_code=202, responses={
    **_ERRORS, 201: {"description": "indexed (with ?wait=true)"},
    413: {"description": "larger than the server's body limit"}})
async def upload_document(name: str, request: Request, ctx: Context,
                          file: Annotated[UploadFile, File(description="the document")],
                          wait: bool = False, owner: Owner = None) -> Any:
    """Upload a document (Markdown, text, HTML, PDF, DOCX, code, JSON, CSV). A document of the
    same file name is replaced; an unchanged one is left as it is."""
    memory = memory_of(request)
    data = await file.read()
    if not data:
        raise InvalidRequestError("the file is empty", field="file")
    doc = await memory.upload(ctx.principal, _name(name, owner), data,
                              file.filename or "upload", file.content_type, wait=wait)
    return JSONResponse(doc.to_json(), status_code=201 if wait else 202)


@router.get("/collections/{name}/documents/{document_id}", responses=_ERRORS)
async def get_document(name: str, document_id: DocumentId, request: Request, ctx: Context,
                       owner: Owner = None) -> dict:
    doc = await _run(memory_of(request).store.collections.document, ctx.principal,
                     _name(name, owner), document_id)
    return doc.to_json()


@router.delete("/collections/{name}/documents/{document_id}", responses=_ERRORS)
async def delete_document(name: str, document_id: DocumentId, request: Request, ctx: Context,
                          owner: Owner = None) -> dict:
    chunks = await _run(memory_of(request).store.collections.delete_document, ctx.principal,
                        _name(name, owner), document_id)
    return {"id": document_id, "deleted": True, "chunks": chunks}


@router.get("/collections/{name}/review", responses=_ERRORS)
async def review(name: str, request: Request, ctx: Context, owner: Owner = None,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict:
    """The collection's chunks rated down more often than up, most down first."""
    found = await _run(memory_of(request).review, ctx.principal, _name(name, owner), limit)
    return {"object": "list", "data": found}


@router.get("/collections/{name}/indexes", responses=_ERRORS)
async def list_indexes(name: str, request: Request, ctx: Context, owner: Owner = None) -> dict:
    """The collection's memory indexes, the live one first: its embedder, dimension, status and
    version, and how many of the collection's chunks each has vectors for (an index being built
    by `tenshu memory reindex` fills up beside the live one, then replaces it)."""
    found = await _run(memory_of(request).store.collections.indexes, ctx.principal,
                       _name(name, owner))
    return {"object": "list", "data": [i.to_json() for i in found]}


# -- chunks -------------------------------------------------------------------------------------


@router.get("/chunks/{chunk_id}", responses=_ERRORS)
async def get_chunk(chunk_id: ChunkId, request: Request, ctx: Context) -> dict:
    """One chunk (a search hit's or an answer's source: its `chunk_id`) of a collection the
    caller owns or has been shared: its text, title, section, page and character span, its
    document and its collection."""
    found = await _run(memory_of(request).store.collections.chunk, ctx.principal, chunk_id)
    return found.to_json()


# -- search -------------------------------------------------------------------------------------


@router.post("/search", responses=_ERRORS)
async def search(body: SearchIn, request: Request, ctx: Context) -> dict:
    """Hybrid search (keywords and meaning) over collections the caller may read; hits best
    first, each with its source, title, section, page, text, score and chunk id."""
    names = [body.collection] if isinstance(body.collection, str) else body.collection
    hits = await memory_of(request).search(ctx.principal, body.query, names, k=body.k,
                                           source=body.source, since=body.since,
                                           until=body.until)
    return {"hits": [h.to_json() for h in hits]}
