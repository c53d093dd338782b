"""Schedules from their text: cron with a time zone (daylight-saving changes included), and
intervals; a bad one is one ValueError that names it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tenshu.jobs.schedule import Cron, Every, parse_schedule

PARIS = ZoneInfo("Europe/Paris")


def runs(schedule, start: datetime, n: int) -> list[datetime]:
    found = []
    for _ in range(n):
        start = schedule.next_after(start)
        found.append(start)
    return found


def test_cron_in_a_time_zone_gives_utc_times():
    daily = parse_schedule("0 3 * * *", "Europe/Paris")
    assert isinstance(daily, Cron)
    due = daily.next_after(datetime(2026, 1, 10, 12, 0, tzinfo=UTC))
    assert due == datetime(2026, 1, 11, 2, 0, tzinfo=UTC)  # 03:00 in Paris (UTC+1)
    assert due.tzinfo is UTC
    assert daily.next_after(due) == due + timedelta(days=1)  # strictly after
    assert daily.describe() == "0 3 * * * (Europe/Paris)"


def test_cron_across_spring_forward():
    """On 29 March 2026 Paris skips 02:00-03:00: a 02:30 job runs at 03:00 that day, once."""
    nightly = parse_schedule("30 2 * * *", "Europe/Paris")
    local = [t.astimezone(PARIS) for t in runs(nightly, datetime(2026, 3, 27, 12, tzinfo=UTC), 4)]
    assert [(t.day, t.hour, t.minute) for t in local] == \
        [(28, 2, 30), (29, 3, 0), (30, 2, 30), (31, 2, 30)]
    # and the interval between them is in real hours: 23.5 then 23.5 across the change
    utc = [t.astimezone(UTC) for t in local]
    assert utc[2] - utc[1] == timedelta(hours=23, minutes=30)


def test_cron_across_fall_back_runs_a_repeated_time_once():
    """On 25 October 2026 Paris lives 02:00-03:00 twice: a 02:30 job runs once, the first time
    (00:30 UTC), even asked from inside the repeated hour, after that run."""
    nightly = parse_schedule("30 2 * * *", "Europe/Paris")
    first = nightly.next_after(datetime(2026, 10, 24, 12, tzinfo=UTC))
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    second_pass = datetime(2026, 10, 25, 1, 10, tzinfo=UTC)  # 02:10 again, now UTC+1
    assert nightly.next_after(second_pass) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)
    assert nightly.next_after(first) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


def test_cron_days_of_the_week_and_the_default_zone():
    weekdays = parse_schedule("15 9 * * 1-5", "UTC")
    saturday = datetime(2026, 5, 2, 10, tzinfo=UTC)
    assert weekdays.next_after(saturday) == datetime(2026, 5, 4, 9, 15, tzinfo=UTC)  # Monday
    local = parse_schedule("0 3 * * *")  # the machine's zone: due at 03:00 there
    due = local.next_after(datetime.now(UTC))
    assert (due.astimezone(local.zone).hour, due.astimezone(local.zone).minute) == (3, 0)


@pytest.mark.parametrize(("text", "seconds"), [("every 30m", 1800), ("every 2h", 7200),
                                               ("every 1d", 86400), ("EVERY 45 s", 45)])
def test_intervals(text, seconds):
    schedule = parse_schedule(text)
    assert isinstance(schedule, Every)
    assert schedule.seconds == seconds


def test_an_interval_is_due_on_its_multiples_whenever_asked():
    half_hourly = parse_schedule("every 30m")
    assert runs(half_hourly, datetime(2026, 1, 1, 10, 5, 7, tzinfo=UTC), 3) == [
        datetime(2026, 1, 1, 10, 30, tzinfo=UTC), datetime(2026, 1, 1, 11, 0, tzinfo=UTC),
        datetime(2026, 1, 1, 11, 30, tzinfo=UTC)]
    paris = datetime(2026, 1, 1, 11, 5, tzinfo=PARIS)  # any aware time; the answer is UTC
    assert half_hourly.next_after(paris) == datetime(2026, 1, 1, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(("text", "says"), [
    ("61 3 * * *", "'61 3 * * *': bad minute; expected five cron fields"),
    ("0 3 * *", "'0 3 * *': has 4 field(s); expected five cron fields"),
    ("0 0 3 * * *", "has 6 field(s)"),
    ("0 0 30 2 *", "bad day-of-month"),  # 30 February never comes
    ("every 3 weeks", "'every 3 weeks': an interval is 'every N' and a unit"),
    ("every 0m", "at least 1 second"),
    ("", "has 0 field(s)"),
])
def test_a_bad_schedule_is_one_clear_error(text, says):
    with pytest.raises(ValueError, match="schedule ") as caught:
        parse_schedule(text)
    assert says in str(caught.value)


def test_an_unknown_time_zone_is_named():
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'; use an IANA name"):
        parse_schedule("0 3 * * *", "Mars/Olympus")


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="naive"):
        parse_schedule("every 1h").next_after(datetime(2026, 1, 1))
