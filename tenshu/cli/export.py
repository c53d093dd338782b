"""Write everything tenshu keeps of one user, as JSON, for them to keep.

  tenshu export --user ana                   to standard output
  tenshu export --user ana --out ana.json

The user (name, role, settings), their keys (names and prefixes; a key itself is never kept),
their conversations with every turn, and their feedback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tenshu.core.errors import NotFoundError
from tenshu.store import Principal, open_store


def add_arguments(parser) -> None:
    parser.add_argument("--user", required=True, help="whose record")
    parser.add_argument("--out", type=Path, help="a file (default: standard output)")


def main(args) -> int:
    with open_store() as store:
        user = store.users.get(args.user)
        if user is None:
            raise NotFoundError(f"no user named {args.user!r}")
        document = export_user(store, Principal.of(store.users.owner()), user)
    text = json.dumps(document, ensure_ascii=False, indent=1)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    return 0


def export_user(store, principal: Principal, user) -> dict:
    """Everything of `user`'s, read as `principal` (an admin, or the user)."""
    name = None if principal.user_id == user.id else user.name
    conversations = [
        {**conversation.to_json(), "messages": [
            t.to_json() for t in store.conversations.turns(principal, conversation.id,
                                                           user=name) or []]}
        for conversation in _every(store.conversations.list, principal, name)]
    feedback = [f.to_json() for f in _every(store.feedback.list, principal, name)]
    return {
        "object": "export",
        "user": {"name": user.name, "role": user.role, "record": user.record,
                 "created_at": user.created_at.isoformat()},
        "keys": [{"name": k.name, "prefix": k.prefix, "private": k.private,
                  "active": k.active, "created_at": k.created_at.isoformat()}
                 for k in store.keys.list(user.name)],
        "conversations": conversations,
        "feedback": feedback,
    }


def _every(list_page, principal: Principal, user: str | None) -> list:
    """Every item of a paged list (a store's `list`), page after page."""
    items, after = [], None
    while True:
        page, more = list_page(principal, user=user, limit=100, after=after)
        items += page
        if not more or not page:
            return items
        after = page[-1].id
