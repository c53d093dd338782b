"""Context sources on real things: files in a temporary folder watched with watchfiles, and a
loopback HTTP server whose feed and JSON pages change between polls and which honours
If-None-Match / If-Modified-Since with 304. Polled sources are driven by calling poll(); the
folder's settling uses short debounce windows."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tenshu.config.context import SourceSpec
from tenshu.context import sources
from tenshu.context.events import Event, MemoryCursor
from tenshu.context.sources import ContextSourceError, FeedSource, FolderSource, HttpJsonSource
from tenshu.context.sources.polling import remember

WAIT = 10  # seconds: only a broken source gets near it
DEBOUNCE_MS = 300


class Collected:
    """An Emit that keeps the events and hands them to a waiting test."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    async def __call__(self, event: Event) -> None:
        self.events.append(event)
        await self.queue.put(event)

    async def next(self) -> Event:
        return await asyncio.wait_for(self.queue.get(), WAIT)

    async def quiet(self, seconds: float) -> None:
        """Nothing more arrives within `seconds`."""
        with pytest.raises(TimeoutError):
            event = await asyncio.wait_for(self.queue.get(), seconds)
            pytest.fail(f"unexpected event {event}")


def kinds(events: list[Event]) -> list[tuple[str, str]]:
    return sorted((e.kind, e.payload.get("relative") or e.payload.get("title")) for e in events)


# --- folders ------------------------------------------------------------------------------


async def test_first_scan_takes_existing_files_as_seen_then_reports_new_ones(tmp_path):
    (tmp_path / "old.txt").write_text("old")
    source = FolderSource("inbox", tmp_path, debounce_ms=0)
    cursor, emit = MemoryCursor(), Collected()

    assert await source.scan(emit, cursor) == 0
    assert "old.txt" in cursor.state["files"]

    (tmp_path / "new.txt").write_text("hello")
    assert await source.scan(emit, cursor) == 1
    event = emit.events[0]
    assert event.source == "inbox" and event.kind == "file.created"
    stat = (tmp_path / "new.txt").stat()
    assert event.key == f"new.txt:{stat.st_mtime_ns}:5"
    assert event.payload["path"] == str(tmp_path.resolve() / "new.txt")
    assert event.payload["relative"] == "new.txt" and event.payload["name"] == "new.txt"
    assert event.payload["suffix"] == ".txt" and event.payload["size"] == 5
    assert event.payload["mtime"].endswith("+00:00")


async def test_a_restart_reports_what_changed_while_down_once(tmp_path):
    for name in ("keep.txt", "change.txt", "gone.txt"):
        (tmp_path / name).write_text(name)
    source = FolderSource("inbox", tmp_path, debounce_ms=0)
    cursor = MemoryCursor()
    await source.scan(Collected(), cursor)
    saved = cursor.get()

    # down: one file arrives, one is rewritten, one is deleted
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "arrived.txt").write_text("while down")
    (tmp_path / "change.txt").write_text("rewritten, longer")
    (tmp_path / "gone.txt").unlink()

    restarted, emit = MemoryCursor(saved), Collected()
    assert await source.scan(emit, restarted) == 2
    assert kinds(emit.events) == [("file.created", "sub/arrived.txt"),
                                  ("file.modified", "change.txt")]
    assert "gone.txt" not in restarted.state["files"]

    again = Collected()
    assert await FolderSource("inbox", tmp_path, debounce_ms=0).scan(again, restarted) == 0


async def test_patterns_ignored_names_and_recursion(tmp_path):
    (tmp_path / "deep").mkdir()
    (tmp_path / ".git").mkdir()
    cursor = MemoryCursor({"files": {}})
    for name in ("a.pdf", "B.PDF", "notes.txt", ".hidden.pdf", "draft.pdf~", "x.pdf.part",
                 ".git/obj.pdf", "deep/c.pdf"):
        (tmp_path / name).write_text("x")

    emit = Collected()
    await FolderSource("pdfs", tmp_path, patterns=["*.pdf"], debounce_ms=0).scan(emit, cursor)
    assert kinds(emit.events) == [("file.created", "B.PDF"), ("file.created", "a.pdf"),
                                  ("file.created", "deep/c.pdf")]

    flat = Collected()
    await FolderSource("flat", tmp_path, recursive=False, debounce_ms=0).scan(
        flat, MemoryCursor({"files": {}}))
    assert kinds(flat.events) == [("file.created", n) for n in ("B.PDF", "a.pdf", "notes.txt")]


