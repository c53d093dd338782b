"""The arena's leaderboard (learn/leaderboard.py): Bradley–Terry ratings from votes, bootstrap
intervals, head-to-head counts, and the cases with too little to go on."""

from __future__ import annotations

import math
import random

import pytest

from tenshu.learn.leaderboard import BASE, SCALE, leaderboard


def votes(first: str, second: str, /, **outcomes: int) -> list[tuple[str, str, str]]:
    return [(first, second, preference) for preference, n in outcomes.items() for _ in range(n)]


def by_name(board) -> dict:
    return {s.name: s for s in board.standings}


def test_a_clearly_stronger_contender_ranks_first():
    board = leaderboard([*votes("big", "small", a=40, b=8, tie=6),
                         *votes("small", "mid", a=10, b=30, tie=4),
                         *votes("mid", "big", a=9, b=30, both_bad=3)])
    assert [s.name for s in board.standings] == ["big", "mid", "small"]
    big, mid, small = board.standings
    assert big.rating > mid.rating > small.rating
    assert big.rank == 1 and small.rank == 3  # their intervals are apart
    assert big.low > small.high
    # the average contender is 1000
    assert sum(s.rating for s in board.standings) / 3 == pytest.approx(BASE)


def test_the_fit_is_the_maximum_likelihood_with_half_a_virtual_win_each_way():
    # two contenders: the rating gap is the log-odds of (wins + 1/2) to (losses + 1/2)
    board = leaderboard(votes("x", "y", a=14, b=5, tie=2))
    x, y = by_name(board)["x"], by_name(board)["y"]
    gap = math.log((14 + 1 + 0.5) / (5 + 1 + 0.5))  # a tie is half a win to each side
    assert x.rating - y.rating == pytest.approx(SCALE * gap, abs=0.5)
    assert board.pairs[0].a_expected == pytest.approx(1 / (1 + math.exp(-gap)), abs=1e-3)


def test_counts_per_contender_and_per_pair():
    board = leaderboard([*votes("m", "n", a=3, b=1, tie=2, both_bad=1), ("n", "m", "a"),
                         ("n", "o", "b")])
    m, n = by_name(board)["m"], by_name(board)["n"]
    assert (m.games, m.wins, m.losses, m.ties, m.both_bad) == (8, 3, 2, 2, 1)
    assert (n.games, n.wins, n.losses, n.ties, n.both_bad) == (9, 2, 4, 2, 1)
    pair = next(p for p in board.pairs if {p.a, p.b} == {"m", "n"})
    assert (pair.a, pair.b, pair.games, pair.a_wins, pair.b_wins, pair.ties, pair.both_bad) == \
        ("m", "n", 8, 3, 2, 2, 1)
    assert board.votes == 9 and board.skipped == 0 and board.connected


def test_intervals_contain_the_estimate_and_narrow_with_more_votes():
    few = leaderboard(votes("p", "q", a=7, b=3))
    many = leaderboard(votes("p", "q", a=70, b=30))
    for board in (few, many):
        for s in board.standings:
            assert s.low <= s.rating <= s.high
    width = {name: [by_name(b)[name].high - by_name(b)[name].low for b in (few, many)]
             for name in ("p", "q")}
    for name, (wide, narrow) in width.items():
        assert narrow < wide / 2, (name, wide, narrow)


def test_a_few_identical_votes_do_not_look_certain():
    board = leaderboard(votes("p", "q", a=3))
    p = by_name(board)["p"]
    assert p.high - p.low > 100  # Elo points: three votes say little


def test_the_same_votes_in_any_order_give_the_same_board():
    ballots = [*votes("u", "v", a=5, b=4, tie=1), *votes("v", "w", a=2, both_bad=2),
               *votes("w", "u", b=3, a=1)]
    first = leaderboard(ballots)
    shuffled = ballots[:]
    random.Random(7).shuffle(shuffled)
    assert leaderboard(shuffled) == first
    assert leaderboard(ballots).to_json() == first.to_json()
    # which side a contender was shown on does not matter either
    swapped = [(b, a, {"a": "b", "b": "a"}.get(p, p)) for a, b, p in ballots]
    assert leaderboard(swapped).to_json() == first.to_json()


def test_no_votes_is_an_empty_board():
    board = leaderboard([])
    assert board.standings == [] and board.pairs == [] and board.votes == 0
    assert board.to_json()["contenders"] == []


def test_votes_between_answers_of_one_contender_list_it_unrated():
    board = leaderboard(votes("solo", "solo", a=2, tie=1))
    (solo,) = board.standings
    assert solo.name == "solo" and solo.rating is None and solo.rank is None
    assert solo.games == 0 and board.skipped == 3 and board.votes == 0
    assert board.to_json()["contenders"][0]["rating"] is None


def test_a_single_vote_and_an_undefeated_contender_get_finite_ratings():
    board = leaderboard([("a", "b", "a")])
    a, b = by_name(board)["a"], by_name(board)["b"]
    assert math.isfinite(a.rating) and a.rating > b.rating
    unbeaten = by_name(leaderboard(votes("a", "b", a=50)))["a"]
    assert math.isfinite(unbeaten.rating) and math.isfinite(unbeaten.high)


def test_groups_never_compared_are_flagged():
    board = leaderboard([*votes("a", "b", a=5, b=1), *votes("c", "d", a=1, b=5)])
    assert not board.connected
    ratings = by_name(board)
    # each group sits around the average: nothing says how a compares with c
    assert ratings["a"].rating > BASE > ratings["b"].rating
    assert ratings["d"].rating > BASE > ratings["c"].rating
    assert all(math.isfinite(s.low) and math.isfinite(s.high) for s in board.standings)


def test_a_bad_preference_is_refused():
    with pytest.raises(ValueError, match="preference"):
        leaderboard([("a", "b", "c")])
