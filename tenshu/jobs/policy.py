"""The energy policy: whether a heavy job may start now, from [jobs] in tenshu.toml
(config/jobs.py) and what a probe sees of the machine.

    seen = SystemProbe(gateway).read()     # on mains?, load per core, the last request
    why_wait(settings, seen, now)          # "": it may start; else why it waits, e.g.
    # "on battery; busy: load 1.7 per core (max 0.5); outside 01:00-06:00; a request 3 min ago"

The scheduler (scheduler.py) asks when a heavy job comes due, and again on its loop while the
run waits. SystemProbe reads the operating system (psutil) and the gateway; FixedProbe says
what it is set to, for tests and for anything that decides the machine's state itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import psutil

from tenshu.config.jobs import JobsSettings


@dataclass(frozen=True)
class Conditions:
    """What a probe saw of the machine."""

    on_mains: bool = True  # False: on battery
    load_per_core: float = 0.0  # the 1-minute load average over the logical CPUs
    last_request_at: datetime | None = None  # when a request last ended; None: none seen
    in_flight: int = 0  # requests being answered now


class Probe(Protocol):
    def read(self) -> Conditions: ...


class SystemProbe:
    """The machine as psutil sees it, and the requests of `gateway` (tenshu/gateway.py: its
    last_request_at and in_flight; without one, requests are not looked at)."""

    def __init__(self, gateway=None) -> None:
        self.gateway = gateway

    def read(self) -> Conditions:
        battery = psutil.sensors_battery()  # None: the machine has none, so it is on mains
        # power_plugged None: the OS cannot tell; taken as mains, or a job would wait forever
        on_mains = battery is None or battery.power_plugged is not False
        load = psutil.getloadavg()[0] / (psutil.cpu_count() or 1)
        last, in_flight = None, 0
        if self.gateway is not None:
            if (at := self.gateway.last_request_at) is not None:
                last = datetime.fromtimestamp(at, UTC)
            in_flight = self.gateway.in_flight
        return Conditions(on_mains, load, last, in_flight)


class FixedProbe:
    """A probe that sees what it is set to: `probe.conditions = Conditions(on_mains=False)`."""

    def __init__(self, conditions: Conditions | None = None) -> None:
        self.conditions = conditions or Conditions()

    def read(self) -> Conditions:
        return self.conditions


def why_wait(settings: JobsSettings, seen: Conditions, now: datetime) -> str:
    """Why a heavy job may not start at `now` (aware), every reason, "; " between them; ""
    when it may."""
    reasons = []
    if settings.require_mains and not seen.on_mains:
        reasons.append("on battery")
    if seen.load_per_core >= settings.max_load:
        reasons.append(f"busy: load {_number(seen.load_per_core)} per core "
                       f"(max {_number(settings.max_load)})")
    if (hours := settings.hours) is not None and not hours.contains(now):
        reasons.append(f"outside {hours.label}")
    if settings.idle_minutes:
        if seen.in_flight:
            reasons.append(f"answering {seen.in_flight} request(s)")
        elif seen.last_request_at is not None and \
                (ago := now - seen.last_request_at) < timedelta(minutes=settings.idle_minutes):
            minutes = int(ago.total_seconds() // 60)
            reasons.append(f"a request {minutes} min ago" if minutes else "a request just now")
    return "; ".join(reasons)


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")