async def test_a_missing_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    source = FolderSource("inbox", missing)
    with pytest.raises(ContextSourceError, match="inbox.*nowhere does not exist"):
        await source.scan(Collected(), MemoryCursor())
    with pytest.raises(ContextSourceError, match="does not exist"):
        await source.run(Collected(), MemoryCursor(), asyncio.Event())
    (tmp_path / "file").write_text("x")
    with pytest.raises(ContextSourceError, match="is not a folder"):
        await FolderSource("inbox", tmp_path / "file").scan(Collected(), MemoryCursor())


@pytest.fixture
async def watching(tmp_path):
    """A FolderSource running on tmp_path/watched (from an empty cursor, so every file counts),
    with its events; stopped, and checked to have ended cleanly, after the test."""
    folder = tmp_path / "watched"
    folder.mkdir()
    source = FolderSource("inbox", folder, debounce_ms=DEBOUNCE_MS)
    cursor, emit, stop = MemoryCursor({"files": {}}), Collected(), asyncio.Event()
    task = asyncio.create_task(source.run(emit, cursor, stop))
    yield folder, emit, cursor, task
    stop.set()
    await asyncio.wait_for(task, WAIT)


async def test_run_reports_a_file_written_in_two_parts_once_whole(watching):
    folder, emit, cursor, _ = watching
    with open(folder / "report.csv", "w") as f:
        f.write("a,b\n")
        f.flush()
        await asyncio.sleep(DEBOUNCE_MS / 1000 / 4)
        f.write("1,2\n" * 100)

    event = await emit.next()
    assert event.kind == "file.created" and event.payload["size"] == 4 + 400
    await emit.quiet(2 * DEBOUNCE_MS / 1000)
    assert cursor.state["files"]["report.csv"][1] == 404

    # rewritten later: a new event
    (folder / "report.csv").write_text("new")
    event = await emit.next()
    assert event.kind == "file.modified" and event.payload["size"] == 3


async def test_run_reports_a_finished_download_and_a_rename_under_the_new_name(watching):
    folder, emit, _, _ = watching
    (folder / "paper.pdf.crdownload").write_text("partial")
    (folder / ".paper.swp").write_text("editor")
    (folder / "paper.pdf.crdownload").rename(folder / "paper.pdf")
    event = await emit.next()
    assert event.payload["name"] == "paper.pdf"

    (folder / "paper.pdf").rename(folder / "renamed.pdf")
    event = await emit.next()
    assert (event.kind, event.payload["relative"]) == ("file.created", "renamed.pdf")

    (folder / "box").mkdir()
    (folder / "box" / "inside.txt").write_text("x")
    event = await emit.next()
    assert event.payload["relative"] == "box/inside.txt"
    await emit.quiet(2 * DEBOUNCE_MS / 1000)


async def test_run_catches_up_once_the_watcher_is_in_place(tmp_path):
    (tmp_path / "while-down.txt").write_text("x")
    source = FolderSource("inbox", tmp_path, debounce_ms=50)
    cursor, emit, stop = MemoryCursor({"files": {}}), Collected(), asyncio.Event()
    task = asyncio.create_task(source.run(emit, cursor, stop))
    assert (await emit.next()).payload["name"] == "while-down.txt"
    stop.set()
    await asyncio.wait_for(task, WAIT)
    assert task.result() is None


async def test_run_raises_when_the_folder_vanishes(tmp_path):
    folder = tmp_path / "watched"
    folder.mkdir()
    source = FolderSource("inbox", folder, debounce_ms=50)
    task = asyncio.create_task(source.run(Collected(), MemoryCursor(), asyncio.Event()))
    await asyncio.sleep(0.2)
    shutil.rmtree(folder)
    with pytest.raises(ContextSourceError, match="watched vanished"):
        await asyncio.wait_for(task, WAIT)


