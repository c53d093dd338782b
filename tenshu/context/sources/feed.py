"""FeedSource: new entries of an RSS or Atom feed, polled with a conditional GET (polling.py) and
read with feedparser."""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import feedparser

from tenshu.context.events import Event
from tenshu.context.sources.base import ContextSourceError
from tenshu.context.sources.polling import Answer, PolledSource

log = logging.getLogger("tenshu.context")


class FeedSource(PolledSource):
    """Reports each new entry of the feed at `url` as a `feed.entry` Event, polling every
    `every_s` seconds (with `headers` on each request). With `keywords`, only entries whose
    title or summary contains one of them (case-insensitive) are reported.

    The first poll reports nothing (PolledSource says why). New entries are reported oldest
    first (feeds list the newest first). Key: the entry's id, else its link, else a hash of its
    title and link. Payload: title, link, summary (HTML, as feedparser sanitises it), published
    (ISO UTC, the entry's updated time where it has no published one; None without either), id,
    feed_title.

    A feed that feedparser reads only in part (an undefined entity, a wrong encoding) is used
    with a warning; an answer that is not a feed, or one so broken that no entry is left, is a
    ContextSourceError."""

    def __init__(self, name: str, url: str, every_s: float = 900,
                 keywords: Iterable[str] = (), headers: dict[str, str] | None = None) -> None:
        super().__init__(name, url, every_s, headers)
        self.keywords = tuple(k.lower() for k in keywords)

    def read(self, answer: Answer) -> list[Event]:
        # A file-like object: given bytes or a str, feedparser may take them for a file name
        # or a URL and open it itself.
        parsed = feedparser.parse(io.BytesIO(answer.body), response_headers={
            "content-type": answer.content_type, "content-location": answer.url})
        problem = parsed.get("bozo_exception")
        if not parsed.get("version"):
            cause = f": {problem}" if problem else ""
            raise ContextSourceError(f"{answer.url} did not answer an RSS or Atom feed "
                                     f"({answer.content_type or 'no content type'}){cause}")
        if problem and not parsed.entries:
            raise ContextSourceError(f"{answer.url} answered a malformed feed: {problem}")
        if problem:
            log.warning("source %r: %s is not well-formed (%s); using the entries read",
                        self.name, answer.url, problem)
        feed_title = parsed.feed.get("title")
        events = [self._event(entry, feed_title) for entry in reversed(parsed.entries)]
        return [e for e in events if self._matches(e.payload)]

    def _event(self, entry: Any, feed_title: str | None) -> Event:
        title, link = entry.get("title"), entry.get("link")
        key = entry.get("id") or link or hashlib.sha256(
            f"{title or ''}\n{link or ''}".encode()).hexdigest()[:32]
        when = entry.get("published_parsed") or entry.get("updated_parsed")
        payload = {
            "title": title, "link": link, "summary": entry.get("summary"),
            "published": datetime(*when[:6], tzinfo=UTC).isoformat() if when else None,
            "id": entry.get("id"), "feed_title": feed_title,
        }
        return Event(self.name, key, "feed.entry", payload)

    def _matches(self, payload: dict[str, Any]) -> bool:
        if not self.keywords:
            return True
        text = f"{payload['title'] or ''}\n{payload['summary'] or ''}".lower()
        return any(k in text for k in self.keywords)
