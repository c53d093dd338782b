"""HttpJsonSource: an HTTP JSON endpoint, polled with a conditional GET (polling.py): its new
items, or its whole answer when that changes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tenshu.context.events import Event
from tenshu.context.sources.base import ContextSourceError
from tenshu.context.sources.polling import Answer, PolledSource


class HttpJsonSource(PolledSource):
    """Polls `url` every `every_s` seconds (with `headers` on each request).

    With `items`, a dotted path to a list in the answer ("data.items"; a part that is a number
    indexes a list; "." is the answer itself), each new item is an `http.item` Event keyed by its
    `id_field` (an item without one is keyed by the hash of its content); payload: url, id, item.

    Without `items` (None or ""), the whole answer is one `http.changed` Event when its content (the hash of
    its canonical JSON: sorted keys, no spaces) differs from every answer seen before; payload:
    url, hash, data. An answer that comes back to an earlier content is the earlier event again
    (same key), so it is not reported twice.

    The first poll reports nothing (PolledSource says why). An answer that is not JSON, or has
    no list at `items`, is a ContextSourceError."""

    def __init__(self, name: str, url: str, every_s: float,
                 headers: dict[str, str] | None = None, items: str | None = None,
                 id_field: str = "id") -> None:
        super().__init__(name, url, every_s, headers)
        self.items = items or None
        self.id_field = id_field

    def read(self, answer: Answer) -> list[Event]:
        try:
            data = json.loads(answer.body)
        except ValueError as exc:
            raise ContextSourceError(f"{answer.url} did not answer JSON "
                                     f"({answer.content_type or 'no content type'}): {exc}") from None
        if self.items is None:
            digest = _hash(data)
            return [Event(self.name, digest, "http.changed",
                          {"url": answer.url, "hash": digest, "data": data})]
        events = []
        for item in _list_at(data, self.items, answer.url):
            found = item.get(self.id_field) if isinstance(item, dict) else None
            key = _hash(item) if found is None else str(found)
            events.append(Event(self.name, key, "http.item",
                                {"url": answer.url, "id": key, "item": item}))
        return events


def _hash(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _list_at(data: Any, path: str, url: str) -> list[Any]:
    for part in path.split(".") if path != "." else []:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            raise ContextSourceError(f"{url}: the answer has nothing at {path!r} "
                                     f"(stopped at {part!r})")
    if not isinstance(data, list):
        where = repr(path) if path != "." else "the answer"
        raise ContextSourceError(f"{url}: {where} is a {type(data).__name__}, not a list")
    return data
