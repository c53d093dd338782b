"""Check a tenshu.toml without starting the server.

  tenshu config check                      $TENSHU_HOME/tenshu.toml
  tenshu config check path/to/tenshu.toml

Reads the file as `tenshu serve` would: any problem is one message naming the key, and the
command exits 1. A valid file gets a summary: each model (where it runs, local or cloud), the
tiers, the routes and their rules, the budgets; and warnings for what would fail later (a
checkpoint directory that is not there, an api_key_env that is not set). The report is
config/check.py's, which the admin page shows for the running server. docs/config.md documents
every key.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tenshu.config import config_path, load_server_settings
from tenshu.config.check import check


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    command = actions.add_parser("check", help="validate a tenshu.toml and summarize it")
    command.add_argument("file", nargs="?", type=Path, help="default: $TENSHU_HOME/tenshu.toml")


def main(args) -> int:
    file = args.file or config_path()
    if not file.exists():
        raise ValueError(f"{file}: no such file")
    report = check(load_server_settings(file))
    print(f"{file}: valid")
    print(f"\nserver: {report.server}")
    print(f"store: {report.store}")
    print("\nmodels:")
    for m in report.models:
        upstream = f" as {m.upstream_model}" if m.upstream_model else ""
        price = f", {m.price}" if m.price else ""
        print(f"  {m.name:<20} {m.locality:<5} {m.backend}{upstream}: {m.where}{price}")
    if report.tiers:
        print("\ntiers:")
        for tier, members in report.tiers:
            print(f"  {tier:<20} {', '.join(members)}")
    for route in report.routes:
        also = f" (also {', '.join(route.also)})" if route.also else ""
        print(f"\nroute {route.name}{also}: default tier {route.tier}")
        for i, (when, tier) in enumerate(route.rules):
            print(f"  rule {i}: {when} -> {tier}")
        if route.sentinel:
            print(f"  {route.sentinel}")
        print(f"  fallback: {route.fallback}")
    for budget in report.budgets:
        print(f"\nbudget: {budget}")
    print(f"\nprivate requests: {report.private}")
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0
