"""The adapters `tenshu learn` trained: their versions, and which one is in service.

  tenshu adapters list                 every adapter's versions: method, loss, the gate's verdict,
                                       and which one is in service (*)
  tenshu adapters promote NAME [VN]    put a version (default: the newest) in service
  tenshu adapters rollback NAME        put the version served before back in service
  tenshu adapters rm NAME VN           delete a version (not the one in service)
  tenshu adapters import NAME DIR      a new version from an adapter trained elsewhere: a PEFT
                [--base MODEL]         LoRA folder, or an mlx-lm one (converted to PEFT's format)
                [--promote]            ...and put it in service

Versions live under $TENSHU_HOME/adapters/NAME/vN/ and are never written over.
"""

from __future__ import annotations

from tenshu.cli.table import print_table
from tenshu.config import tenshu_home
from tenshu.learn.registry import Registry


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="every adapter and its versions")
    promote = actions.add_parser("promote", help="put a version in service")
    promote.add_argument("name")
    promote.add_argument("version", nargs="?")
    rollback = actions.add_parser("rollback", help="back to the version served before")
    rollback.add_argument("name")
    rm = actions.add_parser("rm", help="delete a version")
    rm.add_argument("name")
    rm.add_argument("version")
    imported = actions.add_parser("import", help="a new version from a PEFT or mlx-lm adapter")
    imported.add_argument("name")
    imported.add_argument("source", metavar="DIR")
    imported.add_argument("--base", default="", help="the model it adapts (a checkpoint folder)")
    imported.add_argument("--promote", action="store_true", help="put it in service")


def registry() -> Registry:
    return Registry(tenshu_home() / "adapters")


def main(args) -> int:
    adapters = registry()
    if args.action == "list":
        rows = [(("* " if v.serving else "  ") + v.name, v.version,
                 v.manifest.get("method", "?"), _loss(v.manifest),
                 str((v.manifest.get("verdict") or {}).get("decision", "not gated")))
                for name in adapters.names() for v in adapters.versions(name)]
        if not rows:
            print("no adapters yet: train one with `tenshu learn sft|dpo|kto`")
            return 0
        print_table(("ADAPTER", "VERSION", "METHOD", "LOSS", "VERDICT"), rows)
    elif args.action == "promote":
        found = adapters.promote(args.name, args.version)
        print(f"{found.name} {found.version} is in service")
    elif args.action == "rollback":
        now = adapters.rollback(args.name)
        print(f"{args.name} {now} is in service" if now else
              f"{args.name}: no version is in service now")
    elif args.action == "import":
        from tenshu.learn.imports import import_adapter

        found = import_adapter(adapters, args.name, args.source, base=args.base)
        print(f"imported {found.manifest['format']} adapter as {found.name} {found.version}")
        if args.promote:
            adapters.promote(args.name, found.version)
            print(f"{found.name} {found.version} is in service")
    else:
        adapters.remove(args.name, args.version)
        print(f"removed {args.name} {args.version}")
    return 0


def _loss(manifest: dict) -> str:
    loss = manifest.get("metrics", {}).get("loss")
    return f"{loss:.4f}" if isinstance(loss, int | float) else "-"
