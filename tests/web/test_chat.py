"""The chat page in a real browser (Debian's Chromium): login, a streamed answer, stop,
regenerate, edit and resend, thumbs and a correction, the conversation list, memory's sources,
model output that must stay inert, and another user's conversation by its URL.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tenshu.store.conversations import TurnRecord, write_turns
from tenshu.store.sql import begin_write
from tests.web.conftest import PASSWORDS, shot

XSS = "\n\n".join([  # each its own paragraph, so Markdown parses each
    "<script>window.pwned = 1</script>",
    "<img src=x onerror=\"window.pwned = 2\">",
    "[click me](javascript:window.pwned=3)",
    "<a href=\"javascript:window.pwned=4\">raw</a>",
    "![tracker](http://198.51.100.7/pixel.png)",
    "<iframe src=\"http://198.51.100.7/\"></iframe>",
    "text with an inline <img src=x onerror=\"window.pwned = 5\"> and **bold**",
])


def api(site, who: str) -> httpx.Client:
    return httpx.Client(base_url=site.base_url, timeout=120,
                        headers={"Authorization": f"Bearer {site.keys[who]}"})


def send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    expect(page.locator("#send")).to_be_visible(timeout=120_000)  # the answer has finished


def test_login_wrong_then_right_with_a_strict_cookie_and_logout(new_page, site):
    page, _ = new_page(expect_errors=True)  # the failed login's 401 is logged by the browser
    page.goto(site.base_url + "/chat")
    assert "/login?next=/chat" in page.url
    page.fill("#login-password input[name=name]", "ana")
    page.fill("#login-password input[name=password]", "not her password")
    page.click("#login-password button[type=submit]")
    expect(page.locator(".error")).to_contain_text("did not match")
    shot(page, "login")
    page.fill("#login-password input[name=name]", "ana")
    page.fill("#login-password input[name=password]", PASSWORDS["ana"])
    page.click("#login-password button[type=submit]")
    page.wait_for_url("**/chat")
    cookie = next(c for c in page.context.cookies() if c["name"] == "tenshu_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # no script can read it
    assert page.evaluate("Object.keys(localStorage)") in ([], ["tenshu-theme"])
    page.click("text=Log out")
    page.wait_for_url("**/login")
    gone = httpx.get(site.base_url + "/tenshu/v1/me", cookies={"tenshu_session": cookie["value"]})
    assert gone.status_code == 401


def test_an_api_key_logs_in_too(new_page, site):
    page, _ = new_page()
    page.goto(site.base_url + "/login")
    page.click("text=Log in with an API key instead")
    page.fill("#login-key input[name=key]", site.keys["ben"])
    page.click("#login-key button[type=submit]")
    page.wait_for_url("**/chat")
    expect(page.locator(".who .user")).to_have_text("ben")


def test_a_streamed_answer_is_kept_and_comes_back_on_reload(new_page, site):
    page, _ = new_page("ana")
    page.goto(site.base_url + "/chat")
    page.fill("#prompt", "first line")
    page.press("#prompt", "Shift+Enter")
    page.type("#prompt", "second line about the castle")
    assert page.input_value("#prompt") == "first line\nsecond line about the castle"
    page.press("#prompt", "Enter")
    expect(page.locator("#send")).to_be_visible(timeout=120_000)
    page.wait_for_url("**/chat/conv_*")
    conversation = page.url.rsplit("/", 1)[1]
    turn = page.locator(".turn").last
    expect(turn.locator(".answer")).not_to_be_empty()
    expect(turn.locator(".meta .badge").first).to_have_text("tenshu-tiny")
    trace = turn.locator(".trace-link").get_attribute("href")
    assert trace.startswith("/traces/req_")
    expect(page.locator(f"#conversation-list li[data-id='{conversation}']")).to_be_visible()
    answer = turn.locator(".answer").inner_text()
    shot(page, "chat")

    page.reload()
    expect(page.locator(".turn")).to_have_count(1)
    assert page.locator(".turn .answer").inner_text() == answer
    stored = api(site, "ana").get(f"/tenshu/v1/conversations/{conversation}").json()
    assert stored["turns"] == 1
    assert "second line about the castle" in json.dumps(stored["messages"][0]["messages"])

    send(page, "and a second question")  # continues the same conversation
    expect(page.locator(".turn")).to_have_count(2)
    assert api(site, "ana").get(f"/tenshu/v1/conversations/{conversation}").json()["turns"] == 2


def _longer(route):
    """Let the tiny model run long (it would otherwise end in a second): what the page sends,
    with vLLM's ignore_eos and a large max_tokens, so there is an answer to stop."""
    body = json.loads(route.request.post_data)
    route.continue_(post_data=json.dumps({**body, "ignore_eos": True, "max_tokens": 3000}))


