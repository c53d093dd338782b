"""The web UI: tenshu's own pages, served at / on the API's port.

    login.py       login, logout, the session cookie, the page guard
    pages.py       rendering: templates, the Content-Security-Policy, the error page
    chat.py        /chat: conversations, streaming answers, feedback
    arena.py       /arena: two anonymous answers, a vote, the leaderboard
    memory.py      /memory: collections, uploads, documents, search
    dashboard.py   /dashboard and /traces/{id}: what the server did, in pictures
    runs.py        /runs and /runs/{id}: agent runs, their approvals, one run followed live
    inbox.py       /inbox: the notifications the context engine's runs left for the viewer
    jobs.py        /jobs: the scheduler's jobs, their runs and logs; run, pause, resume (admins)
    admin.py       /admin: users, keys, sessions, models, the config check
    templates/     Jinja2, escaped by default
    static/        the pages' scripts and styles, and vendored libraries (static/vendor)

The pages read through the same store functions as /tenshu/v1, with the viewer's principal; the
scripts in static/js call the API itself, with the session cookie and its CSRF token. Nothing
loads from outside the machine.
"""

from __future__ import annotations

from importlib import resources

from fastapi.staticfiles import StaticFiles

from tenshu.web.login import LoginThrottle


def install(app) -> None:
    """Mount the pages and their static files on the API's app."""
    from tenshu.web import admin, arena, chat, dashboard, inbox, jobs, login, memory, runs

    app.state.login_throttle = LoginThrottle()
    app.mount("/static", StaticFiles(directory=str(resources.files("tenshu.web") / "static")),
              name="static")
    for module in (login, chat, arena, memory, runs, inbox, dashboard, jobs, admin):
        app.include_router(module.router)
