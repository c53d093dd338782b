"""Fixtures for the web UI's tests: one live server per module, and Debian's Chromium driven by
Playwright (the Python package, using the system browser: nothing is downloaded).

Without Chromium (`make install` puts it there where apt can), these tests skip and say so.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.api.live import live_server

PASSWORDS = {"ana": "ana-password-1", "ben": "ben-password-1", "boss": "boss-password-1"}
# Where the tests save a screenshot of each page: TENSHU_UI_SHOTS (docs/ui.md's were taken so),
# else a temporary folder.
SHOTS = Path(os.environ.get("TENSHU_UI_SHOTS") or tempfile.mkdtemp(prefix="tenshu-ui-shots-"))


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module. Not for the session: Playwright's sync API keeps an event
    loop running on this thread while it is open, which would break any later test that runs
    one of its own (asyncio.run)."""
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium); the web "
                    "UI's browser tests need it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (make install)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A server with keys required (so pages need a login): ana and ben (members) and boss (an
    admin), each with a password; `site.keys[name]` is each one's API key."""
    with live_server(tmp_path_factory.mktemp("web") / "state.db", max_num_seqs=8) as live:
        yield with_people(live)


def with_people(live):
    """`live` with ana and ben (members) and boss (an admin), each with a password, and
    `live.keys[name]`, an API key of each."""
    store = live.server.store
    for name, role in (("ana", "member"), ("ben", "member"), ("boss", "admin")):
        store.users.add(name, role=role, password=PASSWORDS[name])
    live.keys = {name: store.keys.create(f"{name}-key", user=name)[1] for name in PASSWORDS}
    return live


class Watcher:
    """A page's console errors and failed requests, and every request it tried to make to a
    host other than the server's."""

    def __init__(self, page, base_url: str):
        self.errors: list[str] = []
        self.outside: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: (not r.url.startswith(base_url)
                                      and not r.url.startswith(("data:", "blob:", "about:"))
                                      and self.outside.append(r.url)))


@pytest.fixture
def new_page(browser, site):
    """new_page(user=None) -> (page, watcher): a fresh browser context (its own cookies), logged
    in as `user` when one is named. Checks on the way out that no page logged an error."""
    made = []

    def make(user: str | None = None, *, width: int = 1280, height: int = 860,
             expect_errors: bool = False):
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(60_000)
        page = context.new_page()
        watcher = Watcher(page, site.base_url)
        made.append((context, watcher, expect_errors))
        if user is not None:
            login(page, site.base_url, user)
        return page, watcher

    yield make
    for context, watcher, expect_errors in made:
        context.close()
        if not expect_errors:
            assert watcher.errors == [], watcher.errors
        assert watcher.outside == [], watcher.outside


def login(page, base_url: str, user: str) -> None:
    page.goto(base_url + "/login")
    page.fill("#login-password input[name=name]", user)
    page.fill("#login-password input[name=password]", PASSWORDS[user])
    page.click("#login-password button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)


def shot(page, name: str) -> None:
    """Save a screenshot of the page as SHOTS/name.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)
