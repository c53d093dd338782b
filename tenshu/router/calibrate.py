"""Calibration: choosing a route's sentinel threshold from data, as RouteLLM does.

A request whose sentinel score is at or above the threshold goes to the strong tier. Two ways
to pick it: from logged scores, the cut that sends a chosen share of traffic to the strong tier
(`threshold_for_share`, for a cost budget); or from prompts labelled simple / complex, the cut
that best separates them (`threshold_from_labels`, for quality). `read_labels` and
`score_labels` turn a labels file into the (score, label) pairs the second one needs.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from pathlib import Path

from tenshu.core.messages import Message
from tenshu.core.request import ChatRequest
from tenshu.router.sentinel import Sentinel

LABELS = ("simple", "complex")


def _distinct_desc(scores: Sequence[float]) -> list[float]:
    if any(math.isnan(s) for s in scores):
        raise ValueError("a score is NaN")
    return sorted(set(scores), reverse=True)


def _cut(values: list[float], j: int) -> float:
    """The threshold that sends the `j` highest distinct `values` to the strong tier: halfway
    between the lowest of them and the highest of the rest, so that a new score near either
    side falls on the side its neighbours did."""
    if j == 0:
        return math.nextafter(values[0], math.inf)  # above every score: nothing goes strong
    if j == len(values):
        return values[-1]
    low, high = values[j], values[j - 1]
    mid = (low + high) / 2
    return mid if mid > low else high


def threshold_for_share(scores: Sequence[float], strong_share: float) -> float:
    """The threshold at which `strong_share` (0..1) of these scores would go to the strong tier.
    Tied scores go the same way, so the share is the nearest one they allow; of two equally
    near, the one that sends more to the strong tier."""
    if not scores:
        raise ValueError("no scores to calibrate on")
    if not 0.0 <= strong_share <= 1.0:
        raise ValueError(f"the strong share must be between 0 and 1, got {strong_share}")
    values = _distinct_desc(scores)
    want = strong_share * len(scores)
    counts = {v: 0 for v in values}
    for s in scores:
        counts[s] += 1
    best_j, best_miss, strong = 0, want, 0  # j = 0: nothing strong
    for j, v in enumerate(values, 1):
        strong += counts[v]
        miss = abs(strong - want)
        if miss <= best_miss:
            best_j, best_miss = j, miss
    return _cut(values, best_j)


def threshold_from_labels(pairs: Sequence[tuple[float, bool]]) -> tuple[float, float]:
    """(threshold, balanced accuracy): the cut that best separates complex (True) from simple
    (False) requests by score. Balanced accuracy is the mean of the share of complex ones sent
    strong and the share of simple ones kept weak, so a skewed label mix cannot win by sending
    everything one way. Of equally good cuts, the one that sends more to the strong tier."""
    positives = sum(1 for _, label in pairs if label)
    negatives = len(pairs) - positives
    if not positives or not negatives:
        raise ValueError("calibrating on labels needs both simple and complex examples; got "
                         f"{negatives} simple and {positives} complex")
    values = _distinct_desc([s for s, _ in pairs])
    complex_at = {v: 0 for v in values}
    simple_at = {v: 0 for v in values}
    for s, label in pairs:
        (complex_at if label else simple_at)[s] += 1
    best_j, best = 0, 0.5  # j = 0: everything simple
    sent_complex = sent_simple = 0
    for j, v in enumerate(values, 1):
        sent_complex += complex_at[v]
        sent_simple += simple_at[v]
        accuracy = (sent_complex / positives + (negatives - sent_simple) / negatives) / 2
        if accuracy >= best:
            best_j, best = j, accuracy
    return _cut(values, best_j), best


def read_labels(path: Path) -> list[tuple[str, bool]]:
    """A JSONL file of {"prompt": "...", "label": "simple" | "complex"} lines, blank lines
    allowed, as (prompt, is complex) pairs."""
    labels = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {number}: not JSON ({e.msg})") from None
            prompt = item.get("prompt") if isinstance(item, dict) else None
            label = item.get("label") if isinstance(item, dict) else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f'{path}, line {number}: needs a non-empty "prompt" string')
            if label not in LABELS:
                raise ValueError(f'{path}, line {number}: "label" must be "simple" or '
                                 f'"complex", got {label!r}')
            labels.append((prompt, label == "complex"))
    return labels


async def score_labels(sentinel: Sentinel, labels: list[tuple[str, bool]],
                       concurrency: int = 8) -> list[tuple[float, bool]]:
    """Each labelled prompt scored by `sentinel` as a one-message chat; a few at a time, so a
    model sentinel's engine can batch them."""
    gate = asyncio.Semaphore(concurrency)

    async def one(prompt: str, label: bool) -> tuple[float, bool]:
        async with gate:
            request = ChatRequest(sentinel.name, [Message.of("user", prompt)])
            return await sentinel.score(request), label

    return list(await asyncio.gather(*(one(p, label) for p, label in labels)))
