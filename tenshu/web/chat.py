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

from tenshu.api.arena import contenders
from tenshu.api.tenshu import message_markdown
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

    def read() -> dict:
        """Everything the page shows, read in one trip to the thread pool."""
        listed, more = store.conversations.list(principal, limit=LISTED, query=query)
        page = {"conversations": listed, "more": more, "conversation": None, "turns": [],
                # the collections the person may name for memory (theirs, then shared ones)
                "collections": [c.name for c in store.collections.list(principal)]}
        if conversation_id is None:
            return page
        conversation = store.conversations.get(principal, conversation_id)
        turns = store.conversations.turns(principal, conversation_id)
        if conversation is None or turns is None:
            return page
        turns = current(turns)
        sources = store.conversations.sources(principal, [t.id for t in turns])
        feedback, _ = store.feedback.list(principal, conversation_id=conversation_id,
                                          limit=1000)
        rated = _feedback_by_turn(feedback)
        page["conversation"] = conversation
        page["turns"] = [_turn_view(t, sources.get(t.id, []), rated.get(t.id, {}))
                         for t in turns]
        return page

    page = await run_in_threadpool(read)
    if conversation_id is not None and page["conversation"] is None:
        return not_found(request, viewer, "conversation")
    models = [c["name"] for c in contenders(state.gateway)]
    return render(request, viewer, "chat.html", active="chat", query=query or "",
                  models=models, default_model=_default_model(state.gateway, models), **page)


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


def _turn_view(turn, sources: list[dict], feedback: dict) -> dict:
    """What the template shows of a turn: what the person said, the answer, who served it."""
    said = [from_dict(m) for m in turn.messages]
    trace = json.loads(turn.trace) if turn.trace else {}
    answer = from_dict(turn.completion[0]) if turn.completion else None
    return {
        "id": turn.id,
        "request_id": turn.request_id,
        "system": next((message_markdown(m) for m in said if m.role == "system"), ""),
        "user": [message_markdown(m) for m in said if m.role == "user"],
        "answer": message_markdown(answer) if answer is not None else "",
        "thinking": "\n\n".join(b.thinking for b in answer.content
                                  if getattr(b, "type", "") == "thinking") if answer else "",
        "model": turn.model,
        "route": turn.routed,
        "backend": turn.backend,
        "adapter": turn.adapter,
        "fallbacks": sum(a.get("outcome") == "error" for a in trace.get("attempts", [])),
        "stopped": bool(trace.get("stopped")),
        "ttft_ms": turn.ttft_ms,
        "duration_ms": turn.duration_ms,
        "output_tokens": turn.output_tokens,
        "sources": sources,
        "rating": feedback.get("rating"),
        "correction": feedback.get("correction"),
    }
