"""/tenshu/v1/arena: who may be asked in an arena round, and the leaderboard of the votes.

    GET /tenshu/v1/arena/contenders     the chat models and routes this server serves
    GET /tenshu/v1/arena/leaderboard    ?scope=mine (default) | all (admins only): Bradley–Terry
                                        ratings with 95% intervals, and the head-to-head pairs

A round itself is two ordinary chat requests with `x-tenshu-conversation: arena` (each answer is
a turn of an arena conversation) and a vote is ordinary feedback of kind `preference`
(POST /tenshu/v1/feedback): nothing here writes. The votes are read by store/arena.py, with the
caller's principal, and rated by learn/leaderboard.py.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request

from tenshu.api.tenshu import _ERRORS, Context, _run
from tenshu.learn.leaderboard import leaderboard
from tenshu.store.arena import votes
from tenshu.store.people import Principal

router = APIRouter(prefix="/tenshu/v1/arena", tags=["arena"])
Scope = Literal["mine", "all"]


def contenders(gateway) -> list[dict]:
    """The names a round may ask for: every chat model, then every route (not the embedders)."""
    router = gateway.router
    return [*({"name": name, "kind": "model"} for name in router.deployments),
            *({"name": route.name, "kind": "route"} for route in router.routes)]


def board(store, principal: Principal, scope: Scope = "mine") -> dict:
    """The leaderboard of the principal's votes (everyone's for scope `all`: admins only).
    Database I/O and numpy: not for the event loop."""
    found = votes(store.engine, principal, everyone=scope == "all")
    rated = leaderboard((v.a, v.b, v.preference) for v in found)
    return {"object": "arena.leaderboard", "scope": scope, **rated.to_json()}


@router.get("/contenders", responses=_ERRORS)
async def list_contenders(request: Request, ctx: Context) -> dict:
    return {"object": "list", "data": contenders(request.app.state.gateway)}


@router.get("/leaderboard", responses=_ERRORS)
async def get_leaderboard(request: Request, ctx: Context, scope: Scope = "mine") -> dict:
    return await _run(board, request.app.state.store, ctx.principal, scope)
