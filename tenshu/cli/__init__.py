"""The `tenshu` command: one entry point, one subcommand per job. Each command's docstring is
its --help."""

from __future__ import annotations

import argparse
import sys

from tenshu.cli import bench, chat, config, keys, routes, run, serve, trace, train
from tenshu.core.errors import TenshuError

COMMANDS = {"serve": serve, "chat": chat, "run": run, "train": train, "bench": bench,
            "keys": keys, "config": config, "trace": trace, "routes": routes}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tenshu",
        description="tenshu: a sovereign, always-on AI server on your own machine.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(
            name,
            help=doc.splitlines()[0] if doc else None,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(handler=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        return 130
    except (TenshuError, ValueError, OSError) as exc:
        print(f"tenshu {args.command}: error: {exc}", file=sys.stderr)
        return 1
