"""/arena: one prompt, two anonymous answers side by side, a vote, and the leaderboard.

The page is served with the contenders (api/arena.contenders) and the viewer's own leaderboard
(api/arena.board, through the store with the viewer's principal), as JSON for its script
(static/js/arena.js). The script does the round through the API like any client: two streamed
chat requests with `x-tenshu-conversation: arena`, then the vote as preference feedback, then
the leaderboard again from /tenshu/v1/arena/leaderboard; it draws the board (a dot and its
interval per contender, and the head-to-head bars) as SVG.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from tenshu.api.arena import board, contenders
from tenshu.web.login import to_login, viewer_of
from tenshu.web.pages import render

router = APIRouter(include_in_schema=False)


@router.get("/arena")
async def arena_page(request: Request):
    viewer = await viewer_of(request)
    if viewer is None:
        return to_login(request)
    state = request.app.state
    data = {"contenders": contenders(state.gateway), "admin": viewer.principal.admin,
            "board": await run_in_threadpool(board, state.store, viewer.principal)}
    return render(request, viewer, "arena.html", active="arena", data=data)
