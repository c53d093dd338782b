"""Who is asking, for every router: the request's key or web session, the principal it acts
for, and the RequestContext the gateway reads (FastAPI dependencies).

A router imports these from here, never from api/app.py, which imports every router.
"""

from __future__ import annotations

import json
import re

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from tenshu.api.auth import session_of
from tenshu.api.errors import protocol_of
from tenshu.core.errors import AuthenticationError, InvalidRequestError
from tenshu.gateway import Gateway, RequestContext
from tenshu.store import CacheMiss, KeyRecord, Principal


async def authenticate(request: Request) -> KeyRecord | None:
    """The request's key (None: anonymous, and allowed, or a web UI session's: then
    `request.state.session` holds it); raises when it may not go on.

    The key is checked against the cache on the event loop, and only a miss (a database read)
    goes to a thread, so most requests do not hop through the thread pool."""
    if (session := await session_of(request)) is not None:
        request.state.session = session
        return None
    auth = request.app.state.auth
    try:
        return auth.check(request, cached_only=True)
    except CacheMiss:
        return await run_in_threadpool(auth.check, request)


async def principal_of(request: Request, key: KeyRecord | None) -> Principal:
    """Whom the request acts for: its key's user, its web session's, or (a key-less request,
    which only loopback without keys allows) the local owner."""
    if (session := getattr(request.state, "session", None)) is not None:
        return session.principal()
    if key is not None:
        if key.user_name is None:
            raise AuthenticationError("the API key's user no longer exists")
        return Principal(key.user_id, key.user_name, key.user_role or "member",
                         record=key.record or key.user_record or "request", key_id=key.id)
    users = request.app.state.users
    if users is None:
        return Principal(0, "owner", "admin")
    try:
        owner = users.owner(cached_only=True)
    except CacheMiss:
        owner = await run_in_threadpool(users.owner)
    return Principal.of(owner)


async def request_context(request: Request) -> RequestContext:
    """A FastAPI dependency: authenticate the request, check its text, and describe it for the
    gateway."""
    key = await authenticate(request)
    principal = await principal_of(request, key)
    multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
    if request.method in ("POST", "PATCH") and not multipart:  # a form's files are bytes
        _check_text(await request.body())  # read once: FastAPI has it already
    route = getattr(request.scope.get("route"), "path", request.url.path)
    return RequestContext(
        request_id=request.scope["state"]["request_id"],
        protocol=protocol_of(request.scope),
        route=route,
        key_id=key.id if key else None,
        tool_choice=request.headers.get("x-tenshu-tool-choice") or None,
        key_name=key.name if key else None,
        key_private=key.private if key else False,
        key_memory=tuple(key.memory.split(",")) if key and key.memory else (),
        # Without the API key: nothing past authentication needs it, and headers passed on (to
        # an upstream, into a log) must never carry it.
        headers={name.lower(): value for name, value in request.headers.items()
                 if name.lower() not in ("authorization", "x-api-key")},
        principal=principal,
    )


# A UTF-16 surrogate (U+D800-U+DFFF), as a JSON escape or as the bytes UTF-8 would give it
# (json.loads decodes bodies with "surrogatepass"): the only ways a body can carry a string
# that is not text.
_SURROGATE = re.compile(rb"\\u[dD][89abcdefABCDEF]|\xed[\xa0-\xbf]")


def _check_text(body: bytes) -> None:
    """Refuse a body whose strings hold a lone surrogate (`"\\ud800"`): JSON lets it through,
    but it is no character, and every tokenizer, encoder and database after this would fail
    on it. A valid pair (an emoji written as two escapes) is one character and passes."""
    if not _SURROGATE.search(body):
        return
    try:
        data = json.loads(body)
    except ValueError:
        return  # not JSON: the body's own validation says so
    if (where := _lone_surrogate(data)) is not None:
        raise InvalidRequestError(
            f"{where or 'the body'}: the text holds a lone UTF-16 surrogate (such as \\ud800), "
            "which is not a character; send valid Unicode", field=where or None)


def _lone_surrogate(value, where: str = "") -> str | None:
    """The path (`messages.0.content`) of the first string holding a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        path = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and _lone_surrogate(key) is not None:
            return path
        if (found := _lone_surrogate(item, path)) is not None:
            return found
    return None


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway
