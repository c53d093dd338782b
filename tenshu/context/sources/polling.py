"""What the polled sources (feeds, HTTP JSON endpoints) share: a conditional GET, the loop that
polls every `every_s` seconds, and the bounded list of keys already seen.

A polled source turns one answer into the Events for everything in it (`read`); this module
reports those it has not seen before. The cursor holds the validators of the last answer
(`etag`, `last_modified`, sent back as If-None-Match / If-Modified-Since, so an unchanged
resource costs a 304) and `seen`, the keys of the last SEEN_LIMIT items, at least every key of
the last answer.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import httpx

from tenshu.context.events import Cursor, Emit, Event
from tenshu.context.sources.base import ContextSourceError
from tenshu.core.errors import InvalidRequestError

log = logging.getLogger("tenshu.context")

SEEN_LIMIT = 1000
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Answer:
    """A 2xx answer: its body, its content type, and the validators to send next time."""

    url: str
    body: bytes
    content_type: str
    validators: dict[str, str]


class PolledSource:
    """A source that polls `url` every `every_s` seconds and reports what is new in the answer.

    The first successful poll of a new source (a cursor without `seen`) reports nothing: what is
    there already is taken as seen, as feed readers and n8n's RSS trigger do, so a new watcher
    does not start a run per old entry. Afterwards each item is reported once, by its key.
    Subclasses define `read(answer) -> [Event]`: every item in the answer, in reporting order."""

    def __init__(self, name: str, url: str, every_s: float,
                 headers: dict[str, str] | None = None) -> None:
        if httpx.URL(url).scheme not in ("http", "https"):
            raise InvalidRequestError(f"source {name!r}: {url!r} is not an http(s) URL",
                                      field="url")
        if every_s <= 0:
            raise InvalidRequestError(f"source {name!r}: every_s must be more than 0",
                                      field="every_s")
        self.name = name
        self.url = url
        self.every_s = every_s
        self.headers = dict(headers or {})

    def read(self, answer: Answer) -> list[Event]:
        raise NotImplementedError

    async def poll(self, emit: Emit, cursor: Cursor) -> int:
        """Fetch once and report what is new; returns how many events. A 304 reports nothing.
        Raises ContextSourceError (naming the URL and the cause) when the fetch or the answer
        fails; the cursor is then left as it was."""
        state = cursor.get()
        answer = await fetch(self.url, self.headers, state)
        if answer is None:
            return 0
        found = self.read(answer)
        seen = state.get("seen")
        new: list[Event] = []
        if seen is None:
            log.info("source %r: first poll of %s, %d item(s) already there taken as seen",
                     self.name, self.url, len(found))
        else:
            known = set(seen)
            for event in found:
                if event.key not in known:
                    known.add(event.key)
                    new.append(event)
        for event in new:
            await emit(event)
        state = {k: v for k, v in state.items() if k not in ("etag", "last_modified")}
        state.update(answer.validators, seen=remember(seen or [], [e.key for e in found]))
        await cursor.put(state)
        return len(new)

    async def run(self, emit: Emit, cursor: Cursor, stop: asyncio.Event) -> None:
        """Poll now and then every `every_s` seconds until `stop` is set. A failed poll is
        logged and the loop carries on."""
        while not stop.is_set():
            try:
                await self.poll(emit, cursor)
            except ContextSourceError as exc:
                log.warning("%s", exc)
            except Exception:  # a bug in reading one answer must not end the watch
                log.exception("source %r: polling %s failed", self.name, self.url)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)


async def fetch(url: str, headers: dict[str, str], state: dict[str, Any]) -> Answer | None:
    """GET `url`, conditional on the validators in `state`; None when it answers 304."""
    sent = dict(headers)
    if state.get("etag"):
        sent["If-None-Match"] = state["etag"]
    if state.get("last_modified"):
        sent["If-Modified-Since"] = state["last_modified"]
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=True) as client:
            response = await client.get(url, headers=sent)
    except httpx.TimeoutException:
        raise ContextSourceError(f"{url} did not answer within {TIMEOUT_S:g} s") from None
    except httpx.HTTPError as exc:
        raise ContextSourceError(f"could not reach {url}: {exc or type(exc).__name__}") from exc
    if response.status_code == 304:
        return None
    if not response.is_success:
        raise ContextSourceError(
            f"{url} answered HTTP {response.status_code} {response.reason_phrase}".rstrip())
    validators = {name: response.headers[header] for name, header in
                  (("etag", "etag"), ("last_modified", "last-modified"))
                  if header in response.headers}
    return Answer(url, response.content, response.headers.get("content-type", ""), validators)


def remember(seen: list[str], current: list[str], limit: int = SEEN_LIMIT) -> list[str]:
    """The keys to keep: every key of the current answer, after the most recent others, at
    most `limit` in all unless the answer alone has more."""
    here = set(current)
    kept = [key for key in seen if key not in here] + list(dict.fromkeys(current))
    return kept[-max(limit, len(here)):]
