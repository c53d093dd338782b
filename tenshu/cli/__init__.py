"""The `tenshu` command: one entry point, one subcommand per job. Each command's docstring is
its --help."""

from __future__ import annotations

import argparse
import importlib
import sys

from tenshu.core.errors import TenshuError

# Each command is a module of this package; their own imports of the engine (torch) happen
# in main(), so `tenshu users list` or `tenshu --help` starts in a fraction of a second.
COMMANDS = ("serve", "chat", "run", "models", "pull", "train", "bench", "users", "keys",
            "feedback", "export", "ingest", "memory", "learn", "adapters", "jobs",
            "config", "trace", "routes", "agent", "runs", "connect", "mcp", "integrations")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with `only`, just that command's part (its module alone is imported:
    some bring the engine, and torch takes seconds to load)."""
    parser = argparse.ArgumentParser(
        prog="tenshu",
        description="tenshu: a sovereign, always-on AI server on your own machine.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in (only,) if only else COMMANDS:
        module = importlib.import_module(f"tenshu.cli.{name}")
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
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
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
