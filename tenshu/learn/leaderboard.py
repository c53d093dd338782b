"""The arena's leaderboard: Bradley–Terry ratings from pairwise votes, with bootstrap intervals.

Each vote compares two contenders (models or routes, by the name a client asked for) on one
prompt: `a` (the first answer was better), `b`, `tie`, or `both_bad`. Bradley–Terry gives each
contender a strength θ so that P(i beats j) = σ(θi − θj); the strengths are fitted by maximum
likelihood over every vote, as LMSYS's Chatbot Arena does:

    a, b       a win for one side
    tie        half a win to each side
    both_bad   also half a win to each (as in Chatbot Arena's "tie (bothbad)"): two bad answers
               say nothing about which model is stronger. It is counted apart as well, so the
               board shows how often a contender's answers were both judged bad.

A vote between two answers of the same name compares a contender with itself: the contender is
listed (unrated until it meets another), but the vote moves nothing and is counted in `skipped`
(such pairs are still worth keeping as preference data for training).

Virtual votes regularise the fit, the same in the estimate and in its intervals: every pair
that played gets half a virtual win each way (so an undefeated contender has a finite rating, and
one vote moves a rating by about 95 points, not to infinity), and a far weaker pull towards the
average (1/1000 of a drawn game per contender) fixes the ratings of groups never compared with
each other, which the votes alone leave free. Ratings are on the Elo scale, 1000 +
400·log10(strength), centred so 1000 is the average rated contender: 400 points apart means 10:1
odds.

The 95% intervals come from `rounds` bootstrap resamples of the votes (percentiles of the
refitted ratings), with a fixed seed: the same votes, in any order, give the same board. The
resampling is the Bayesian bootstrap (random Dirichlet weights on the votes rather than draws
with replacement: the same thing for many votes) over the votes and the virtual ones, because
plain resampling of three identical votes gives the same three votes every time: an interval of
zero width, where the truth is that three votes say little. A percentile interval can miss the
point estimate on lopsided data; it is widened to include it.
`rank` is 1 + the number of contenders surely better (their interval lies wholly above).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

PREFERENCES = ("a", "b", "tie", "both_bad")
BASE = 1000.0
SCALE = 400.0 / math.log(10.0)  # natural-log strength to Elo points
PSEUDO = 0.5  # virtual wins each way per pair that played
RIDGE = 1e-3  # virtual drawn games per contender against an average one
ROUNDS = 200
SEED = 20240611
LEVEL = 0.95
_OUTCOMES = ("x", "y", "tie", "both_bad")  # from the alphabetically first name's side


@dataclass(frozen=True, slots=True)
class Standing:
    name: str
    rating: float | None  # None: no games against another contender yet
    low: float | None  # the 95% interval
    high: float | None
    rank: int | None
    games: int
    wins: int
    ties: int
    losses: int
    both_bad: int

    def to_json(self) -> dict:
        return {**asdict(self), **{k: None if getattr(self, k) is None
                                   else round(getattr(self, k), 1)
                                   for k in ("rating", "low", "high")}}


@dataclass(frozen=True, slots=True)
class Pair:
    """Head to head: `a` is the alphabetically first name."""

    a: str
    b: str
    games: int
    a_wins: int
    b_wins: int
    ties: int
    both_bad: int
    a_expected: float  # the fitted P(a beats b)

    def to_json(self) -> dict:
        return {**asdict(self), "a_expected": round(self.a_expected, 3)}


@dataclass(frozen=True, slots=True)
class Board:
    standings: list[Standing]  # best first
    pairs: list[Pair]  # most played first
    votes: int  # the votes that counted
    skipped: int  # votes between two answers of the same contender
    connected: bool  # every contender is compared with every other, directly or through others
    rounds: int
    seed: int

    def to_json(self) -> dict:
        return {"method": "bradley-terry", "scale": "1000 + 400*log10(strength)",
                "interval": LEVEL, "rounds": self.rounds, "seed": self.seed,
                "votes": self.votes, "skipped": self.skipped, "connected": self.connected,
                "contenders": [s.to_json() for s in self.standings],
                "pairs": [p.to_json() for p in self.pairs]}


def leaderboard(votes: Iterable[tuple[str, str, str]], *, rounds: int = ROUNDS,
                seed: int = SEED) -> Board:
    """The board for `votes`, each (name of answer A, name of answer B, preference)."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    votes = list(votes)
    for _, _, preference in votes:
        if preference not in PREFERENCES:
            raise ValueError(f"a preference is one of {', '.join(PREFERENCES)}, "
                             f"not {preference!r}")
    names = sorted({n for a, b, _ in votes for n in (a, b)})
    index = {n: i for i, n in enumerate(names)}
    k = len(names)
    # counts[x, y, outcome] for x < y: every vote turned to the first name's side, so the board
    # does not depend on the order of the votes or on which side a contender was shown
    counts = np.zeros((k, k, len(_OUTCOMES)), dtype=np.int64)
    skipped = 0
    for a, b, preference in votes:
        if a == b:
            skipped += 1
            continue
        flip = a > b
        x, y = (index[b], index[a]) if flip else (index[a], index[b])
        outcome = {"a": "y" if flip else "x", "b": "x" if flip else "y"}.get(preference,
                                                                             preference)
        counts[x, y, _OUTCOMES.index(outcome)] += 1
    xs, ys = np.nonzero(counts.sum(axis=2))
    cells = counts[xs, ys].reshape(-1)  # (pairs * 4,), pair-major
    total = int(cells.sum())
    smoothed = cells + np.tile([PSEUDO, PSEUDO, 0.0, 0.0], len(xs))

    played = counts.sum(axis=2)  # (k, k), games per pair (x < y)
    games = played.sum(axis=0) + played.sum(axis=1)
    rated = games > 0
    theta = _fit(*_scores(smoothed[None, :]), xs, ys, k, rated)[0]
    boot = _fit(*_scores(_resample(smoothed, rounds, seed)), xs, ys, k, rated)  # (rounds, k)
    tail = (1 - LEVEL) / 2 * 100
    low = np.minimum(np.percentile(boot, tail, axis=0), theta) if k else theta
    high = np.maximum(np.percentile(boot, 100 - tail, axis=0), theta) if k else theta

    standings = []
    for i, name in enumerate(names):
        wins = int(counts[i, :, 0].sum() + counts[:, i, 1].sum())
        losses = int(counts[i, :, 1].sum() + counts[:, i, 0].sum())
        ties = int(counts[i, :, 2].sum() + counts[:, i, 2].sum())
        both_bad = int(counts[i, :, 3].sum() + counts[:, i, 3].sum())
        if rated[i]:
            better = int(np.sum(rated & (low > high[i] + 1e-9)))
            rating = (_elo(theta[i]), _elo(low[i]), _elo(high[i]), better + 1)
        else:
            rating = (None, None, None, None)
        standings.append(Standing(name, *rating, int(games[i]), wins, ties, losses, both_bad))
    standings.sort(key=lambda s: (s.rating is None, -(s.rating or 0.0), s.name))
    pairs = [Pair(names[x], names[y], int(played[x, y]), *map(int, counts[x, y]),
                  a_expected=float(_sigmoid(theta[x] - theta[y])))
             for x, y in zip(xs, ys, strict=True)]
    pairs.sort(key=lambda p: (-p.games, p.a, p.b))
    return Board(standings, pairs, total, skipped, _connected(k, xs, ys), rounds, seed)


