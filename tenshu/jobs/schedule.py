"""When a job is due: schedules parsed from the text a person writes in tenshu.toml.

    parse_schedule("0 3 * * *")                       03:00 every day, in the machine's zone
    parse_schedule("0 3 * * 1-5", "Europe/Paris")     03:00 on weekdays, Paris time
    parse_schedule("every 30m")                       at :00 and :30 (also s, h, d)

A cron expression has the five fields of crontab(5) (minute hour day-of-month month
day-of-week) and is read by cronsim, which follows Debian cron across daylight-saving changes:
a time that a spring-forward skips runs at the first minute after the gap, and one that a
fall-back repeats runs once. An interval counts from the Unix epoch, so `every 2h` is due at
the even hours (UTC) whenever the server started. Both give `next_after(t)`, aware UTC in and
out, so the scheduler never does local-time arithmetic.

    parse_hours("01:00-06:00")                        the hours a heavy job may start in
    parse_hours("22:30-05:00", "Europe/Paris")        (crossing midnight), Paris time
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

_EVERY = re.compile(r"every\s+(\d+)\s*([smhd])", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FORMS = ("five cron fields (minute hour day-of-month month day-of-week, e.g. '0 3 * * *') "
          "or an interval ('every 30m'; units s, m, h, d)")


@dataclass(frozen=True)
class Cron:
    """Five cron fields in a time zone. `text` is what the person wrote."""

    text: str
    zone: tzinfo

    def next_after(self, when: datetime) -> datetime:
        """The first due time strictly after `when` (aware; the answer is UTC)."""
        for local in CronSim(self.text, _utc(when).astimezone(self.zone)):
            # Past `when` in real time, not only on the wall clock: after the first pass
            # through a repeated (fall-back) hour, its wall times are behind us.
            if (due := local.astimezone(UTC)) > when:
                return due
        raise ValueError(f"schedule {self.text!r}: no time within 50 years matches it")

    def describe(self) -> str:
        return f"{self.text} ({getattr(self.zone, 'key', None) or self.zone})"


@dataclass(frozen=True)
class Every:
    """An interval, due on its multiples since the Unix epoch."""

    text: str
    seconds: int

    def next_after(self, when: datetime) -> datetime:
        elapsed = (_utc(when) - _EPOCH) // timedelta(seconds=self.seconds)
        return _EPOCH + timedelta(seconds=self.seconds * (elapsed + 1))

    def describe(self) -> str:
        return self.text


Schedule = Cron | Every  # when a job is due


def parse_schedule(text: str, timezone: str = "") -> Schedule:
    """A schedule from its text; `timezone` (an IANA name, "" for the machine's) is the zone
    a cron expression's times are in. Anything wrong is one ValueError that names the text."""
    text = " ".join(str(text).split())
    if match := _EVERY.fullmatch(text):
        seconds = int(match[1]) * _UNITS[match[2].lower()]
        if seconds < 1:
            raise ValueError(f"schedule {text!r}: an interval must be at least 1 second")
        return Every(text, seconds)
    if text.lower().startswith("every"):
        raise ValueError(f"schedule {text!r}: an interval is 'every N' and a unit (s, m, h, "
                         "d), e.g. 'every 30m'")
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"schedule {text!r}: has {len(fields)} field(s); expected {_FORMS}")
    zone = zone_named(timezone, text)
    try:
        CronSim(text, datetime.now(zone))
    except CronSimError as exc:
        raise ValueError(f"schedule {text!r}: {str(exc).lower()}; expected {_FORMS}") from None
    schedule = Cron(text, zone)
    schedule.next_after(datetime.now(UTC))  # one that never matches (30 February) is an error
    return schedule


_HOURS = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


@dataclass(frozen=True)
class Hours:
    """A daily window of wall-clock times, from `start` (in it) to `end` (not); an end before
    the start crosses midnight. `label` is what reasons show: the text, with its zone when one
    was named."""

    label: str
    start: time
    end: time
    zone: tzinfo

    def contains(self, when: datetime) -> bool:
        local = _utc(when).astimezone(self.zone).time()
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


def parse_hours(text: str, timezone: str = "") -> Hours | None:
    """The window "HH:MM-HH:MM" in `timezone` (an IANA name, "" for the machine's); None for ""
    (any time). Anything wrong is one ValueError that names the text."""
    text = "".join(str(text).split())
    if not text:
        return None
    match = _HOURS.fullmatch(text)
    bounds = [(int(match[i]), int(match[i + 1])) for i in (1, 3)] if match else []
    if not bounds or any(h > 23 or m > 59 for h, m in bounds):
        raise ValueError(f"{text!r}: expected two times of day, 'HH:MM-HH:MM' (e.g. "
                         "'01:00-06:00', or '22:00-05:00' across midnight), or '' for any time")
    start, end = (time(h, m) for h, m in bounds)
    if start == end:
        raise ValueError(f"{text!r}: starts where it ends; use '' for any time")
    label = f"{text} ({timezone})" if timezone else text
    return Hours(label, start, end, zone_named(timezone))


def zone_named(name: str, text: str = "") -> tzinfo:
    """The time zone of an IANA name, or the machine's for ""."""
    if not name:
        return local_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        about = f"schedule {text!r}: " if text else ""
        raise ValueError(f"{about}unknown time zone {name!r}; use an IANA name such as "
                         "'Europe/Paris' or 'UTC'") from None


def local_zone() -> tzinfo:
    """The machine's time zone, with its daylight-saving rules: /etc/localtime's (its IANA
    name where it links into a zoneinfo folder), else the current UTC offset (without rules:
    only where the system keeps no zone file)."""
    localtime = Path("/etc/localtime")
    if localtime.exists():
        _, zoneinfo, name = str(localtime.resolve()).partition("/zoneinfo/")
        if zoneinfo:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                pass
        with localtime.open("rb") as file:
            return ZoneInfo.from_file(file, key="localtime")
    return datetime.now().astimezone().tzinfo or UTC


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: pass an aware one (UTC)")
    return when.astimezone(UTC)