@pytest.mark.parametrize("how", ["button", "escape"])
def test_stop_ends_the_answer_in_the_engine(new_page, site, how):
    page, _ = new_page("ana")
    page.goto(site.base_url + "/chat")
    page.route("**/v1/chat/completions", _longer)
    page.fill("#prompt", "tell me everything")
    page.press("#prompt", "Enter")
    turn = page.locator(".turn").last
    expect(turn.locator(".answer")).not_to_be_empty(timeout=120_000)
    if how == "button":
        page.click("#stop")
    else:
        page.keyboard.press("Escape")
    expect(turn.locator(".stopped")).to_be_visible()
    request_id = turn.get_attribute("data-request")
    record = _wait_for(lambda: site.server.store.audit.find(request_id))
    assert record.status == 499  # the client left: the engine stopped generating
    _wait_for(lambda: site.gateway.in_flight == 0 or None)
    # what was said before the stop is kept, and the conversation goes on from it
    page.unroute("**/v1/chat/completions")
    page.wait_for_url("**/chat/conv_*")
    page.reload()
    expect(page.locator(".turn")).to_have_count(1)
    expect(page.locator(".turn .answer")).not_to_be_empty()
    expect(page.locator(".turn .stopped")).to_be_visible()  # marked as stopped, after a reload
    send(page, "go on")
    expect(page.locator(".turn")).to_have_count(2)


