"""/chat: the conversation list and one conversation, server-rendered; static/js/chat.js does the
rest through the API (streaming answers, stop, regenerate, edit, feedback, rename, delete).

The list and the conversation are read with the viewer's principal through the same store
functions as /tenshu/v1/conversations (the owner is in the query): another user's conversation
id shows the not-found page, exactly as an id that never existed.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from tenshu.core.messages import from_dict
from tenshu.store.conversations import current
from tenshu.web.login import viewer_of
from tenshu.web.pages import not_found, render

router = APIRouter(include_in_schema=False)
LISTED = 200  # conversations in the side list (the newest; search reaches the rest)


@router.get("/chat")
async def chat_page(request: Request, q: str | None = None):
    return await _page(request, None, q)


@router.get("/chat/{conversation_id}")
async def conversation_page(request: Request, conversation_id: str, q: str | None = None):
    return await _page(request, conversation_id, q)


async def _page(request: Request, conversation_id: str | None, q: str | None):
    from tenshu.web.login import to_login

    viewer = await viewer_of(request)
    if viewer is None:
        return to_login(request)
    state = request.app.state
    if state.gateway.conversations is not None:
        await state.gateway.conversations.writer.settle()  # the last answer's turn is written
    store = state.store
    principal = viewer.principal
    query = (q or "").strip()[:200] or None

    def read():
        listed, more = store.conversations.list(principal, limit=LISTED, query=query)
        if conversation_id is None:
            return listed, more, None, None, {}, {}
        conversation = store.conversations.get(principal, conversation_id)
        turns = store.conversations.turns(principal, conversation_id)
        if conversation is None or turns is None:
            return listed, more, None, None, {}, {}
        turns = current(turns)
        ids = [t.id for t in turns]
        feedback, _ = store.feedback.list(principal, conversation_id=conversation_id,
                                          limit=1000)
        return (listed, more, conversation, turns, store.conversations.sources(principal, ids),
                _feedback_by_turn(feedback))

    listed, more, conversation, turns, sources, feedback = await run_in_threadpool(read)
    # the collections the person may name for memory (theirs, then those shared with them)
    collections = [c.name for c in await run_in_threadpool(store.collections.list, principal)]
    if conversation_id is not None and conversation is None:
        return not_found(request, viewer, "conversation")
    gateway = state.gateway
    models = [*gateway.router.deployments, *(r.name for r in gateway.router.routes)]
    return render(
        request, viewer, "chat.html", active="chat", conversations=listed, more=more,
        query=query or "", conversation=conversation,
        turns=[_turn_view(t, sources.get(t.id, []), feedback.get(t.id, {})) for t in turns or []],
        models=models, default_model=_default_model(gateway, models), collections=collections)


def _default_model(gateway, models: list[str]) -> str:
    names = [r.name for r in gateway.router.routes]
    return "auto" if "auto" in names else (models[0] if models else "")


def _feedback_by_turn(items) -> dict[str, dict]:
    """The latest rating and correction of each turn, for the buttons' state."""
    out: dict[str, dict] = {}
    for item in sorted(items, key=lambda f: f.created_at):
        seen = out.setdefault(item.turn_id, {})
        if item.kind == "rating":
            seen["rating"] = item.rating
        elif item.kind == "correction":
            seen["correction"] = item.text
    return out


def _text(message) -> str:
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


def _turn_view(turn, sources: list[dict], feedback: dict) -> dict:
    """What the template shows of a turn: what the person said, the answer, who served it."""
    said = [from_dict(m) for m in turn.messages]
    trace = json.loads(turn.trace) if turn.trace else {}
    answer = from_dict(turn.completion[0]) if turn.completion else None
    return {
        "id": turn.id,
        "request_id": turn.request_id,
        "system": next((_text(m) for m in said if m.role == "system"), ""),
        "user": [_text(m) for m in said if m.role == "user"],
        "answer": _text(answer) if answer is not None else "",
        "thinking": "\n\n".join(b.thinking for b in answer.content
                                  if getattr(b, "type", "") == "thinking") if answer else "",
        "model": turn.model,
        "route": turn.routed,
        "backend": turn.backend,
        "fallbacks": sum(a.get("outcome") == "error" for a in trace.get("attempts", [])),
        "stopped": bool(trace.get("stopped")),
        "ttft_ms": turn.ttft_ms,
        "duration_ms": turn.duration_ms,
        "output_tokens": turn.output_tokens,
        "sources": sources,
        "rating": feedback.get("rating"),
        "correction": feedback.get("correction"),
    }
