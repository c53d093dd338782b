"""Create, list and revoke the API keys that clients use to reach the server.

  tenshu keys create --name laptop    make a key; it is printed once, alone on stdout
  tenshu keys create --name ana-phone --user ana
                                      a key of user ana (default: the owner, the first admin)
  tenshu keys create --name notes --private
                                      a private key: its requests never leave this machine
  tenshu keys create --name ci --record never
                                      a key whose chat requests are never recorded
  tenshu keys list [--user ana]       every key: name, user, prefix, created, last used, ...
  tenshu keys revoke laptop           revoke a key by its name or its prefix (tsk-AbCdEfGh)

Only a hash of each key is kept (in $TENSHU_HOME/state.db), so a lost key cannot be shown
again: revoke it and create another. A revoked key stops working within a second, on a running
server too. In a script: KEY=$(tenshu keys create --name ci)
"""

from __future__ import annotations

import sys
from datetime import datetime

from tenshu.cli.table import print_table
from tenshu.store import KeyRecord, open_store
from tenshu.store.people import RECORDING


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="make a new key and print it (once)")
    create.add_argument("--name", required=True,
                        help="who or what uses the key (unique among active keys)")
    create.add_argument("--user", help="whose key it is (default: the owner)")
    create.add_argument("--private", action="store_true",
                        help="its requests are served only by local models, never sent to a "
                             "cloud upstream")
    create.add_argument("--record", choices=RECORDING,
                        help="which of its chat requests are recorded (default: its user's "
                             "setting)")
    create.add_argument("--memory", metavar="COLLECTION", action="append", default=[],
                        help="its chat requests retrieve from this memory collection "
                             "(repeatable)")
    listing = actions.add_parser("list", help="show every key, revoked ones too")
    listing.add_argument("--user", help="only this user's")
    revoke = actions.add_parser("revoke", help="revoke a key")
    revoke.add_argument("target", metavar="NAME_OR_PREFIX", help="the key's name or prefix")


def main(args) -> int:
    with open_store() as store:
        if args.action == "create":
            record, key = store.keys.create(args.name, user=args.user, private=args.private,
                                            record=args.record, memory=tuple(args.memory))
            print(key)
            print(f"tenshu keys: this is the only time the key {record.name!r} is shown; keep "
                  "it somewhere safe (it can be revoked, not recovered)", file=sys.stderr)
            if record.private:
                print("tenshu keys: it is private: its requests never leave this machine",
                      file=sys.stderr)
        elif args.action == "list":
            print_keys(store.keys.list(args.user))
        else:
            record = store.keys.revoke(args.target)
            print(f"revoked {record.name} ({record.prefix})")
    return 0


def print_keys(records: list[KeyRecord]) -> None:
    if not records:
        print("no API keys yet: tenshu keys create --name NAME")
        return
    header = ("NAME", "USER", "PREFIX", "CREATED", "LAST USED", "PRIVATE", "STATUS")
    print_table(header, [(r.name, r.user_name or "-", r.prefix, _when(r.created_at),
                          _when(r.last_used_at), "yes" if r.private else "no",
                          "active" if r.active else "revoked") for r in records])


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment else "never"
