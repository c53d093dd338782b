"""The arena page in a real browser: a prompt, two anonymous answers streamed side by side, a vote
stored as a preference between the two turns, the names revealed, and the leaderboard moved.

The server here has two contenders (the built-in model, and a route `auto` over it), so this
module brings its own `site` (it overrides conftest's, and `new_page` logs in to it)."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from tenshu.config import DEFAULT_MODEL_NAME
from tenshu.store.people import Principal
from tests.api.live import live_server
from tests.api.test_arena import TWO_CONTENDERS
from tests.web.conftest import shot, with_people

TINY, ROUTE = DEFAULT_MODEL_NAME, "auto"
LONG = 180_000  # ms: two answers on a busy two-core machine


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Like conftest's site (keys required; ana, ben, boss with passwords), with two
    contenders."""
    with live_server(tmp_path_factory.mktemp("arena-web") / "state.db", max_num_seqs=8,
                     embedder=False, **TWO_CONTENDERS) as live:
        yield with_people(live)


def api(site, who: str, path: str, **params) -> dict:
    r = httpx.get(site.base_url + path, params=params, timeout=60,
                  headers={"Authorization": f"Bearer {site.keys[who]}"})
    assert r.status_code == 200, r.text
    return r.json()


def ask(page, prompt: str) -> tuple:
    """Send `prompt` with Enter; wait for both answers. The two answer cards."""
    page.fill("#arena-prompt", prompt)
    page.press("#arena-prompt", "Enter")
    cards = page.locator("#arena-answer-a"), page.locator("#arena-answer-b")
    for card in cards:
        expect(card.locator(".arena-status")).to_have_text("done", timeout=LONG)
        expect(card.locator(".arena-text")).not_to_be_empty()
    return cards


def test_a_round_a_vote_and_the_leaderboard(site, new_page):
    page, _ = new_page("ana")
    page.goto(site.base_url + "/arena")
    expect(page.locator("#arena-board")).to_contain_text("No votes yet")
    expect(page.locator("#arena-scope")).to_have_count(0)  # everyone's votes: admins only

    a, b = ask(page, "hello, who are you?")
    # anonymous until the vote
    expect(a.locator(".arena-title")).to_have_text("Answer A")
    expect(b.locator(".arena-title")).to_have_text("Answer B")
    expect(page.locator(".arena-name")).to_have_count(0)
    expect(page.locator("#arena-prompt")).to_be_empty()
    expect(page.locator("#arena-asked")).to_have_text("hello, who are you?")

    page.click("button[data-vote=a]")
    expect(page.locator(".arena-question")).to_have_text("Your vote: A is better.")
    name_a = a.locator(".arena-name").inner_text()
    name_b = b.locator(".arena-name").inner_text()
    assert {name_a, name_b} == {TINY, ROUTE}  # two different contenders, at random
    expect(page.locator("button[data-vote]:enabled")).to_have_count(0)

    # stored: a preference of A over B, between the two answers' turns
    principal = Principal.of(site.server.store.users.get("ana"))
    (vote,), _ = site.server.store.feedback.list(principal)
    assert (vote.kind, vote.preference) == ("preference", "a")
    arenas = api(site, "ana", "/tenshu/v1/conversations", kind="arena")["data"]
    assert len(arenas) == 2  # each answer is a turn of an arena conversation of its own
    model_of = {}
    for conversation in arenas:
        (turn,) = api(site, "ana", f"/tenshu/v1/conversations/{conversation['id']}")["messages"]
        model_of[turn["id"]] = turn["model"]
    assert (model_of[vote.turn_id], model_of[vote.other_turn_id]) == (name_a, name_b)
    # ...and not among the chats
    assert api(site, "ana", "/tenshu/v1/conversations")["data"] == []

    # the leaderboard on the page: both contenders, one game each, the winner first
    rows = page.locator(".arena-standings tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-name", name_a)
    for name in (name_a, name_b):
        row = page.locator(f'.arena-standings tr[data-name="{name}"]')
        expect(row.locator(".arena-games")).to_have_text("1")
        expect(row.locator("svg.arena-ci")).to_have_count(1)
    expect(page.locator(".arena-pairs tbody tr")).to_have_count(1)
    shot(page, "arena")


def test_chosen_contenders_on_a_narrow_screen(site, new_page):
    page, _ = new_page("ben", width=375, height=800)
    page.goto(site.base_url + "/arena")
    # Esc stops both answers (unless they were quicker): a stopped round takes no vote
    page.fill("#arena-prompt", "tell me the whole history of the castle " * 10)
    page.press("#arena-prompt", "Enter")
    page.keyboard.press("Escape")
    expect(page.locator("#arena-send")).to_be_enabled(timeout=LONG)
    states = {page.locator(f"#arena-answer-{side} .arena-status").inner_text()
              for side in "ab"}
    assert states <= {"stopped", "done"}
    if "stopped" in states:
        expect(page.locator("button[data-vote]:enabled")).to_have_count(0)

    page.click("#arena-choose summary")
    page.select_option("#arena-pick-a", ROUTE)
    page.select_option("#arena-pick-b", TINY)
    a, b = ask(page, "what is a castle keep?")
    box_a, box_b = a.bounding_box(), b.bounding_box()
    assert box_b["y"] >= box_a["y"] + box_a["height"] - 1  # stacked, not side by side
    assert box_a["width"] <= 375

    page.click("button[data-vote=tie]")
    expect(a.locator(".arena-name")).to_have_text(ROUTE)
    expect(a.locator(".arena-title")).to_contain_text(f"served by {TINY}")
    expect(b.locator(".arena-name")).to_have_text(TINY)
    # ben's board has his one vote, not ana's too
    for name in (ROUTE, TINY):
        row = page.locator(f'.arena-standings tr[data-name="{name}"]')
        expect(row.locator(".arena-games")).to_have_text("1")
    (pair,) = api(site, "ben", "/tenshu/v1/arena/leaderboard")["pairs"]
    assert pair["ties"] == 1
    shot(page, "arena-narrow")


def test_an_admin_sees_everyones_votes(site, new_page):
    page, _ = new_page("boss")
    page.goto(site.base_url + "/arena")
    expect(page.locator("#arena-board")).to_contain_text("No votes yet")
    page.select_option("#arena-scope", "all")
    for name in (ROUTE, TINY):
        row = page.locator(f'.arena-standings tr[data-name="{name}"]')
        expect(row.locator(".arena-games")).to_have_text("2")  # ana's vote and ben's
    expect(page.locator("#arena-board")).to_contain_text("2 votes by everyone")
