"""/admin: the server's people and parts, for admins: users, API keys, everyone's browser
sessions, the models served and their health, the configuration check, and the log of admins'
reads of others' records.

The page is rendered here from the store functions /tenshu/v1 calls (api/tenshu.py for users
and keys, api/admin.py for sessions, models and the check); static/js/admin.js makes the changes
through that API and then swaps in the sections as the server renders them again. A new API key
exists in one answer only: the script shows it in a dialog, and nothing keeps it. A member
asking for /admin gets the page anyone gets for what is not theirs.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from tenshu.api.admin import loaded, running_check
from tenshu.web.login import to_login, viewer_of
from tenshu.web.pages import not_found, render

router = APIRouter(include_in_schema=False)
_OWNED = (("conversations", "conversation"), ("turns", "turn"), ("feedback", "feedback item"),
          ("collections", "memory collection"), ("keys", "API key"))


@router.get("/admin")
async def admin_page(request: Request):
    viewer = await viewer_of(request)
    if viewer is None:
        return to_login(request)
    if not viewer.principal.admin:
        return not_found(request, viewer, "page")
    state = request.app.state
    data = await run_in_threadpool(_read, state, viewer.principal)
    return render(request, viewer, "admin.html", active="admin", models=loaded(state.gateway),
                  current=viewer.session.id, **data)


def _read(state, principal) -> dict:
    """Everything the page shows that is read from the database (or the disk)."""
    store = state.store
    people = [(user, usage := store.users.usage(user.name), _what_goes(user.name, usage))
              for user in store.users.list()]
    return {"people": people, "keys": store.keys.list(),
            "sessions": [(s, browser(s.user_agent))
                         for s in store.sessions.list(principal, everyone=True)],
            "reads": store.users.admin_reads(50), "config": running_check(state)}


def _what_goes(name: str, usage: dict[str, int]) -> str:
    """What removing a user removes, in words, for the confirmation."""
    parts = [f"{usage[k]} {one}{'' if usage[k] == 1 else 's'}" for k, one in _OWNED
             if usage.get(k)]
    owned = (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else
             parts[0] if parts else "nothing stored")
    return (f"Remove {name}? Everything of theirs goes with them: {owned}. Their sessions end "
            "at once. This cannot be undone.")


_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"),
             ("Chromium/", "Chromium"), ("HeadlessChrome/", "Headless Chrome"),
             ("Chrome/", "Chrome"), ("Safari/", "Safari"))
_SYSTEMS = (("Android", "Android"), ("iPhone", "iOS"), ("iPad", "iPadOS"),
            ("Windows", "Windows"), ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"),
            ("Linux", "Linux"))


def browser(user_agent: str | None) -> str:
    """A User-Agent as a person names it ("Firefox 128 on Linux"); the raw string is kept for
    its tooltip."""
    if not user_agent:
        return "unknown"
    token, name = next(((t, label) for t, label in _BROWSERS if t in user_agent), ("", ""))
    if not name:
        return user_agent[:40]
    version = re.search(re.escape(token) + r"(\d+)", user_agent)
    if version and name != "Safari":  # Safari/NNN is its engine's build, not its version
        name += f" {version[1]}"
    system = next((label for t, label in _SYSTEMS if t in user_agent), "")
    return f"{name} on {system}" if system else name
