"""The inbox page in a real browser (web/inbox.py, static/js/inbox.js and nav.js): ana's
notifications, newest first, each body rendered as Markdown with markup in it left as text; the
top bar's unread count on every page, following Mark read, Mark all read and Delete; the unread
filter; ben sees an empty inbox, then his own items only. Items are made as the context engine
makes them (ContextStore.notify).
"""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.web.conftest import shot
from tests.web.test_web_security import logged_in

SCRIPT = "<script>window.pwned = 1</script>"
EMPTY = re.compile("Nothing here yet")


def api(site, method: str, path: str, who: str = "ana") -> httpx.Response:
    return httpx.request(method, site.base_url + "/tenshu/v1" + path, timeout=60,
                         headers={"Authorization": f"Bearer {site.keys[who]}"})


def notify(site, who: str, title: str, **fields) -> int:
    store = site.server.store
    return store.context.notify(store.users.get(who).id, title, **fields)


@pytest.fixture
def inbox(site) -> dict:
    """ana's inbox, emptied, with three items made oldest first; their ids by name."""
    for who in ("ana", "ben"):
        for item in api(site, "GET", "/inbox?limit=100", who).json()["data"]:
            assert api(site, "DELETE", f"/inbox/{item['id']}", who).status_code == 204
    return {
        "order": notify(site, "ana", "Order 42 shipped", body="plain words",
                        url="javascript:alert(1)", source="orders"),
        "sqlite": notify(site, "ana", "A new SQLite release", body="Changes: `VACUUM INTO`",
                         source="news"),
        "brief": notify(site, "ana", "Morning brief", source="morning", run_id="run_0123abcd",
                        url="https://example.org/report?a=1",
                        body=f"Read **this** first.\n\n{SCRIPT}\n\n<img src=x onerror=alert(1)>"),
    }


def badge(page):
    return page.locator("nav.nav a[data-nav=inbox] .nav-count")


def item(page, item_id: int):
    return page.locator(f'.inbox-item[data-id="{item_id}"]')