def _scores(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(wins of the first name, games) per pair, for each row of cell counts (rows, pairs*4):
    a tie or a both-bad is half a win to each side."""
    c = cells.reshape(cells.shape[0], -1, len(_OUTCOMES)).astype(float)
    return c[..., 0] + 0.5 * (c[..., 2] + c[..., 3]), c.sum(axis=2)


def _resample(cells: np.ndarray, rounds: int, seed: int) -> np.ndarray:
    """`rounds` random reweightings (rounds, cells) of the (smoothed) vote counts, each with the
    same total: the Bayesian bootstrap, Dirichlet(counts)."""
    draws = np.zeros((rounds, cells.size))
    live = cells > 0
    if live.any():
        rng = np.random.default_rng(seed)
        draws[:, live] = rng.gamma(cells[live], size=(rounds, int(live.sum())))
        draws *= cells.sum() / draws.sum(axis=1, keepdims=True)
    return draws


def _fit(wins: np.ndarray, games: np.ndarray, xs: np.ndarray, ys: np.ndarray, k: int,
         rated: np.ndarray) -> np.ndarray:
    """Strengths θ (rows, k), centred on the `rated` contenders, for each row of (wins, games)
    per pair (rows, pairs): the maximum of the log-likelihood

        Σ wins·log σ(θx − θy) + (games − wins)·log σ(θy − θx) + RIDGE/2·Σ log σ(θi) + log σ(−θi)

    by Newton's method, every bootstrap row at once. The ridge term makes it strictly concave,
    so there is one maximum, and Newton finds it in a few steps."""
    rows = wins.shape[0]
    design = np.zeros((len(xs), k))  # (pairs, k): +1 for the first name, -1 for the second
    design[np.arange(len(xs)), xs] = 1.0
    design[np.arange(len(xs)), ys] = -1.0
    theta = np.zeros((rows, k))
    for _ in range(100):
        p = _sigmoid(theta @ design.T)  # (rows, pairs)
        s = _sigmoid(theta)  # (rows, k)
        gradient = (wins - games * p) @ design + RIDGE * (0.5 - s)
        # the negated Hessian: the pairs' weighted graph Laplacian, plus the ridge's diagonal
        curvature = np.einsum("rp,pi,pj->rij", games * p * (1 - p), design, design)
        curvature[:, np.arange(k), np.arange(k)] += RIDGE * s * (1 - s)
        step = np.linalg.solve(curvature, gradient[..., None])[..., 0]
        largest = np.abs(step).max(axis=1, keepdims=True, initial=0.0)  # (rows, 1)
        # far from the maximum (a lopsided resample), steps are capped so Newton cannot overshoot
        theta += step * np.minimum(1.0, 2.0 / np.maximum(largest, 1e-300))
        if largest.max(initial=0.0) < 1e-9:
            break
    if not rated.any():
        return theta
    return theta - theta[:, rated].mean(axis=1, keepdims=True)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))


def _elo(theta: float) -> float:
    return BASE + SCALE * float(theta)


def _connected(k: int, xs: np.ndarray, ys: np.ndarray) -> bool:
    parent = list(range(k))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for x, y in zip(xs, ys, strict=True):
        parent[root(int(x))] = root(int(y))
    return len({root(i) for i in range(k)}) <= 1
