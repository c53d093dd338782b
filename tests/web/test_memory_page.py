"""The memory pages in a real browser: ana makes a collection, uploads two Markdown files and
watches each one's progress reach "ready", searches and sees the hit with its score, opens the
exact chunk, deletes a document, sees a reindex under way, and at last deletes the collection;
ben reads what she shares with him (without her controls, at 375 px) and gets the not-found page
for what she does not share."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from tenshu.memory.reindex import _drop, _new_index
from tenshu.store.people import Principal
from tests.web.conftest import shot

BOILER = ("# House\n\n## Boiler\n\nThe boiler is serviced every October by Hansen Heating; "
          "the pressure should read between 1 and 1.5 bar.\n")
GARDEN = "# Garden\n\n## Roses\n\nPrune the roses in late February, above an outward bud.\n"


@pytest.fixture(scope="module")
def anas(site):
    """What the module's tests share: the id of the boiler chunk, once ana has made it."""
    return {}


def api(site, who: str, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, site.base_url + "/tenshu/v1/memory" + path, timeout=120,
                         headers={"Authorization": f"Bearer {site.keys[who]}"}, **kwargs)


def test_ana_makes_a_collection_uploads_searches_and_deletes(site, new_page, anas):
    page, _ = new_page("ana")
    page.goto(site.base_url + "/memory")
    expect(page.locator("#own-collections")).to_contain_text("No collections yet")
    page.fill("#create-collection input[name=name]", "house")
    page.fill("#create-collection input[name=description]", "How the house works")
    page.click("#create-collection button[type=submit]")
    page.wait_for_url(re.compile(r"/memory/house$"))
    expect(page.locator("#no-documents")).to_be_visible()

    page.set_input_files("#upload-files", [
        {"name": "boiler.md", "mimeType": "text/markdown", "buffer": BOILER.encode()},
        {"name": "garden.md", "mimeType": "text/markdown", "buffer": GARDEN.encode()}])
    page.click("#upload-form button[type=submit]")
    for name in ("boiler.md", "garden.md"):
        upload = page.locator(f'.mem-upload[data-file="{name}"]')
        expect(upload.locator(".mem-state")).to_contain_text("ready", timeout=120_000)
        assert upload.locator("progress").get_attribute("value") == "100"
    rows = page.locator("#document-rows tr")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="boiler.md")).to_contain_text("ready")
    expect(page.locator("#collection-counts")).to_contain_text("2 documents")
    expect(page.locator("#index-rows")).to_contain_text("live")

    page.fill("#search-form input[name=query]", "when is the boiler serviced")
    page.click("#search-form button[type=submit]")
    best = page.locator("#hits .mem-hit").first
    expect(best).to_contain_text("serviced every October")
    expect(best.locator(".mem-score")).to_have_text(re.compile(r"^#1 · 0\.\d{4}$"))
    expect(best.locator("a.mem-source")).to_have_text("boiler.md")
    expect(best).to_contain_text("House > Boiler")
    shot(page, "collection")

    best.locator("a.mem-source").click()
    page.wait_for_url(re.compile(r"/memory/chunks/\d+$"))
    anas["chunk"] = int(page.url.rsplit("/", 1)[1])
    chunk = api(site, "ana", "GET", f"/chunks/{anas['chunk']}").json()
    expect(page.locator("#chunk-text")).to_contain_text(
        "The boiler is serviced every October by Hansen Heating")
    assert page.locator("#chunk-raw").text_content() == chunk["text"]
    expect(page.locator("#chunk-source")).to_have_text("boiler.md")
    expect(page.locator("#chunk-section")).to_have_text("House > Boiler")
    page.click("#back-to-collection")
    page.wait_for_url(re.compile(r"/memory/house$"))

    page.once("dialog", lambda dialog: dialog.accept())
    page.click('#document-rows button[data-source="garden.md"]')
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("boiler.md")
    docs = api(site, "ana", "GET", "/collections/house/documents").json()["data"]
    assert [d["source"] for d in docs] == ["boiler.md"]

    page.goto(site.base_url + "/memory")
    expect(page.locator('#own-collections tr[data-collection="house"]')).to_contain_text(
        "How the house works")
    shot(page, "memory")