def _wait_for(probe, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while (found := probe()) is None:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return found


def test_regenerate_and_edit_take_the_old_answer_off_the_path(new_page, site):
    page, _ = new_page("ana")
    page.goto(site.base_url + "/chat")
    send(page, "what is a keep")
    page.wait_for_url("**/chat/conv_*")
    conversation = page.url.rsplit("/", 1)[1]
    first = page.locator(".turn").last.get_attribute("data-turn")

    page.click(".turn >> text=Regenerate")
    expect(page.locator("#send")).to_be_visible(timeout=120_000)
    expect(page.locator(".turn")).to_have_count(1)
    second = page.locator(".turn").last.get_attribute("data-turn")
    assert second != first

    page.click(".turn .edit-user")
    page.fill(".turn textarea.editing", "what is a moat")
    page.click(".turn .edit-form >> text=Send")
    expect(page.locator("#send")).to_be_visible(timeout=120_000)
    expect(page.locator(".turn")).to_have_count(1)
    expect(page.locator(".turn .message.user")).to_contain_text("what is a moat")

    stored = api(site, "ana").get(f"/tenshu/v1/conversations/{conversation}").json()
    turns = {t["id"]: t for t in stored["messages"]}
    assert stored["turns"] == 1  # one turn on the path; the two it replaced are kept aside
    assert turns[first]["superseded_by"] == second
    path = [t for t in stored["messages"] if t["superseded_by"] is None]
    assert "what is a moat" in json.dumps(path[0]["messages"])
    page.reload()
    expect(page.locator(".turn .message.user")).to_contain_text("what is a moat")


def test_thumbs_with_a_reason_and_a_correction_are_stored(new_page, site):
    page, _ = new_page("ana")
    page.goto(site.base_url + "/chat")
    send(page, "name a castle")
    turn_id = page.locator(".turn").last.get_attribute("data-turn")

    page.click(".turn [data-rating='-1']")
    page.fill("#rate-reason", "too vague")
    page.click("#rate-save")
    expect(page.locator(".turn [data-rating='-1']")).to_have_class("small rate on")
    page.click(".turn >> text=Edit answer")
    page.fill("#correct-text", "Himeji Castle, in Hyogo.")
    page.click("#correct-save")
    expect(page.locator(".turn .correction")).to_contain_text("Himeji Castle")

    items = api(site, "ana").get("/tenshu/v1/feedback", params={"turn": turn_id}).json()["data"]
    kinds = {(f["kind"], f["rating"], f["text"]) for f in items}
    assert ("rating", -1, "too vague") in kinds
    assert ("correction", None, "Himeji Castle, in Hyogo.") in kinds
    page.reload()
    expect(page.locator(".turn [data-rating='-1']")).to_have_class("small rate on")
    expect(page.locator(".turn .correction")).to_contain_text("Himeji Castle")


def test_an_answer_that_fails_says_why_and_copy_gives_the_raw_text(new_page, site):
    page, _ = new_page("ana", expect_errors=True)  # the browser logs the 400 itself
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(site.base_url + "/chat")
    page.fill("#prompt", "castle " * 6000)  # longer than the model's window
    page.press("#prompt", "Enter")
    expect(page.locator(".turn .error")).to_contain_text("context", timeout=120_000)
    expect(page.locator("#send")).to_be_visible()
    send(page, "say something **bold**")
    page.locator(".turn").last.locator(".copy").click()
    expect(page.locator(".toast").last).to_have_text("Copied.")
    copied = page.evaluate("navigator.clipboard.readText()")
    turn = page.locator(".turn").last.get_attribute("data-turn")
    stored = api(site, "ana").get("/tenshu/v1/conversations/" + page.url.rsplit("/", 1)[1])
    answer = next(t for t in stored.json()["messages"] if t["id"] == turn)
    assert copied == answer["completion"][0]["content"][0]["text"]


def test_the_list_searches_renames_exports_and_deletes(new_page, site):
    page, _ = new_page("ana")
    page.goto(site.base_url + "/chat")
    send(page, "zebra stripes in the courtyard")
    page.wait_for_url("**/chat/conv_*")
    conversation = page.url.rsplit("/", 1)[1]

    page.fill("#search", "zebra")
    page.press("#search", "Enter")
    page.wait_for_url("**/chat?q=zebra")
    expect(page.locator("#conversation-list li")).to_have_count(1)
    page.goto(f"{site.base_url}/chat/{conversation}")

    page.click("#rename")
    page.fill("#rename-title", "Zebras, renamed")
    page.click("#rename-save")
    expect(page.locator("#conversation-title")).to_have_text("Zebras, renamed")
    assert api(site, "ana").get(
        f"/tenshu/v1/conversations/{conversation}").json()["title"] == "Zebras, renamed"

    with page.expect_download() as download:
        page.click("#export-md")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert text.startswith("# Zebras, renamed") and "zebra stripes" in text

    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#delete")
    page.wait_for_url("**/chat")
    expect(page.locator(f"#conversation-list li[data-id='{conversation}']")).to_have_count(0)
    assert api(site, "ana").get(f"/tenshu/v1/conversations/{conversation}").status_code == 404


def test_a_document_uploaded_in_the_page_is_cited_by_an_answer(new_page, site):
    page, _ = new_page("ana")
    page.goto(site.base_url + "/memory")
    page.fill("#create-collection input[name=name]", "castles")
    page.click("#create-collection button[type=submit]")
    page.wait_for_url("**/memory/castles")
    page.set_input_files("#upload-files", [{
        "name": "himeji.md", "mimeType": "text/markdown",
        "buffer": b"# Himeji\n\nThe white heron castle has 83 buildings."}])
    page.click("#upload-form button[type=submit]")
    expect(page.locator('.mem-upload[data-file="himeji.md"] .mem-state')).to_contain_text(
        "ready", timeout=120_000)

    page.goto(site.base_url + "/chat")
    page.click("#settings summary")
    expect(page.locator("#memory-names option[value='castles']")).to_have_count(1)
    page.fill("#memory", "castles")
    send(page, "how many buildings does the white heron castle have")
    source = page.locator(".turn .sources a").first
    expect(source).to_contain_text("Himeji")
    href = source.get_attribute("href")
    assert href.startswith("/memory/chunks/")
    page.reload()  # the stored turn keeps its sources
    expect(page.locator(".turn .sources a").first).to_have_attribute("href", href)
    page.goto(site.base_url + href)
    expect(page.locator("main")).to_contain_text("83 buildings")


def test_ben_cannot_open_anas_conversation_by_its_url(new_page, site):
    made = api(site, "ana").post("/v1/chat/completions", headers={
        "x-tenshu-conversation": "new"}, json={
        "model": "tenshu-tiny", "max_tokens": 4,
        "messages": [{"role": "user", "content": "ana's secret plan"}]})
    conversation = made.headers["x-tenshu-conversation"]
    page, _ = new_page("ben", expect_errors=True)  # the browser logs the 404
    response = page.goto(f"{site.base_url}/chat/{conversation}")
    assert response.status == 404
    assert "ana's secret plan" not in page.content()
    refused = page.locator("main").inner_text()
    missing = page.goto(f"{site.base_url}/chat/conv_{'0' * 24}")
    assert missing.status == 404
    assert page.locator("main").inner_text() == refused  # hers looks like one never made


def test_model_output_and_typed_markup_render_inert(new_page, site):
    """An answer (as the store has it) and a message the person types, both full of markup:
    nothing runs, nothing is fetched from another host, no CSP violation is logged."""
    store = site.server.store
    ana = store.users.get("ana")
    conversation, turn = "conv_" + "a1" * 12, "turn_" + "a1" * 12
    completion = [{"role": "assistant", "content": [
        {"type": "thinking", "thinking": "let me think <img src=x onerror=\"window.pwned=6\">"},
        {"type": "text", "text": XSS}]}]
    asked = [{"role": "user", "content": [{"type": "text", "text": "show me"}]}]
    with begin_write(store.engine) as conn:  # as the record writer keeps a model's answer
        write_turns(conn, [TurnRecord(
            id=turn, conversation_id=conversation, owner_id=ana.id, request_id="req_" + "a1" * 12,
            model="tenshu-tiny", messages=asked, completion=completion, state_hash="x", new=True)])
    page, watcher = new_page("ana")
    page.goto(f"{site.base_url}/chat/{conversation}")
    answer = page.locator(".turn .answer")
    expect(answer).to_contain_text("tracker")
    expect(answer.locator(".inert-image")).to_contain_text("198.51.100.7")
    page.click(".turn .thinking summary")  # a thinking model's reasoning, folded
    expect(page.locator(".turn .thinking .md")).to_contain_text("let me think")
    expect(answer.locator("strong")).to_have_text("bold")  # Markdown itself still works
    page.fill("#prompt", XSS)  # typed by the person: rendered through the same path
    page.click("#send")
    expect(page.locator("#send")).to_be_visible(timeout=120_000)
    for md in page.locator(".md").all():
        assert md.locator("script, img, iframe").count() == 0
    hrefs = page.eval_on_selector_all(".md a", "links => links.map(a => a.getAttribute('href'))")
    assert not any(h and h.lower().startswith("javascript") for h in hrefs)
    assert page.evaluate("window.pwned") is None
    assert watcher.outside == []
    shot(page, "chat-inert")


def test_narrow_screen_and_dark_theme(new_page, site):
    page, _ = new_page("ana", width=375, height=740)
    page.goto(site.base_url + "/chat")
    send(page, "hello from a phone")
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 375, width
    expect(page.locator("#open-list")).to_be_visible()
    page.click("#open-list")
    expect(page.locator("#conversations")).to_be_visible()
    page.click("#close-list")
    page.click("#theme-toggle")
    theme = page.evaluate("document.documentElement.dataset.theme")
    assert theme in ("dark", "light")
    if theme == "light":  # the system was dark: one more click
        page.click("#theme-toggle")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(20, 23, 28)"
    shot(page, "chat-narrow-dark")


def test_an_answer_from_an_adapter_names_its_version(new_page, site, tmp_path):
    from tenshu.config import DEFAULT_MODEL_DIR
    from tests.engine.test_lora import make_adapter

    folder = make_adapter(DEFAULT_MODEL_DIR, tmp_path / "signoff", seed=5)
    loaded = api(site, "boss").post("/v1/load_lora_adapter", json={
        "lora_name": "signoff", "lora_path": str(folder)})
    assert loaded.status_code == 200, loaded.text
    try:
        page, _ = new_page("ana")
        page.goto(site.base_url + "/chat")
        page.locator("#settings summary").click()
        page.select_option("#model", "signoff")
        send(page, "hello, adapter")
        badge = page.locator(".turn .meta .badge[title='adapter version']")
        expect(badge).to_have_text(re.compile(r"^signoff@[0-9a-f]{12}$"))
        shown = badge.inner_text()
        page.reload()
        expect(page.locator(".turn .meta .badge[title='adapter version']")).to_have_text(shown)
    finally:
        api(site, "boss").post("/v1/unload_lora_adapter", json={"lora_name": "signoff"})
