"""tenshu's own API, /tenshu/v1: the caller's record (conversations, feedback, settings) and, for
admins, users and keys. JSON in OpenAI's error shape; in the OpenAPI document.

    GET    /tenshu/v1/me                              who is asking, and their recording setting
    PATCH  /tenshu/v1/me                              {"record": "request"|"always"|"never"}
    GET    /tenshu/v1/conversations                   the caller's, newest first (limit, after, q,
                                                      kind=chat|arena)
    GET    /tenshu/v1/conversations/{id}              one, with its turns
    PATCH  /tenshu/v1/conversations/{id}              {"title": ...}
    DELETE /tenshu/v1/conversations/{id}              it, and what was derived from it
    GET    /tenshu/v1/conversations/{id}/export       ?format=json|markdown
    POST   /tenshu/v1/feedback                        a rating, correction, preference or comment
                                                      (a correction of an answer that drew on
                                                      memory becomes a memory item)
    GET    /tenshu/v1/feedback                        the caller's (limit, after, turn_id, ...)
    GET|POST /tenshu/v1/users, GET|PATCH|DELETE /tenshu/v1/users/{name}      admins only
    GET|POST /tenshu/v1/keys, DELETE /tenshu/v1/keys/{name or prefix}        admins only
    GET    /tenshu/v1/admin-reads                     admins' reads of others' records

Ownership is the store's (every query filters on the caller's owner_id): this module never looks
a record up and then checks whose it is. An admin reaches another user's record by naming them
(`?user=NAME`), and the store logs that. Reads wait for turns still in the record writer's queue,
so a conversation listed right after an answer has its turn.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from tenshu.api.context import request_context
from tenshu.core.errors import (
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    TenshuError,
)
from tenshu.core.messages import from_dict
from tenshu.gateway import RequestContext
from tenshu.store import Store
from tenshu.store.conversations import current

router = APIRouter(prefix="/tenshu/v1", tags=["tenshu"])
log = logging.getLogger("tenshu.api")
Context = Annotated[RequestContext, Depends(request_context)]
Limit = Annotated[int, Query(ge=1, le=100)]
User = Annotated[str | None, Query(description="an admin reads another user's record")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": why} for status, why in (
        (400, "bad input"), (401, "missing or invalid API key"), (403, "admins only"),
        (404, "not found (or not yours)"))}
# The ids a client sees for one request: a turn is found by any of them.
_ID_PREFIXES = ("turn_", "req_", "chatcmpl-", "cmpl-", "msg_")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class MeUpdate(_Body):
    record: Literal["request", "always", "never"]


class ConversationUpdate(_Body):
    title: str = Field(min_length=1, max_length=200)


class FeedbackIn(_Body):
    kind: Literal["rating", "correction", "preference", "comment"]
    turn_id: str = Field(min_length=1, max_length=80,
                         description="the turn judged: turn_..., or its request's id")
    rating: Literal[1, -1] | None = None
    text: str | None = Field(None, description="the reason, the correction or the comment")
    other_turn_id: str | None = Field(None, max_length=80)
    preference: Literal["a", "b", "tie", "both_bad"] | None = None


class UserIn(_Body):
    name: str
    role: Literal["admin", "member"] = "member"
    password: str | None = None
    record: Literal["request", "always", "never"] = "request"


class UserUpdate(_Body):
    role: Literal["admin", "member"] | None = None
    password: str | None = None
    record: Literal["request", "always", "never"] | None = None


class KeyIn(_Body):
    name: str
    user: str | None = Field(None, description="whose key (default: the local owner)")
    private: bool = False
    record: Literal["request", "always", "never"] | None = None


def store_of(request: Request) -> Store:
    return request.app.state.store


async def _run(fn, *args, **kwargs):
    """`fn` in the thread pool (the store does database I/O); its ValueErrors (a name taken, a
    password too short) are the client's: 400s."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except ValueError as exc:
        if isinstance(exc, TenshuError):
            raise
        raise InvalidRequestError(str(exc)) from None


async def _settled(request: Request) -> None:
    conversations = request.app.state.gateway.conversations
    if conversations is not None:
        await conversations.writer.settle()