def test_the_reindex_status_shows_an_index_being_built(site, new_page):
    store = site.server.store
    collection = store.collections.get(Principal.of(store.users.get("ana")), "house")
    building = _new_index(store.engine, collection, "another-embedder")  # a reindex's start
    page, _ = new_page("ana")
    try:
        page.goto(site.base_url + "/memory/house")
        rows = page.locator("#index-rows tr")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_contain_text("live")
        expect(rows.nth(1)).to_contain_text("building")
        expect(rows.nth(1).locator("progress")).to_have_attribute("value", "0")
        expect(page.locator("#reindex-state")).to_contain_text("being built")
    finally:
        _drop(store.engine, building)
    # the page keeps looking while one is built, and sees it gone
    expect(rows).to_have_count(1, timeout=30_000)
    expect(page.locator("#reindex-state")).to_have_text("No reindex is running.")


def test_ben_gets_the_not_found_page_for_anas(site, new_page, anas):
    chunk = anas["chunk"]
    # Chromium logs a page answered 404 as a console error: those, and nothing else, are expected
    page, watcher = new_page("ben", expect_errors=True)
    for path in ("/memory/house?owner=ana", "/memory/house", f"/memory/chunks/{chunk}",
                 "/memory/chunks/not-a-number", f"/memory/chunks/{2**70}",
                 "/memory/bad%20name?owner=ana"):
        response = page.goto(site.base_url + path)
        assert response.status == 404, path
        expect(page.locator("h1")).to_have_text("Not found")
        expect(page.locator("main")).not_to_contain_text("boiler")
    assert_only_not_found(watcher)


def assert_only_not_found(watcher) -> None:
    assert watcher.errors and all("status of 404" in e for e in watcher.errors), watcher.errors


def test_ben_reads_what_ana_shares_without_her_controls(site, new_page, anas):
    assert api(site, "ana", "PUT", "/collections/house/shares/ben").status_code == 200
    page, _ = new_page("ben", width=375, height=800)
    page.goto(site.base_url + "/memory")
    shared = page.locator('#shared-collections tr[data-collection="ana/house"]')
    expect(shared).to_contain_text("ana")
    shared.locator("a").click()
    page.wait_for_url(re.compile(r"/memory/house\?owner=ana$"))
    expect(page.locator("#document-rows")).to_contain_text("boiler.md")
    for control in ("#upload", "#delete-collection", "#shares", "button[data-delete-doc]"):
        expect(page.locator(control)).to_have_count(0)
    page.fill("#search-form input[name=query]", "boiler pressure")
    page.click("#search-form button[type=submit]")
    expect(page.locator("#hits .mem-hit").first).to_contain_text("1.5 bar")
    # usable at 375 px: nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.goto(site.base_url + f"/memory/chunks/{anas['chunk']}")
    expect(page.locator("#chunk-text")).to_contain_text("Hansen Heating")
    expect(page.locator(".mem-chunk")).to_contain_text("ana's")

    # her page shows whom it is shared with, and she can stop it
    ana, _ = new_page("ana")
    ana.goto(site.base_url + "/memory/house")
    expect(ana.locator("#share-list")).to_contain_text("ben")
    ana.click('#share-list button[data-unshare="ben"]')
    expect(ana.locator("#no-shares")).to_be_visible()

    # and she deletes the whole collection, once she has confirmed it
    ana.once("dialog", lambda dialog: dialog.accept())
    ana.click("#delete-collection")
    ana.wait_for_url(re.compile(r"/memory$"))
    expect(ana.locator("#own-collections")).to_contain_text("No collections yet")
    assert api(site, "ana", "GET", "/collections/house").status_code == 404
    again, watcher = new_page("ben", expect_errors=True)
    assert again.goto(site.base_url + f"/memory/chunks/{anas['chunk']}").status == 404
    assert_only_not_found(watcher)
