"""/inbox: the notifications the context engine's runs left for the viewer (docs/context.md).

    GET /inbox     the skeleton; static/js/inbox.js fills it from /tenshu/v1/inbox (the viewer's
                   own items only: the store filters by owner in SQL), marks read and deletes

The count of unread items in the top bar is every page's (static/js/nav.js asks the same route),
so this module reads nothing itself. A notification's body is a model's answer: inbox.js renders
it through common.js's sanitizing Markdown, as the chat page renders answers.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from tenshu.web.login import to_login, viewer_of
from tenshu.web.pages import render

router = APIRouter(include_in_schema=False)


@router.get("/inbox")
async def inbox_page(request: Request):
    viewer = await viewer_of(request)
    if viewer is None:
        return to_login(request)
    return render(request, viewer, "inbox.html", active="inbox")
