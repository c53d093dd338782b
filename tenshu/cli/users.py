"""Add, list and remove the people who use this tenshu, and set their passwords.

  tenshu users add ana                  a member: her own conversations and feedback only
  tenshu users add kim --admin          an admin: manages users and keys, may read any record
  tenshu users add ana --password       ...and set a password (asked twice; read from stdin
                                        when it is not a terminal), for the web UI's login
  tenshu users list                     every user: role, recording setting, password or not
  tenshu users passwd ana               set a new password
  tenshu users set ana --record always  record all her chat requests (request, always, never)
  tenshu users remove ana               says what would be removed, and asks (or --yes)

The first admin, `owner`, exists from the start: key-less requests on loopback act as them, and
the keys that existed before users did are theirs. Give a person a key with
`tenshu keys create --name NAME --user ana`.
"""

from __future__ import annotations

import asyncio
import getpass
import sys

from tenshu.cli.table import print_table
from tenshu.store import open_store
from tenshu.store.people import RECORDING, ROLES


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="an admin (default: a member)")
    add.add_argument("--password", action="store_true", help="set a password (asked for)")
    add.add_argument("--record", choices=RECORDING, default="request",
                     help="which chat requests are recorded (default: those that ask)")
    actions.add_parser("list", help="show every user")
    passwd = actions.add_parser("passwd", help="set a user's password")
    passwd.add_argument("name")
    set_ = actions.add_parser("set", help="change a user's role or recording setting")
    set_.add_argument("name")
    set_.add_argument("--role", choices=ROLES)
    set_.add_argument("--record", choices=RECORDING)
    remove = actions.add_parser("remove", help="remove a user and everything that is theirs")
    remove.add_argument("name")
    remove.add_argument("--yes", action="store_true", help="do not ask")


def main(args) -> int:
    with open_store() as store:
        users = store.users
        if args.action == "add":
            password = _new_password(args.name) if args.password else None
            user = users.add(args.name, role="admin" if args.admin else "member",
                             password=password, record=args.record)
            print(f"added {user.role} {user.name}")
        elif args.action == "list":
            _table(users.list())
        elif args.action == "passwd":
            users.update(args.name, password=_new_password(args.name))
            print(f"set the password of {args.name}")
        elif args.action == "set":
            user = users.update(args.name, role=args.role, record=args.record)
            print(f"{user.name}: {user.role}, records {user.record}")
        else:
            usage = users.usage(args.name)
            what = ", ".join(f"{count} {kind}" for kind, count in usage.items())
            print(f"removing {args.name} deletes everything that is theirs: {what}. Conversations"
                  " and what was derived from them cannot be brought back.", file=sys.stderr)
            if not args.yes and not _confirmed(f"remove {args.name}?"):
                print("nothing removed", file=sys.stderr)
                return 1
            user = users.get(args.name)
            removed = users.remove(args.name)
            if user is not None:
                removed |= _forget_tokens(str(user.id))
            print(f"removed {args.name}: " + ", ".join(f"{n} {k}" for k, n in removed.items()))
    return 0


def _forget_tokens(user_id: str) -> dict[str, int]:
    """The removed user's integration tokens (docs/integrations.md), when any are configured."""
    from tenshu.config import tenshu_home
    from tenshu.config.integrations import load_integrations
    from tenshu.integrations import Integration, forget_user, open_token_store

    specs = load_integrations().integrations
    if not specs:
        return {}
    store = open_token_store(tenshu_home())
    gone = asyncio.run(forget_user([Integration.from_spec(s) for s in specs], store, user_id))
    return {"integration tokens": gone}


def _new_password(name: str) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"password for {name}: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _confirmed(question: str) -> bool:
    if not sys.stdin.isatty():
        print("not asked (no terminal): pass --yes to remove", file=sys.stderr)
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _table(users) -> None:
    header = ("NAME", "ROLE", "RECORDS", "PASSWORD", "CREATED")
    print_table(header, [(u.name, u.role, u.record, "yes" if u.has_password else "no",
                          u.created_at.astimezone().strftime("%Y-%m-%d %H:%M")) for u in users])
