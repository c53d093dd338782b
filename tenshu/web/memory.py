"""/memory: the viewer's collections and those shared with them, one collection's documents
(uploads with their ingest progress, search, delete, the reindex status), and one chunk.

    GET /memory                      the collections, and a form to make one
    GET /memory/{name}               one of the viewer's (?owner=ana: one ana shares with them)
    GET /memory/chunks/{id}          one chunk: a search hit's or an answer's source

The first view is read here through the store functions /tenshu/v1/memory calls, with the
viewer's principal (store/collections.py decides in SQL what they reach); static/js/memory.js
then uploads, polls, searches and deletes through the API itself. A collection or chunk the
viewer may not read is the not-found page, the same as one that does not exist.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from tenshu.core.errors import InvalidRequestError, NotFoundError
from tenshu.store.collections import split_name
from tenshu.web.login import to_login, viewer_of
from tenshu.web.pages import not_found, render

router = APIRouter(include_in_schema=False)
MAX_DOCUMENTS = 1000  # shown on a collection's page; more are there through the API


def _collections(request: Request):
    return request.app.state.store.collections


@router.get("/memory")
async def memory_page(request: Request):
    viewer = await viewer_of(request)
    if viewer is None:
        return to_login(request)
    found = await run_in_threadpool(_collections(request).list, viewer.principal)
    return render(request, viewer, "memory.html", active="memory",
                  own=[c for c in found if c.writable],
                  shared=[c for c in found if not c.writable])


@router.get("/memory/chunks/{chunk_id}")
async def chunk_page(request: Request, chunk_id: str):
    viewer = await viewer_of(request)
    if viewer is None:
        return to_login(request)
    # an id that cannot be a chunk's is as missing as one that is not the viewer's
    if not chunk_id.isascii() or not chunk_id.isdigit() or not 1 <= int(chunk_id) < 2**63:
        return not_found(request, viewer, "chunk")
    try:
        chunk = await run_in_threadpool(_collections(request).chunk, viewer.principal,
                                        int(chunk_id))
    except NotFoundError:
        return not_found(request, viewer, "chunk")
    return render(request, viewer, "chunk.html", active="memory", chunk=chunk)


@router.get("/memory/{name}")
async def collection_page(request: Request, name: str, owner: str | None = None):
    viewer = await viewer_of(request)
    if viewer is None:
        return to_login(request)
    store = _collections(request)
    ref = f"{owner}/{name}" if owner and owner != viewer.session.user_name else name
    principal = viewer.principal

    def read():  # one trip to the thread pool for the page
        collection = store.get(principal, ref)
        return (collection, store.documents(principal, ref, limit=MAX_DOCUMENTS),
                store.indexes(principal, ref),
                store.shared_with(principal, ref) if collection.writable else [])

    try:
        collection, documents, indexes, shares = await run_in_threadpool(read)
    except (NotFoundError, InvalidRequestError):  # a name no collection could have: missing too
        return not_found(request, viewer, "collection")
    bare = split_name(collection.name)[1]
    return render(request, viewer, "collection.html", active="memory", collection=collection,
                  bare=bare, owner=None if collection.writable else collection.owner,
                  documents=documents, indexes=indexes, shares=shares,
                  more=len(documents) >= MAX_DOCUMENTS)