def _page(items: list, more: bool) -> dict:
    data = [item.to_json() for item in items]
    return {"object": "list", "data": data, "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


def _admin(ctx: RequestContext) -> None:
    if not ctx.principal.admin:
        raise PermissionDeniedError("only an admin may manage users and keys")


def turn_id(given: str) -> str:
    """A turn's id from any id a client saw for its request (req_X, chatcmpl-X, msg_X...)."""
    bare = next((given[len(p):] for p in _ID_PREFIXES if given.startswith(p)), given)
    return "turn_" + bare


# -- the caller ---------------------------------------------------------------------------------


@router.get("/me", responses=_ERRORS)
async def me(request: Request, ctx: Context) -> dict:
    user = await _run(store_of(request).users.by_id, ctx.principal.user_id)
    return {"object": "user", "name": ctx.principal.name, "role": ctx.principal.role,
            "record": user.record if user else ctx.principal.record,
            "recording": ctx.principal.record,  # in force for this key
            "key": ctx.key_name}


@router.patch("/me", responses=_ERRORS)
async def update_me(body: MeUpdate, request: Request, ctx: Context) -> dict:
    await _run(store_of(request).users.update, ctx.principal.name, record=body.record)
    return await me(request, ctx)


# -- conversations ------------------------------------------------------------------------------


@router.get("/conversations", responses=_ERRORS)
async def list_conversations(request: Request, ctx: Context, limit: Limit = 20,
                             after: str | None = None, q: str | None = None,
                             kind: Literal["chat", "arena"] = "chat",
                             user: User = None) -> dict:
    await _settled(request)
    items, more = await _run(
        store_of(request).conversations.list, ctx.principal, user=user, limit=limit,
        after=after, query=q, kind=kind)
    return _page(items, more)


@router.get("/conversations/{conversation_id}", responses=_ERRORS)
async def get_conversation(conversation_id: str, request: Request, ctx: Context,
                           user: User = None) -> dict:
    conversation, turns = await _conversation(request, ctx, conversation_id, user)
    return {**conversation.to_json(), "messages": [t.to_json() for t in turns]}


async def _conversation(request: Request, ctx: RequestContext, conversation_id: str,
                        user: str | None):
    await _settled(request)
    store = store_of(request).conversations

    def read():
        conversation = store.get(ctx.principal, conversation_id, user=user)
        return conversation, store.turns(ctx.principal, conversation_id, user=user)

    conversation, turns = await _run(read)
    if conversation is None or turns is None:
        raise NotFoundError(f"conversation {conversation_id!r} not found")
    return conversation, turns


@router.patch("/conversations/{conversation_id}", responses=_ERRORS)
async def rename_conversation(conversation_id: str, body: ConversationUpdate,
                              request: Request, ctx: Context, user: User = None) -> dict:
    await _settled(request)
    renamed = await _run(store_of(request).conversations.rename, ctx.principal,
                         conversation_id, body.title, user=user)
    if renamed is None:
        raise NotFoundError(f"conversation {conversation_id!r} not found")
    return renamed.to_json()


@router.delete("/conversations/{conversation_id}", responses=_ERRORS)
async def delete_conversation(conversation_id: str, request: Request, ctx: Context,
                              user: User = None) -> dict:
    await _settled(request)
    removed = await _run(store_of(request).conversations.delete, ctx.principal,
                         conversation_id, user=user)
    if removed is None:
        raise NotFoundError(f"conversation {conversation_id!r} not found")
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True,
            "removed": removed}


@router.get("/conversations/{conversation_id}/export", responses=_ERRORS)
async def export_conversation(conversation_id: str, request: Request, ctx: Context,
                              format: Literal["json", "markdown"] = "json", user: User = None):
    conversation, turns = await _conversation(request, ctx, conversation_id, user)
    name = f"{conversation.id}.{'md' if format == 'markdown' else 'json'}"
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "markdown":
        return PlainTextResponse(markdown(conversation, turns), headers=disposition,
                                 media_type="text/markdown; charset=utf-8")
    return JSONResponse({**conversation.to_json(), "messages": [t.to_json() for t in turns]},
                        headers=disposition)


def markdown(conversation, turns) -> str:
    """A conversation as a person would read it: its title, then each message by role."""
    lines = [f"# {conversation.title}", ""]
    for turn in current(turns):
        for data in [*turn.messages, *turn.completion[:1]]:
            message = from_dict(data)
            role = "Assistant" if message.role == "assistant" else message.role.title()
            lines += [f"**{role}** ({turn.model})" if role == "Assistant" else f"**{role}**",
                      "", message_markdown(message) or "_(nothing)_", ""]
    return "\n".join(lines).rstrip() + "\n"


def message_markdown(message) -> str:
    """A message as Markdown: its text, its tool calls as code, tool results quoted ("" when
    it has none of these)."""
    parts = []
    for block in message.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "tool_use":
            parts.append(f"`{block.name}({json.dumps(block.input, ensure_ascii=False)})`")
        elif kind == "tool_result":
            parts.append(f"> {block.text}")
    return "\n\n".join(parts)


# -- feedback -----------------------------------------------------------------------------------


