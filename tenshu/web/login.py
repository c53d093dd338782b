"""Who is looking at a page: login (a password or an API key), logout, and the session cookie.

A page needs a session (store/sessions.py). Without one, it sends the browser to /login, except
where the API itself lets a key-less request in as the local owner (loopback, no keys): then
the page opens a session for the owner on the spot, so one person on their own machine goes
straight in, and the pages' changes still carry a CSRF token like anyone's.

The session cookie is HttpOnly and SameSite=Strict (and Secure under TLS), so no script and no
other site's page can use it; its CSRF token is in each page (a meta tag) for the page's scripts
to send back (api/auth.session_of checks it). The login form has a token of its own, paired
with a short-lived cookie, so no other page can log a browser in to an account of its choosing.

Failed logins are counted per name and per address: after `LoginThrottle.free` failures, each
attempt waits twice as long as the last (capped at five minutes), answered 429 with Retry-After
without checking the password, so guessing costs time, not just CPU.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tenshu.api.auth import SESSION_COOKIE
from tenshu.store.sessions import LIFETIME, Session

router = APIRouter(include_in_schema=False)
LOGIN_COOKIE = "tenshu_login"


class LoginThrottle:
    """Failed logins per name and per address; thread-safe, bounded."""

    def __init__(self, free: int = 3, cap: float = 300.0, max_entries: int = 10_000):
        self.free = free
        self.cap = cap
        self.max_entries = max_entries
        self._failures: dict[str, tuple[int, float]] = {}  # who -> (failures, last failure)
        self._lock = threading.Lock()

    def wait(self, *who: str) -> float:
        """Seconds before `who` may try again (0: now)."""
        now = time.monotonic()
        with self._lock:
            waits = [self._delay(n) - (now - at)
                     for n, at in (self._failures.get(w, (0, 0.0)) for w in who if w)]
        return max([0.0, *waits])

    def failed(self, *who: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) >= self.max_entries:
                self._failures.clear()
            for w in who:
                if w:
                    n, _ = self._failures.get(w, (0, 0.0))
                    self._failures[w] = (n + 1, now)

    def succeeded(self, *who: str) -> None:
        with self._lock:
            for w in who:
                self._failures.pop(w, None)

    def _delay(self, failures: int) -> float:
        return 0.0 if failures < self.free else min(self.cap, 2.0 ** (failures - self.free))


@dataclass
class Viewer:
    """The session a page is shown in; `token` is set when the page just opened it (the
    response sets the cookie)."""

    session: Session
    token: str | None = None

    @property
    def principal(self):
        return self.session.principal()


async def viewer_of(request: Request) -> Viewer | None:
    """The page's session; a new one for the local owner where the API needs no key; None when
    the browser must log in."""
    sessions = request.app.state.sessions
    token = request.cookies.get(SESSION_COOKIE)
    required = await run_in_threadpool(request.app.state.auth.is_required)
    if token:
        session = await run_in_threadpool(sessions.verify, token)
        # a session the local owner was let into ends once keys are required
        if session is not None and not (session.via == "local" and required):
            return Viewer(session)
    if required:
        return None
    owner = await run_in_threadpool(request.app.state.users.owner)
    session, token = await run_in_threadpool(
        sessions.create, owner.id, "local", address=_address(request),
        user_agent=request.headers.get("user-agent"))
    return Viewer(session, token)


def to_login(request: Request) -> RedirectResponse:
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(path, safe='/')}", status_code=303)


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=int(LIFETIME.total_seconds()),
                        path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def _address(request: Request) -> str:
    client = request.scope.get("client")
    return client[0] if client else ""


def _next(target: str | None) -> str:
    """Where to go after login: a path on this server only (never `//host` or `https://`)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/chat"
    return target


@router.get("/login")
async def login_page(request: Request, next: str | None = None):
    from tenshu.web.pages import render

    viewer = await viewer_of(request)
    if viewer is not None:  # logged in already, or the local owner
        response = RedirectResponse(_next(next), status_code=303)
        if viewer.token:
            set_session_cookie(request, response, viewer.token)
        return response
    return _login_form(request, render, next=_next(next))


def _login_form(request: Request, render, *, next: str, error: str | None = None,
                status: int = 200, name: str = "", headers: dict | None = None) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(request, None, "login.html", status=status, login_token=token, next=next,
                      error=error, name=name)
    response.headers.update(headers or {})
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, path="/login", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/login")
async def login(request: Request, csrf: str = Form(""), name: str = Form(""),
                password: str = Form(""), key: str = Form(""), next: str = Form("/chat")):
    from tenshu.web.pages import render

    state = request.app.state
    target = _next(next)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not secrets.compare_digest(csrf, expected):
        return _login_form(request, render, next=target, status=403, name=name,
                           error="The login form expired. Try again.")
    throttle: LoginThrottle = state.login_throttle
    address, who = _address(request), f"name:{name.strip().lower()}" if name else ""
    if wait := math.ceil(throttle.wait(f"addr:{address}", who)):
        return _login_form(request, render, next=target, status=429, name=name,
                           error=f"Too many failed logins. Try again in {wait} s.",
                           headers={"Retry-After": str(wait)})
    user_id, via = None, "password"
    if key.strip():
        record = await run_in_threadpool(state.store.keys.verify, key.strip())
        if record is not None and record.user_id is not None:
            user_id, via = record.user_id, "key"
    elif name.strip() and password:
        user = await run_in_threadpool(state.users.check_password, name.strip(), password)
        user_id = user.id if user is not None else None
    if user_id is None:
        throttle.failed(f"addr:{address}", who)
        return _login_form(request, render, next=target, status=401, name=name,
                           error="That name and password (or key) did not match.")
    throttle.succeeded(f"addr:{address}", who)
    _, token = await run_in_threadpool(
        state.sessions.create, user_id, via, address=address,
        user_agent=request.headers.get("user-agent"))
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(request, response, token)
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, csrf: str = Form("")):
    sessions = request.app.state.sessions
    token = request.cookies.get(SESSION_COOKIE)
    session = await run_in_threadpool(sessions.verify, token) if token else None
    if session is not None and secrets.compare_digest(csrf, session.csrf):
        await run_in_threadpool(sessions.revoke, session.principal(), session.id)
    elif session is not None:  # not from this server's own page: nothing happens
        return RedirectResponse("/chat", status_code=303)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
