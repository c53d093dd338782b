"""ScheduleSource: a schedule as a source of events (`schedule.due`), for triggers that wake an
agent at set times: a morning brief, a heartbeat every hour, a one-off reminder.

The times are jobs.schedule's (cron with a time zone, `every 1h`) or one `at`. The cursor keeps
the last time that fired, so a restart neither repeats it nor forgets what was missed: a time
that passed while the server was down fires once at start when `catch_up` is set (however many
were missed, as systemd's Persistent=true timers do), and is skipped otherwise. A one-off time
fires once, ever. The clock is injectable, and `due` does one step without sleeping, so tests
never wait for a schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

from tenshu.config.context import SourceSpec
from tenshu.context.events import Cursor, Emit, Event

_RECHECK = 60.0  # the longest sleep: asyncio's clock stops while a laptop sleeps; the wall's not
LATE = 60.0  # seconds past its time after which a due time counts as missed, not just reached


def _now() -> datetime:
    return datetime.now(UTC)


class ScheduleSource:
    def __init__(self, spec: SourceSpec, clock: Callable[[], datetime] = _now) -> None:
        self.name = spec.name
        self.when = spec.schedule()  # a Schedule (next_after), or one datetime (`at`)
        self.catch_up = spec.catch_up
        self.clock = clock

    def next_after(self, when: datetime) -> datetime | None:
        if isinstance(self.when, datetime):
            return self.when if self.when > when else None
        return self.when.next_after(when)

    async def due(self, emit: Emit, cursor: Cursor) -> datetime | None:
        """Fire what is due now (at most one event); return the next time, None for never."""
        state = cursor.get()
        now = self.clock()
        if "last" not in state and "started" not in state:  # first start: from now on
            await cursor.put({"started": now.isoformat()})
            return self.next_after(now)
        since = datetime.fromisoformat(state.get("last") or state["started"])
        missed = self.next_after(since)
        if missed is None or missed > now:
            return missed
        latest = missed  # the last of the due times up to now: the one that fires
        while (following := self.next_after(latest)) is not None and following <= now:
            latest = following
        caught_up = (now - latest).total_seconds() > LATE  # missed while the server was down
        if caught_up and not self.catch_up:
            await cursor.put({"last": latest.isoformat()})  # skipped, as configured
        else:
            await emit(Event(self.name, latest.isoformat(), "schedule.due", {
                "due": latest.isoformat(), "caught_up": caught_up}, now))
            await cursor.put({"last": latest.isoformat()})
        return self.next_after(latest)

    async def run(self, emit: Emit, cursor: Cursor, stop: asyncio.Event) -> None:
        while not stop.is_set():
            following = await self.due(emit, cursor)
            if following is None:
                return  # a one-off time that has fired
            wait = min(_RECHECK, max(0.0, (following - self.clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
