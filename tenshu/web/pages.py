"""Rendering a page: the templates, the headers every page carries, and the page guard.

Pages are Jinja2 templates, escaped by default, rendered with data read through the same store
functions /tenshu/v1 calls with the viewer's principal (so the same ownership checks, in SQL).
What a page does after it loads, its scripts do by calling the API itself (static/js/), with the
session cookie and the CSRF token in the page.

Every page carries a strict Content-Security-Policy: scripts and styles only from this server's
files (no inline script, no inline style, no eval), images only from here or data: URLs,
connections only back to this server, no framing. So even an answer whose Markdown slipped a
tag past the sanitizer could neither run code nor make the browser fetch from another host.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from tenshu import __version__
from tenshu.web.login import Viewer, set_session_cookie

CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
])
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on the
    # pages' own form posts, which the Origin check rightly refuses
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages hold a person's words and a CSRF token
}
NAV = [("chat", "Chat", "/chat"), ("arena", "Arena", "/arena"), ("memory", "Memory", "/memory"),
       ("runs", "Runs", "/runs"), ("inbox", "Inbox", "/inbox"),
       ("dashboard", "Dashboard", "/dashboard"), ("jobs", "Jobs", "/jobs"),
       ("admin", "Admin", "/admin")]
ADMINS_ONLY = {"jobs", "admin"}  # not in a member's top bar: those pages refuse them

_templates = Environment(
    loader=FileSystemLoader(str(resources.files("tenshu.web") / "templates")),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True, lstrip_blocks=True,
)


def render(request: Request, viewer: Viewer | None, template: str, *, status: int = 200,
           **data: Any) -> HTMLResponse:
    """The page `template` for `viewer` (None: a page shown before login)."""
    session = viewer.session if viewer is not None else None
    nav = [(key, label, href) for key, label, href in NAV
           if key not in ADMINS_ONLY or (session is not None and session.role == "admin")]
    html = _templates.get_template(template).render(
        request=request, session=session, csrf=session.csrf if session else "", nav=nav,
        version=__version__, **data)
    response = HTMLResponse(html, status_code=status, headers=HEADERS)
    if viewer is not None and viewer.token:
        set_session_cookie(request, response, viewer.token)
    return response


def not_found(request: Request, viewer: Viewer, what: str) -> HTMLResponse:
    """The page for a record that is missing, or not the viewer's: the two look the same."""
    return render(request, viewer, "error.html", status=404, title="Not found",
                  message=f"There is no {what} here, or it is not yours.")
