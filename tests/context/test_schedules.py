"""A schedule as a source of events: due times fire once, a restart repeats nothing, a time
missed while the server was down fires once at start (catch_up) or is skipped, a one-off time
fires once ever; cron times are read in the configured zone. The clock is the test's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tenshu.config.context import SourceSpec, parse_context
from tenshu.context.events import MemoryCursor
from tenshu.context.schedules import ScheduleSource


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def fire(source: ScheduleSource, cursor: MemoryCursor) -> list:
    seen = []

    async def emit(event):
        seen.append(event)

    following = await source.due(emit, cursor)
    return seen, following


async def test_cron_in_a_zone_fires_once_per_due_time_and_a_restart_repeats_nothing():
    clock = Clock(datetime(2026, 12, 6, 5, 0, tzinfo=UTC))  # 06:00 in Paris
    spec = SourceSpec("morning", "schedule", cron="0 7 * * *", timezone="Europe/Paris")
    source, cursor = ScheduleSource(spec, clock), MemoryCursor()
    seen, following = await fire(source, cursor)  # the first start: from now on
    assert seen == [] and following == datetime(2026, 12, 6, 6, 0, tzinfo=UTC)
    clock.now = following + timedelta(seconds=1)
    seen, following = await fire(source, cursor)
    assert [(e.kind, e.key, e.payload["caught_up"]) for e in seen] == [
        ("schedule.due", "2026-12-06T06:00:00+00:00", False)]
    assert following == datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    again = ScheduleSource(spec, clock)  # a restart with the saved cursor
    assert (await fire(again, cursor))[0] == []


@pytest.mark.parametrize("catch_up", [True, False])
async def test_times_missed_while_down_fire_once_at_start_or_are_skipped(catch_up):
    clock = Clock(datetime(2026, 12, 6, 12, 0, tzinfo=UTC))
    spec = SourceSpec("hourly", "schedule", every="1h", catch_up=catch_up)
    cursor = MemoryCursor({"last": "2026-12-06T08:00:00+00:00"})  # down since 08:00
    clock.now = datetime(2026, 12, 6, 12, 30, tzinfo=UTC)
    seen, following = await fire(ScheduleSource(spec, clock), cursor)
    # 09:00 .. 12:00 were missed: at most one run, for the latest
    assert [e.key for e in seen] == (["2026-12-06T12:00:00+00:00"] if catch_up else [])
    assert cursor.get() == {"last": "2026-12-06T12:00:00+00:00"}
    assert following == datetime(2026, 12, 6, 13, 0, tzinfo=UTC)


async def test_a_one_off_time_fires_once_ever():
    clock = Clock(datetime(2026, 12, 6, 8, 0, tzinfo=UTC))
    spec = SourceSpec("remind", "schedule", at="2026-12-06T10:00:00", timezone="Europe/Paris")
    source, cursor = ScheduleSource(spec, clock), MemoryCursor()
    assert (await fire(source, cursor)) == ([], datetime(2026, 12, 6, 9, 0, tzinfo=UTC))
    clock.now = datetime(2026, 12, 6, 9, 0, 5, tzinfo=UTC)
    seen, following = await fire(source, cursor)
    assert len(seen) == 1 and following is None
    clock.now += timedelta(days=1)
    assert (await fire(source, cursor)) == ([], None)


@pytest.mark.parametrize(("table", "says"), [
    ({"type": "schedule", "cron": "61 * * * *"}, "context.sources.s"),
    ({"type": "schedule", "cron": "0 7 * * *", "timezone": "Mars/Olympus"}, "Mars/Olympus"),
    ({"type": "schedule"}, "give one of cron, every or at"),
    ({"type": "schedule", "cron": "0 7 * * *", "every": "1h"}, "give one of"),
    ({"type": "feed", "url": "https://x/feed", "every": "1s"}, "at least 10s"),
    ({"type": "folder", "path": "/tmp", "cron": "0 7 * * *"}, "cron: a folder source"),
    ({"type": "carrier-pigeon"}, "carrier-pigeon"),
])
def test_a_bad_source_is_a_config_error_naming_it(table, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        parse_context({"context": {"sources": {"s": table}}})


def test_the_documented_example_is_valid(tmp_path, monkeypatch):
    """docs/context.md's tenshu.toml (its blocks together) loads as a whole: its agents,
    sources, triggers, channels and pipelines, and means what it says."""
    import re
    from pathlib import Path

    from tenshu.config import load_server_settings

    monkeypatch.setenv("TENSHU_HOME", str(tmp_path))
    docs = (Path(__file__).resolve().parents[2] / "docs" / "context.md").read_text()
    example = "\n".join(re.findall(r"```toml\n(.*?)```", docs, re.S))
    file = tmp_path / "tenshu.toml"
    file.write_text('[[models]]\nname = "qwen"\nbackend = "openai"\n'
                    'endpoints = ["http://127.0.0.1:9/v1"]\n\n' + example)
    context = load_server_settings(file).context
    assert [s.type for s in context.sources] == ["folder", "feed", "http", "schedule"]
    assert {t.name: t.notify for t in context.triggers} == {
        "brief": ("phone", "inbox"), "heartbeat": ("phone",), "sales-report": ("inbox",),
        "drafts": ("phone",)}
    assert [(p.name, p.type) for p in context.pipelines] == [("sales", "analyst"),
                                                              ("posts", "draft")]
    assert context.sources[3].schedule().zone.key == "Europe/Paris"