@router.post("/feedback", responses=_ERRORS)
async def add_feedback(body: FeedbackIn, request: Request, ctx: Context) -> dict:
    await _settled(request)
    item = await _run(
        store_of(request).feedback.add, ctx.principal, body.kind, turn_id(body.turn_id),
        rating=body.rating, text=body.text, preference=body.preference,
        other_turn_id=turn_id(body.other_turn_id) if body.other_turn_id else None)
    # a correction of an answer that drew on memory is kept as a memory item of its own; the
    # feedback is recorded whatever becomes of that (a 500 now would invite a second one)
    made: list[int] = []
    if (memory := request.app.state.memory) is not None:
        try:
            made = await memory.absorb(ctx.principal, item)
        except Exception:
            log.exception("feedback %s: the correction could not be kept in memory", item.id)
    return {**item.to_json(), "memory_chunks": made}


@router.get("/feedback", responses=_ERRORS)
async def list_feedback(request: Request, ctx: Context, limit: Limit = 50,
                        after: str | None = None, turn: str | None = None,
                        conversation_id: str | None = None, user: User = None) -> dict:
    items, more = await _run(
        store_of(request).feedback.list, ctx.principal, user=user, limit=limit, after=after,
        turn_id=turn_id(turn) if turn else None, conversation_id=conversation_id)
    return _page(items, more)


# -- users and keys (admins) --------------------------------------------------------------------


def _user_json(user) -> dict:
    return {"object": "user", "name": user.name, "role": user.role, "record": user.record,
            "has_password": user.has_password, "created_at": user.created_at.isoformat()}


def _key_json(key) -> dict:
    return {"object": "key", "name": key.name, "prefix": key.prefix, "user": key.user_name,
            "private": key.private, "record": key.record, "active": key.active,
            "created_at": key.created_at.isoformat(),
            "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None}


@router.get("/users", responses=_ERRORS)
async def list_users(request: Request, ctx: Context) -> dict:
    _admin(ctx)
    users = await _run(store_of(request).users.list)
    return {"object": "list", "data": [_user_json(u) for u in users]}


@router.post("/users", responses=_ERRORS)
async def add_user(body: UserIn, request: Request, ctx: Context) -> dict:
    _admin(ctx)
    user = await _run(store_of(request).users.add, body.name, role=body.role,
                      password=body.password, record=body.record)
    return _user_json(user)


@router.get("/users/{name}", responses=_ERRORS)
async def get_user(name: str, request: Request, ctx: Context) -> dict:
    _admin(ctx)
    users = store_of(request).users

    def read():
        user = users.get(name)
        return user, users.usage(name) if user else None

    user, usage = await _run(read)
    if user is None:
        raise NotFoundError(f"no user named {name!r}")
    return {**_user_json(user), "usage": usage}


@router.patch("/users/{name}", responses=_ERRORS)
async def update_user(name: str, body: UserUpdate, request: Request, ctx: Context) -> dict:
    _admin(ctx)
    user = await _run(store_of(request).users.update, name, role=body.role,
                      record=body.record, password=body.password)
    return _user_json(user)


@router.delete("/users/{name}", responses=_ERRORS)
async def remove_user(name: str, request: Request, ctx: Context) -> dict:
    _admin(ctx)
    await _settled(request)
    user = await _run(store_of(request).users.get, name)
    removed = await _run(store_of(request).users.remove, name)
    if (source := request.app.state.integrations) is not None and user is not None:
        from tenshu.integrations import forget_user

        removed["integration_tokens"] = await forget_user(source.integrations, source.store,
                                                          str(user.id))
    return {"name": name, "object": "user.deleted", "deleted": True, "removed": removed}


@router.get("/keys", responses=_ERRORS)
async def list_keys(request: Request, ctx: Context, user: str | None = None) -> dict:
    _admin(ctx)
    keys = await _run(store_of(request).keys.list, user)
    return {"object": "list", "data": [_key_json(k) for k in keys]}


@router.post("/keys", responses=_ERRORS)
async def create_key(body: KeyIn, request: Request, ctx: Context) -> dict:
    _admin(ctx)
    record, key = await _run(
        lambda: store_of(request).keys.create(body.name, user=body.user, private=body.private,
                                              record=body.record))
    return {**_key_json(record), "key": key}  # shown this once


@router.delete("/keys/{name_or_prefix}", responses=_ERRORS)
async def revoke_key(name_or_prefix: str, request: Request, ctx: Context) -> dict:
    _admin(ctx)
    record = await _run(store_of(request).keys.revoke, name_or_prefix)
    return _key_json(record)


@router.get("/admin-reads", responses=_ERRORS)
async def admin_reads(request: Request, ctx: Context, limit: Limit = 100) -> dict:
    _admin(ctx)
    rows = await _run(store_of(request).users.admin_reads, limit)
    return {"object": "list", "data": [{**r, "ts": r["ts"].isoformat()} for r in rows]}
