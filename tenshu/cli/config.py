"""Check a tenshu.toml without starting the server.

  tenshu config check                      $TENSHU_HOME/tenshu.toml
  tenshu config check path/to/tenshu.toml

Reads the file as `tenshu serve` would: any problem is one message naming the key, and the
command exits 1. A valid file gets a summary: each model (where it runs, local or cloud), the
tiers, the routes and their rules, the budgets; and warnings for what would fail later (a
checkpoint directory that is not there, an api_key_env that is not set). docs/config.md
documents every key.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tenshu.config import config_path, credential, load_server_settings


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate a tenshu.toml and summarize it")
    check.add_argument("file", nargs="?", type=Path, help="default: $TENSHU_HOME/tenshu.toml")


def main(args) -> int:
    file = args.file or config_path()
    if not file.exists():
        raise ValueError(f"{file}: no such file")
    settings = load_server_settings(file)
    routing = settings.routing
    warnings = []
    print(f"{file}: valid")
    print(f"\nserver: {settings.host}:{settings.port}")
    print(f"store: {_shown(settings.store)}")
    print("\nmodels:")
    for m in routing.models:
        where = m.path if m.backend == "embedded" else ", ".join(m.endpoints)
        upstream = f" as {m.upstream_model}" if m.upstream_model else ""
        price = (f", ${m.price_input:g}/${m.price_output:g} per M tokens"
                 if m.price_input or m.price_output else "")
        print(f"  {m.name:<20} {m.locality:<5} {m.backend}{upstream}: {where}{price}")
        if m.backend == "embedded" and not Path(m.path).is_dir():
            warnings.append(f"models.{m.name}: {m.path} is not a directory")
        if m.api_key_env and credential(m.api_key_env) is None:
            warnings.append(f"models.{m.name}: the environment variable {m.api_key_env} is "
                            "not set (the upstream will refuse tenshu until it is)")
    if routing.tiers:
        print("\ntiers:")
        for tier, members in routing.tiers:
            print(f"  {tier:<20} {', '.join(members)}")
    for route in routing.routes:
        also = f" (also {', '.join(route.models)})" if route.models else ""
        print(f"\nroute {route.name}{also}: default tier {route.tier}")
        for i, rule in enumerate(route.rules):
            print(f"  rule {i}: {rule.describe()} -> {rule.tier}")
        if route.simple_tier:
            print(f"  sentinel ({routing.router.sentinel or 'off'}): scores below "
                  f"{route.threshold:g} -> {route.simple_tier}")
        fallback = route.fallback if route.fallback is not None else "every other tier"
        print(f"  fallback: {', '.join(fallback) if route.fallback else fallback}")
    for budget in routing.budgets:
        limits = [f"{budget.daily_tokens:,} tokens" if budget.daily_tokens is not None else "",
                  f"${budget.daily_usd:g}" if budget.daily_usd is not None else ""]
        print(f"\nbudget: {budget.describe()}: {' and '.join(x for x in limits if x)} a day")
    r = routing.router
    print(f"\nprivate requests: {'everything (local_only)' if r.local_only else 'header, key, '}"
          f"{'' if r.local_only else ', '.join(r.private_content) or 'no content matchers'}")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def _shown(url: str) -> str:
    """A store URL without its password."""
    from sqlalchemy.engine import make_url

    if "://" not in url:
        return url
    return make_url(url).render_as_string(hide_password=True)
