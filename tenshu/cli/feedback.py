"""Export the feedback people gave, with what it judged; import Open WebUI's.

  tenshu feedback export --format jsonl            everyone's, one JSON object a line
  tenshu feedback export --user ana --out ana.jsonl
  tenshu feedback import feedback-export.json      Open WebUI's export (Admin > Evaluations):
                                                   its ratings, and the chats they judged, as
                                                   the owner's conversations and feedback
  tenshu feedback import export.json --user ana    ...as ana's

Each exported line is one rating, correction, preference or comment: its kind and values, the
user, the model, the prompt (the conversation up to the judged turn, and the turn's messages),
the answer, and for a preference the other answer. Importing the same export twice imports
nothing new.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tenshu.store import Principal, open_store
from tenshu.store.feedback import export_rows
from tenshu.store.openwebui import import_ratings


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="write feedback as JSON lines")
    export.add_argument("--user", help="only this user's (default: everyone's)")
    export.add_argument("--format", choices=["jsonl"], default="jsonl")
    export.add_argument("--out", type=Path, help="a file (default: standard output)")
    imported = actions.add_parser("import", help="bring in Open WebUI's feedback export")
    imported.add_argument("file", type=Path)
    imported.add_argument("--user", help="whose it becomes (default: the owner)")


def main(args) -> int:
    with open_store() as store:
        owner = Principal.of(store.users.owner())
        if args.action == "export":
            names = [args.user] if args.user else [u.name for u in store.users.list()]
            out = args.out.open("w", encoding="utf-8") if args.out else sys.stdout
            lines = 0
            try:
                for name in names:
                    for row in export_rows(store.engine, owner, user=name):
                        out.write(json.dumps({**row, "user": name}, ensure_ascii=False) + "\n")
                        lines += 1
            finally:
                if args.out:
                    out.close()
            print(f"exported {lines} feedback item(s)", file=sys.stderr)
            return 0
        try:
            entries = json.loads(args.file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{args.file} is not JSON: {exc}") from None
        user = store.users.get(args.user) if args.user else store.users.owner()
        if user is None:
            raise ValueError(f"no user named {args.user!r}")
        counts = import_ratings(store.engine, Principal.of(user), entries)
        print(f"imported {counts['imported']} rating(s) as {user.name}'s; "
              f"{counts['already']} imported before, {counts['skipped']} skipped")
    return 0
