"""What the context engine passes around: an Event a source noticed, and the cursor a source
keeps between runs so that a restart neither loses nor repeats what it saw.

A source (context/sources.py) turns something in the world (a file that appeared, a feed's new
entry, an HTTP endpoint whose answer changed, a schedule coming due) into Events. The engine
stores each event once per (source, key), and triggers (context/triggers.py) turn stored events
into agent runs, once per event and trigger.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Event:
    """One thing a source noticed.

    source: the configured source's name; key: unique within the source, so that the same key
    is the same event (a file's path with its modification time and size, a feed entry's id, a
    hash of an HTTP answer, a schedule's due time); kind: what happened (`file.created`,
    `file.modified`, `feed.entry`, `http.changed`, `schedule.due`); payload: what a trigger's
    input template reads (JSON values only); at: when it was noticed (aware, UTC)."""

    source: str
    key: str
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


Emit = Callable[[Event], Awaitable[None]]


class Cursor(Protocol):
    """A source's state between runs (ETags, the entries and files already seen...), as one
    JSON object. `get` returns what was last `put` (an empty dict at first)."""

    def get(self) -> dict[str, Any]: ...

    async def put(self, state: dict[str, Any]) -> None: ...


class MemoryCursor:
    """A Cursor held in memory: for tests, and for sources that need not remember."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.state = dict(state or {})

    def get(self) -> dict[str, Any]:
        return dict(self.state)

    async def put(self, state: dict[str, Any]) -> None:
        self.state = dict(state)
