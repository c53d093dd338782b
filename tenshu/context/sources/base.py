"""What every context source is: a name and a `run` loop that emits Events and keeps a Cursor;
and the one error a source raises when it cannot see what it watches.

The engine runs each configured source as a task (`run(emit, cursor, stop)`), stores what it
emits, and keeps the cursor between runs; triggers (context/triggers.py) read the stored events.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from tenshu.context.events import Cursor, Emit
from tenshu.core.errors import TenshuError


class ContextSourceError(TenshuError):
    """A source cannot see what it watches: its folder is missing or vanished, its URL did not
    answer, answered an HTTP error, or answered something it cannot read. The message names the
    source, the folder or URL, and the cause; the caller logs it and keeps going."""

    status = 503
    kind = "context_source_error"


class Source(Protocol):
    """A configured source. `run` returns once `stop` is set, having closed what it opened."""

    name: str

    async def run(self, emit: Emit, cursor: Cursor, stop: asyncio.Event) -> None: ...