def test_ana_sees_her_notifications_newest_first_and_inert(site, new_page, inbox):
    page, _ = new_page("ana")  # logging in lands on /chat: the count is in its top bar too
    expect(badge(page)).to_have_text("3")
    page.goto(site.base_url + "/inbox")
    expect(page.locator("nav.nav a[data-nav=inbox]")).to_have_class(re.compile("active"))
    expect(page.locator(".inbox-title")).to_have_text(
        ["Morning brief", "A new SQLite release", "Order 42 shipped"])
    expect(page.locator(".inbox-item.unread")).to_have_count(3)
    expect(page.locator("#no-items")).to_be_hidden()

    brief = item(page, inbox["brief"])
    expect(brief.locator(".inbox-body strong")).to_have_text("this")
    expect(brief.locator(".inbox-body")).to_contain_text(SCRIPT)  # shown, as text
    assert page.evaluate("window.pwned") is None
    assert page.locator("main script, main img").count() == 0
    expect(brief.locator("time")).not_to_be_empty()
    expect(brief.locator(".inbox-source")).to_have_text("morning")
    expect(brief.locator("a.inbox-run")).to_have_attribute("href", "/runs/run_0123abcd")
    link = brief.locator("a.inbox-url")
    expect(link).to_have_attribute("href", "https://example.org/report?a=1")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(item(page, inbox["sqlite"]).locator(".inbox-body code")).to_have_text("VACUUM INTO")
    # an address that is not http(s) is shown, never a link; no run, no run link
    order = item(page, inbox["order"])
    expect(order.locator(".inbox-url")).to_have_text("javascript:alert(1)")
    expect(order.locator("a.inbox-url")).to_have_count(0)
    expect(order.locator("a.inbox-run")).to_have_count(0)
    shot(page, "inbox")

    # it fits a phone's width
    page.set_viewport_size({"width": 375, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_mark_read_mark_all_read_and_the_unread_filter(site, new_page, inbox):
    page, _ = new_page("ana")
    page.goto(site.base_url + "/inbox")
    expect(badge(page)).to_have_text("3")
    item(page, inbox["sqlite"]).get_by_role("button", name="Mark read").click()
    expect(badge(page)).to_have_text("2")
    expect(item(page, inbox["sqlite"])).not_to_have_class(re.compile("unread"))
    expect(item(page, inbox["sqlite"]).get_by_role("button", name="Mark read")).to_have_count(0)
    assert api(site, "GET", "/inbox").json()["unread"] == 2

    page.check("#only-unread")
    expect(page.locator(".inbox-title")).to_have_text(["Morning brief", "Order 42 shipped"])
    assert page.url.endswith("/inbox?unread=true")
    page.reload()  # the filter is kept in the address
    expect(page.locator("#only-unread")).to_be_checked()
    expect(page.locator(".inbox-item")).to_have_count(2)

    page.click("#mark-all-read")
    expect(page.locator("#no-items")).to_have_text("Nothing unread.")
    expect(page.locator(".inbox-item")).to_have_count(0)
    expect(badge(page)).to_be_hidden()
    expect(page.locator("#mark-all-read")).to_be_disabled()
    assert api(site, "GET", "/inbox").json()["unread"] == 0

    page.uncheck("#only-unread")
    expect(page.locator(".inbox-item")).to_have_count(3)
    expect(page.locator(".inbox-item.unread")).to_have_count(0)
    # another page's top bar agrees
    page.goto(site.base_url + "/runs")
    expect(page.locator("h1")).to_have_text("Runs")
    expect(badge(page)).to_be_hidden()


def test_delete_removes_an_item(site, new_page, inbox):
    page, _ = new_page("ana")
    page.goto(site.base_url + "/inbox")
    expect(page.locator(".inbox-item")).to_have_count(3)
    item(page, inbox["brief"]).get_by_role("button", name="Delete").click()
    expect(item(page, inbox["brief"])).to_have_count(0)
    expect(page.locator(".inbox-item")).to_have_count(2)
    expect(badge(page)).to_have_text("2")
    ids = [i["id"] for i in api(site, "GET", "/inbox").json()["data"]]
    assert ids == [inbox["sqlite"], inbox["order"]]
    for other in (inbox["sqlite"], inbox["order"]):
        item(page, other).get_by_role("button", name="Delete").click()
    expect(page.locator("#no-items")).to_have_text(EMPTY)
    expect(badge(page)).to_be_hidden()


def test_ben_sees_an_empty_inbox_then_his_own_items_only(site, new_page, inbox):
    page, _ = new_page("ben")
    page.goto(site.base_url + "/inbox")
    expect(page.locator("#no-items")).to_have_text(EMPTY)
    expect(page.locator(".inbox-item")).to_have_count(0)
    expect(badge(page)).to_be_hidden()
    expect(page.locator("#mark-all-read")).to_be_disabled()

    mine = notify(site, "ben", "Ben's build finished", body="**green**")
    page.reload()
    expect(page.locator(".inbox-title")).to_have_text(["Ben's build finished"])
    expect(badge(page)).to_have_text("1")
    expect(page.locator("main")).not_to_contain_text("Morning brief")
    # ana's items are not his to mark or delete, through the API his pages call
    client, csrf = logged_in(site, "ben")
    for item_id in inbox.values():
        assert client.post(f"/tenshu/v1/inbox/{item_id}/read",
                           headers={"x-csrf-token": csrf}).status_code == 404
        assert client.delete(f"/tenshu/v1/inbox/{item_id}",
                             headers={"x-csrf-token": csrf}).status_code == 404
    assert api(site, "GET", "/inbox").json()["unread"] == 3  # ana's, untouched
    page.click("#mark-all-read")
    expect(badge(page)).to_be_hidden()
    assert api(site, "GET", "/inbox").json()["unread"] == 3
    assert [i["id"] for i in api(site, "GET", "/inbox", "ben").json()["data"]] == [mine]


def test_the_page_needs_a_login_and_carries_the_strict_policy(site):
    response = httpx.get(site.base_url + "/inbox?unread=true")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/inbox%3Funread%3Dtrue"
    client, _ = logged_in(site, "ana")
    response = client.get("/inbox")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "<script>" not in response.text and " style=" not in response.text