# --- a loopback HTTP server ---------------------------------------------------------------


class Site:
    """Pages the test sets and changes; each answers with its ETag and Last-Modified, and 304 to
    a request that sends them back. `requests` holds (path, headers, status) of each request."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.pages: dict[str, tuple[int, str, bytes, dict[str, str]]] = {}
        self.requests: list[tuple[str, dict[str, str], int]] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def serve(self, path: str, body: str | bytes, content_type: str = "application/rss+xml",
              status: int = 200, **validators: str) -> str:
        headers = {"ETag": validators.get("etag"), "Last-Modified": validators.get("modified")}
        data = body.encode() if isinstance(body, str) else body
        self.pages[path] = (status, content_type, data, {k: v for k, v in headers.items() if v})
        return self.url(path)


@pytest.fixture
def site():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, content_type, body, validators = site.pages.get(
                self.path, (404, "text/plain", b"no such page", {}))
            etag, modified = validators.get("ETag"), validators.get("Last-Modified")
            if (etag and self.headers.get("If-None-Match") == etag) or (
                    modified and self.headers.get("If-Modified-Since") == modified):
                status, body = 304, b""
            site.requests.append((self.path, dict(self.headers), status))
            self.send_response(status)
            for name, value in validators.items():
                self.send_header(name, value)
            if status != 304:
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site = Site(server)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield site
    server.shutdown()
    server.server_close()


def rss(*items: tuple[str, str]) -> str:
    entries = "".join(
        f"<item><guid isPermaLink=\"false\">{guid}</guid><title>{title}</title><link>https://example.org/{guid}</link>"
        f"<description>About {title}</description>"
        "<pubDate>Tue, 02 Jan 2024 10:00:00 GMT</pubDate></item>" for guid, title in items)
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>News</title>'
            f"<link>https://example.org/</link>{entries}</channel></rss>")


def atom(*items: tuple[str, str]) -> str:
    entries = "".join(
        f'<entry><id>urn:{guid}</id><title>{title}</title><link href="https://example.org/{guid}"/>'
        f"<updated>2024-01-03T08:30:00Z</updated><summary>{summary}</summary></entry>"
        for guid, (title, summary) in zip(("a", "b", "c"), items, strict=False))
    return ('<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
            "<title>Atom news</title><id>urn:feed</id><updated>2024-01-03T08:30:00Z</updated>"
            f"{entries}</feed>")


# --- feeds --------------------------------------------------------------------------------


async def test_rss_first_poll_reports_nothing_then_each_new_entry_once(site):
    url = site.serve("/rss", rss(("2", "Second"), ("1", "First")), etag='"v1"')
    source, cursor, emit = FeedSource("news", url), MemoryCursor(), Collected()

    assert await source.poll(emit, cursor) == 0
    assert cursor.state["etag"] == '"v1"' and sorted(cursor.state["seen"]) == ["1", "2"]

    assert await source.poll(emit, cursor) == 0  # unchanged: 304
    path, headers, status = site.requests[-1]
    assert headers["If-None-Match"] == '"v1"' and status == 304

    site.serve("/rss", rss(("4", "Fourth"), ("3", "Third"), ("2", "Second")), etag='"v2"')
    assert await source.poll(emit, cursor) == 2
    assert [e.payload["title"] for e in emit.events] == ["Third", "Fourth"]  # oldest first
    event = emit.events[0]
    assert (event.kind, event.key) == ("feed.entry", "3")
    assert event.payload == {
        "title": "Third", "link": "https://example.org/3", "summary": "About Third",
        "published": "2024-01-02T10:00:00+00:00", "id": "3", "feed_title": "News"}

    site.serve("/rss", rss(("4", "Fourth"), ("3", "Third")), etag='"v3"')
    assert await source.poll(emit, cursor) == 0
    assert len(emit.events) == 2


async def test_atom_entries_filtered_by_keywords(site):
    url = site.serve("/atom", atom(("Weather", "rain")), "application/atom+xml")
    source = FeedSource("atom", url, keywords=["GPU", "python"])
    cursor, emit = MemoryCursor(), Collected()
    await source.poll(emit, cursor)

    site.serve("/atom", atom(("Weather", "rain"), ("New gpus", "fast"), ("Release", "Python 4")),
               "application/atom+xml")
    assert await source.poll(emit, cursor) == 2
    assert kinds(emit.events) == [("feed.entry", "New gpus"), ("feed.entry", "Release")]
    event = next(e for e in emit.events if e.key == "urn:b")
    assert event.payload["published"] == "2024-01-03T08:30:00+00:00"
    assert event.payload["link"] == "https://example.org/b"
    assert event.payload["feed_title"] == "Atom news"


async def test_a_failed_poll_names_the_url_and_the_cause_and_keeps_the_cursor(site):
    url = site.serve("/feed", rss(("1", "First")), etag='"v1"')
    source, cursor = FeedSource("news", url), MemoryCursor()
    await source.poll(Collected(), cursor)
    before = cursor.get()

    site.serve("/feed", "<rss><channel><title>cut off")
    with pytest.raises(ContextSourceError, match=f"{url} answered a malformed feed"):
        await source.poll(Collected(), cursor)
    site.serve("/feed", "<html><body>Sign in</body></html>", "text/html")
    with pytest.raises(ContextSourceError, match=f"{url} did not answer an RSS or Atom feed"):
        await source.poll(Collected(), cursor)
    site.serve("/feed", "oops", "text/plain", status=500)
    with pytest.raises(ContextSourceError, match=f"{url} answered HTTP 500"):
        await source.poll(Collected(), cursor)
    assert cursor.get() == before

    with socket.socket() as free:  # a port that nothing listens on
        free.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{free.getsockname()[1]}/feed"
    with pytest.raises(ContextSourceError, match=f"could not reach {closed}"):
        await FeedSource("news", closed).poll(Collected(), MemoryCursor())


async def wait_for_requests(site: Site, count: int) -> None:
    async with asyncio.timeout(WAIT):
        while len(site.requests) < count:
            await asyncio.sleep(0.01)


async def test_run_logs_a_failed_poll_and_carries_on(site, caplog):
    url = site.serve("/feed", "down for maintenance", "text/plain", status=503)
    source, emit, stop = FeedSource("news", url, every_s=0.05), Collected(), asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="tenshu.context"):
        task = asyncio.create_task(source.run(emit, MemoryCursor({"seen": []}), stop))
        await wait_for_requests(site, 1)
        site.serve("/feed", rss(("1", "Back")))
        assert (await emit.next()).payload["title"] == "Back"
    assert any(f"{url} answered HTTP 503" in r.getMessage() for r in caplog.records)
    stop.set()
    await asyncio.wait_for(task, WAIT)


async def test_stop_ends_the_wait_between_polls_at_once(site):
    url = site.serve("/feed", rss(("1", "First")))
    source, stop = FeedSource("news", url, every_s=3600), asyncio.Event()
    task = asyncio.create_task(source.run(Collected(), MemoryCursor(), stop))
    await wait_for_requests(site, 1)
    stop.set()
    await asyncio.wait_for(task, 1)


# --- HTTP JSON ----------------------------------------------------------------------------


async def test_json_items_each_new_item_once(site):
    modified = "Tue, 02 Jan 2024 10:00:00 GMT"
    url = site.serve("/api", '{"data": {"items": [{"id": 1, "t": "a"}]}}', "application/json",
                     modified=modified)
    source = HttpJsonSource("api", url, every_s=60, items="data.items")
    cursor, emit = MemoryCursor(), Collected()
    assert await source.poll(emit, cursor) == 0
    assert await source.poll(emit, cursor) == 0
    assert site.requests[-1][1]["If-Modified-Since"] == modified and site.requests[-1][2] == 304

    site.serve("/api", '{"data": {"items": [{"id": 2, "t": "b"}, {"id": 1, "t": "a"}, {"t": "c"}]}}',
               "application/json")
    assert await source.poll(emit, cursor) == 2
    assert [(e.kind, e.payload["item"]) for e in emit.events] == [
        ("http.item", {"id": 2, "t": "b"}), ("http.item", {"t": "c"})]
    assert emit.events[0].key == emit.events[0].payload["id"] == "2"
    assert "last_modified" not in cursor.state  # the new answer had none
    assert await source.poll(emit, cursor) == 0

    site.serve("/api", '{"data": {"total": 3}}', "application/json")
    with pytest.raises(ContextSourceError, match="nothing at 'data.items'"):
        await source.poll(emit, cursor)


async def test_json_items_of_a_list_answer(site):
    url = site.serve("/issues", '[{"number": 1}]', "application/json")
    source = HttpJsonSource("issues", url, every_s=60, items=".", id_field="number")
    cursor, emit = MemoryCursor(), Collected()
    await source.poll(emit, cursor)
    site.serve("/issues", '[{"number": 2}, {"number": 1}]', "application/json")
    assert await source.poll(emit, cursor) == 1 and emit.events[0].key == "2"
    site.serve("/issues", '{"message": "rate limited"}', "application/json")
    with pytest.raises(ContextSourceError, match="the answer is a dict, not a list"):
        await source.poll(emit, cursor)


async def test_json_whole_answer_reported_when_its_content_changes(site):
    url = site.serve("/status", '{"state": "ok", "n": 1}', "application/json", etag='"1"')
    source, cursor, emit = HttpJsonSource("status", url, every_s=60), MemoryCursor(), Collected()
    assert await source.poll(emit, cursor) == 0

    site.serve("/status", '{"n": 1, "state": "ok"}', "application/json", etag='"2"')
    assert await source.poll(emit, cursor) == 0  # the same content, keys in another order

    site.serve("/status", '{"n": 2, "state": "degraded"}', "application/json")
    assert await source.poll(emit, cursor) == 1
    event = emit.events[0]
    assert event.kind == "http.changed" and event.payload["data"] == {"n": 2, "state": "degraded"}
    assert event.key == event.payload["hash"] and len(event.key) == 64

    site.serve("/status", "<html>Bad gateway</html>", "text/html")
    with pytest.raises(ContextSourceError, match=f"{url} did not answer JSON \\(text/html\\)"):
        await source.poll(emit, cursor)


def test_sources_are_built_from_their_configuration(tmp_path):
    assert sorted(sources.__all__) == ["ContextSourceError", "FeedSource", "FolderSource",
                                       "HttpJsonSource", "Source", "from_spec"]
    folder = sources.from_spec(SourceSpec("inbox", "folder", path=str(tmp_path),
                                          patterns=("*.md",), recursive=False))
    assert isinstance(folder, FolderSource) and (folder.patterns, folder.recursive) == (
        ("*.md",), False)
    feed = sources.from_spec(SourceSpec("news", "feed", url="https://example.org/rss",
                                        every="30m", keywords=("GPU",), headers=(("A", "b"),)))
    assert isinstance(feed, FeedSource)
    assert (feed.every_s, feed.keywords, feed.headers) == (1800, ("gpu",), {"A": "b"})
    api = sources.from_spec(SourceSpec("orders", "http", url="https://example.org/api",
                                       items="data", id_field="number"))
    assert isinstance(api, HttpJsonSource) and (api.items, api.id_field) == ("data", "number")
    whole = sources.from_spec(SourceSpec("status", "http", url="https://example.org/status"))
    assert whole.items is None and whole.every_s == 900


def test_seen_keys_are_bounded_but_keep_the_whole_last_answer():
    old = [str(n) for n in range(1500)]
    kept = remember(old, ["new", "5"], limit=1000)
    assert len(kept) == 1000 and kept[-2:] == ["new", "5"] and "1499" in kept and "0" not in kept
    big = [str(n) for n in range(2000)]
    assert remember(old, big, limit=1000) == big
