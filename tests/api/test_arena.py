"""/tenshu/v1/arena on a live server with two contenders (the built-in model, and a route `auto`
over it): the contenders, and the leaderboards of ana's, ben's and everyone's votes. A round is
two chat requests with `x-tenshu-conversation: arena`; a vote is preference feedback."""

from __future__ import annotations

import httpx
import pytest

from tenshu.config import DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME
from tenshu.config.routing import ModelSpec, RouteSpec
from tests.api.live import live_server

# The built-in checkpoint, and a route over it: two contenders for the price of one model.
TWO_CONTENDERS = {
    "models": (ModelSpec(DEFAULT_MODEL_NAME, str(DEFAULT_MODEL_DIR)),),
    "tiers": (("small", (DEFAULT_MODEL_NAME,)),),
    "routes": (RouteSpec("auto", tier="small"),),
}


@pytest.fixture(scope="module")
def arena(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("arena") / "state.db", embedder=False,
                     **TWO_CONTENDERS) as live:
        store = live.server.store
        for name, role in (("ana", "member"), ("ben", "member"), ("boss", "admin")):
            store.users.add(name, role=role)
        live.keys = {name: store.keys.create(f"{name}-key", user=name)[1]
                     for name in ("ana", "ben", "boss")}
        yield live


def client(live, who: str) -> httpx.Client:
    return httpx.Client(base_url=live.base_url, timeout=120,
                        headers={"Authorization": f"Bearer {live.keys[who]}"})


def play(c: httpx.Client, a: str, b: str, preference: str, prompt: str = "hello") -> dict:
    """One round: both answers to one prompt, recorded as arena turns, and the vote."""
    turns = []
    for model in (a, b):
        r = c.post("/v1/chat/completions", headers={"x-tenshu-conversation": "arena"}, json={
            "model": model, "max_tokens": 8, "messages": [{"role": "user", "content": prompt}]})
        assert r.status_code == 200, r.text
        turns.append(r.headers["x-tenshu-turn"])
    r = c.post("/tenshu/v1/feedback", json={"kind": "preference", "turn_id": turns[0],
                                            "other_turn_id": turns[1],
                                            "preference": preference})
    assert r.status_code == 200, r.text
    return r.json()


def board(c: httpx.Client, **params) -> dict:
    r = c.get("/tenshu/v1/arena/leaderboard", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_contenders_are_the_chat_models_and_routes(arena):
    with client(arena, "ana") as c:
        r = c.get("/tenshu/v1/arena/contenders")
    assert r.status_code == 200
    assert r.json()["data"] == [{"name": DEFAULT_MODEL_NAME, "kind": "model"},
                                {"name": "auto", "kind": "route"}]


def test_a_board_before_any_vote_is_empty(arena):
    with client(arena, "boss") as c:
        empty = board(c)
    assert empty["contenders"] == [] and empty["pairs"] == [] and empty["votes"] == 0
    assert empty["scope"] == "mine" and empty["method"] == "bradley-terry"


def test_the_leaderboard_counts_the_callers_own_votes(arena):
    with client(arena, "ana") as ana:
        for a, b in ((DEFAULT_MODEL_NAME, "auto"), ("auto", DEFAULT_MODEL_NAME),
                     (DEFAULT_MODEL_NAME, "auto")):
            play(ana, a, b, "a" if a == "auto" else "b")  # ana always prefers auto
        play(ana, "auto", DEFAULT_MODEL_NAME, "both_bad")
        mine = board(ana)
        assert board(ana) == mine  # the same votes, the same board
    assert mine["votes"] == 4
    first, second = mine["contenders"]
    assert (first["name"], second["name"]) == ("auto", DEFAULT_MODEL_NAME)
    assert (first["games"], first["wins"], first["losses"], first["both_bad"]) == (4, 3, 0, 1)
    assert first["low"] <= first["rating"] <= first["high"]
    assert first["rating"] > 1000 > second["rating"]
    (pair,) = mine["pairs"]
    assert (pair["a"], pair["b"], pair["games"], pair["a_wins"], pair["b_wins"],
            pair["both_bad"]) == ("auto", DEFAULT_MODEL_NAME, 4, 3, 0, 1)
    assert pair["a_expected"] > 0.5

    # the votes are ordinary preference feedback on two arena turns of ana's
    with client(arena, "ana") as ana:
        feedback = ana.get("/tenshu/v1/feedback").json()["data"]
        arenas = ana.get("/tenshu/v1/conversations", params={"kind": "arena",
                                                              "limit": 100}).json()["data"]
        chats = ana.get("/tenshu/v1/conversations").json()["data"]
    assert [f["kind"] for f in feedback] == ["preference"] * 4
    assert len(arenas) == 8 and chats == []


def test_bens_board_does_not_count_anas_votes(arena):
    with client(arena, "ben") as ben:
        assert board(ben)["votes"] == 0
        play(ben, DEFAULT_MODEL_NAME, "auto", "a")
        his = board(ben)
    assert his["votes"] == 1
    assert {c["name"]: c["games"] for c in his["contenders"]} == {DEFAULT_MODEL_NAME: 1,
                                                                  "auto": 1}
    assert his["contenders"][0]["name"] == DEFAULT_MODEL_NAME  # he preferred it; ana did not
    with client(arena, "ana") as ana:
        assert board(ana)["votes"] == 4


def test_everyones_board_is_for_admins_only(arena):
    with client(arena, "ben") as ben:
        refused = ben.get("/tenshu/v1/arena/leaderboard", params={"scope": "all"})
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"
    with client(arena, "boss") as boss:
        everyone = board(boss, scope="all")
        own = board(boss)
    assert everyone["scope"] == "all" and everyone["votes"] == 5  # ana's 4 and ben's 1
    assert {c["name"]: c["games"] for c in everyone["contenders"]} == {DEFAULT_MODEL_NAME: 5,
                                                                       "auto": 5}
    assert own["votes"] == 0


def test_a_vote_between_answers_of_one_contender_is_kept_but_not_rated(arena):
    with client(arena, "boss") as boss:
        play(boss, "auto", "auto", "tie")
        own = board(boss)
    assert own["votes"] == 0 and own["skipped"] == 1
    assert own["contenders"] == [{"name": "auto", "rating": None, "low": None, "high": None,
                                  "rank": None, "games": 0, "wins": 0, "ties": 0, "losses": 0,
                                  "both_bad": 0}]


def test_the_arena_needs_a_key_and_a_known_scope(arena):
    for path in ("/tenshu/v1/arena/leaderboard", "/tenshu/v1/arena/contenders"):
        assert httpx.get(arena.base_url + path).status_code == 401
    with client(arena, "ana") as ana:
        bad = ana.get("/tenshu/v1/arena/leaderboard", params={"scope": "theirs"})
    assert 400 <= bad.status_code < 500 and bad.status_code != 404
