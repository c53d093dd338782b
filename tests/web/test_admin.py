"""The admin page in a real browser, as boss: add a user with a password (who then logs in
elsewhere), change their role, set their password (their session ends), remove them; create a
key, see it once, use it, revoke it; end ana's session (her next page is the login page); the
loaded models and the config check show the server's model. A member asking for /admin gets the
not-found page.
"""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import expect

from tests.web.conftest import shot


def open_admin(new_page, site, **kw):
    page, watcher = new_page("boss", **kw)
    page.goto(site.base_url + "/admin")
    expect(page.locator("h1")).to_have_text("Admin")
    return page, watcher


def log_in(page, site, name: str, password: str) -> None:
    page.goto(site.base_url + "/login")
    page.fill("#login-password input[name=name]", name)
    page.fill("#login-password input[name=password]", password)
    page.click("#login-password button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)


def test_boss_adds_a_user_who_logs_in_then_changes_and_removes_them(new_page, site):
    page, _ = open_admin(new_page, site)
    form = page.locator("#add-user")
    form.locator("input[name=name]").fill("cat")
    form.locator("input[name=password]").fill("cat-password-1")
    form.locator("button[type=submit]").click()
    row = page.locator("#admin-users tr[data-user=cat]")
    expect(row).to_be_visible()
    expect(row.locator(".badge")).to_have_text("set")
    expect(row.locator("select[data-field=role]")).to_have_value("member")

    cat, _ = new_page()  # another browser
    log_in(cat, site, "cat", "cat-password-1")
    assert site.server.store.users.check_password("cat", "cat-password-1") is not None

    row.locator("select[data-field=role]").select_option("admin")
    expect(page.locator(".toast").last).to_contain_text("role is now admin")
    assert site.server.store.users.get("cat").role == "admin"
    page.reload()
    expect(page.locator("#admin-users tr[data-user=cat] select[data-field=role]")
           ).to_have_value("admin")

    # a new password ends the sessions the old one opened
    page.locator("#admin-users tr[data-user=cat] button[data-action=password]").click()
    page.fill("#password-dialog input[name=password]", "cat-password-2")
    page.click("#password-dialog button[type=submit]")
    expect(page.locator(".toast").last).to_contain_text("cat has a new password")
    cat.reload()
    expect(cat).to_have_url(re.compile(r"/login"))
    log_in(cat, site, "cat", "cat-password-2")

    # removing says what goes with them, and asks first
    site.server.store.keys.create("cat-key", user="cat")
    page.reload()
    page.locator("#admin-users tr[data-user=cat] button[data-action=remove-user]").click()
    expect(page.locator("#confirm-text")).to_contain_text("Remove cat?")
    expect(page.locator("#confirm-text")).to_contain_text("1 API key")
    page.click("#confirm-dialog button[value=cancel]")
    assert site.server.store.users.get("cat") is not None
    page.locator("#admin-users tr[data-user=cat] button[data-action=remove-user]").click()
    page.click("#confirm-ok")
    expect(page.locator("#admin-users tr[data-user=cat]")).to_have_count(0)
    assert site.server.store.users.get("cat") is None
    cat.reload()
    expect(cat).to_have_url(re.compile(r"/login"))


def test_a_new_key_is_shown_once_works_and_can_be_revoked(new_page, site):
    page, _ = open_admin(new_page, site)
    form = page.locator("#add-key")
    form.locator("input[name=name]").fill("ana-laptop")
    form.locator("select[name=user]").select_option("ana")
    form.locator("input[name=private]").check()
    form.locator("button[type=submit]").click()
    dialog = page.locator("#new-key-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("for ana")
    key = page.locator("#new-key-value").inner_text().strip()
    assert key.startswith("tsk-") and len(key) > 30

    models = httpx.get(site.base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert models.status_code == 200
    assert "tenshu-tiny" in {m["id"] for m in models.json()["data"]}

    page.click("#new-key-done")
    expect(dialog).to_be_hidden()
    row = page.locator(f"#admin-keys tr[data-key='{key[:12]}']")
    expect(row).to_contain_text("ana-laptop")
    expect(row.locator(".badge")).to_have_text("private")
    assert key not in page.content()  # shown once: not on the page any more
    page.reload()
    expect(row).to_be_visible()
    assert key not in page.content()

    row.locator("button[data-action=revoke-key]").click()
    page.click("#confirm-ok")
    expect(row.locator(".badge.bad")).to_contain_text("revoked")
    refused = httpx.get(site.base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 401


def test_ending_anas_session_sends_her_next_page_to_login(new_page, site):
    ana, _ = new_page("ana")
    page, _ = open_admin(new_page, site)
    rows = page.locator("#admin-sessions tr[data-user=ana]")
    expect(rows.first).to_be_visible()
    expect(rows.first).to_contain_text("a password")
    for session in rows.evaluate_all("rows => rows.map(row => row.dataset.session)"):
        row = page.locator(f"#admin-sessions tr[data-session={session}]")
        row.locator("button[data-action=revoke-session]").click()
        expect(row).to_have_count(0)
    expect(rows).to_have_count(0)
    expect(page.locator("#admin-sessions tr[data-current]")).to_contain_text("this browser")
    ana.reload()
    expect(ana).to_have_url(re.compile(r"/login\?next="))


def test_a_member_gets_the_not_found_page(new_page, site):
    page, watcher = new_page("ben", expect_errors=True)
    answer = page.goto(site.base_url + "/admin")
    assert answer.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator("nav.nav a[data-nav=admin]")).to_have_count(0)
    assert "Users" not in page.locator("main").inner_text()
    # the one console line is the browser's note of the 404 itself
    assert all("404" in error for error in watcher.errors), watcher.errors


def test_the_models_and_the_config_check_show_the_servers_model(new_page, site):
    page, _ = open_admin(new_page, site)
    model = page.locator("#admin-models tr[data-model=tenshu-tiny]")
    expect(model).to_contain_text("embedded")
    expect(model).to_contain_text("local")
    expect(model.locator(".deployment .badge")).to_have_text("healthy")
    config = page.locator("#admin-config")
    expect(config.locator(".config-models")).to_contain_text("tenshu-tiny")
    expect(config).to_contain_text("no warnings")
    expect(page.locator("#admin-sessions tr[data-current]")).to_contain_text("boss")
    shot(page, "admin")


def test_the_page_fits_a_phone(new_page, site):
    page, _ = open_admin(new_page, site, width=375, height=800)
    expect(page.locator("#admin-config")).to_be_visible()
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= 375, f"the page is {wide} px wide at 375"
