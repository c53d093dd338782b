"""Energy-aware scheduling: the policy ([jobs]) against what a probe sees, a heavy job's run
deferred until the machine is on mains, idle and within the hours (or given up when its next
run comes due first), runs by hand that never wait, and the energy each run used, from RAPL
counters in a sysfs tree laid out as the kernel lays it out (the real one where it is
readable). The clock is the test's and the probe says what the test sets: the scheduler is
driven by check(), never by sleeping."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from tenshu.api.metrics import Metrics
from tenshu.config import load_jobs_settings, load_server_settings
from tenshu.config.jobs import JobsSettings
from tenshu.jobs import Conditions, EnergyMeter, FixedProbe, Job, Scheduler, SystemProbe
from tenshu.jobs.energy import SAFE_WATTS
from tenshu.jobs.policy import why_wait
from tenshu.jobs.schedule import parse_hours, parse_schedule
from tests.jobs.test_scheduler import BLOCK, WRITE, Finished, printed

RANGE_UJ = 262_143_328_850  # Intel's usual max_energy_range_uj
NIGHTLY = parse_schedule("0 3 * * *", "UTC")
NIGHT = JobsSettings(heavy_hours="22:00-06:00", timezone="UTC")  # across midnight


class Clock:
    """The scheduler's clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, **moved) -> None:
        self.now += timedelta(**moved)


class Ticks:
    """A monotonic clock for the meter, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def powercap(tmp_path: Path, zones: dict[str, int]) -> Path:
    """/sys/class/powercap as the kernel lays it out: each top-level zone (intel-rapl:N) a link
    to its folder under devices/, its subzones (core, uncore, dram: intel-rapl:N:M) inside it
    and linked beside it, and the control type's own folder (intel-rapl). `zones`: each zone's
    name ("package-0", "psys") and its counter in µJ, in the order of their numbers."""
    devices = tmp_path / "devices" / "virtual" / "powercap" / "intel-rapl"
    root = tmp_path / "class" / "powercap"
    root.mkdir(parents=True)
    devices.mkdir(parents=True)
    (devices / "enabled").write_text("1\n")
    (root / "intel-rapl").symlink_to(devices)
    for n, (name, uj) in enumerate(zones.items()):
        zone = devices / f"intel-rapl:{n}"
        _zone(zone, name, uj)
        (root / zone.name).symlink_to(zone)
        if name.startswith("package"):
            for m, sub in enumerate(("core", "uncore", "dram")):
                inner = zone / f"intel-rapl:{n}:{m}"
                _zone(inner, sub, uj // 2)  # inside the package's: summing it would count twice
                (root / inner.name).symlink_to(inner)
    return root


def _zone(folder: Path, name: str, uj: int) -> None:
    folder.mkdir()
    for file, text in {"name": name, "energy_uj": uj, "max_energy_range_uj": RANGE_UJ,
                       "enabled": 1, "constraint_0_name": "long_term",
                       "constraint_0_max_power_uw": 125_000_000,
                       "constraint_0_power_limit_uw": 65_000_000,
                       "constraint_0_time_window_us": 27_983_872}.items():
        (folder / file).write_text(f"{text}\n")


def counter(root: Path, n: int) -> Path:
    return root / f"intel-rapl:{n}" / "energy_uj"


# -- the policy ----------------------------------------------------------------------------------


def test_why_a_heavy_job_waits():
    now = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    quiet = Conditions(on_mains=True, load_per_core=0.1)
    assert why_wait(NIGHT, quiet, now) == ""
    assert why_wait(NIGHT, Conditions(on_mains=False), now) == "on battery"
    assert why_wait(NIGHT, Conditions(load_per_core=1.7), now) == \
        "busy: load 1.7 per core (max 0.5)"
    assert why_wait(NIGHT, Conditions(load_per_core=0.5), now) == \
        "busy: load 0.5 per core (max 0.5)"  # below the threshold, not at it
    assert why_wait(NIGHT, quiet, now.replace(hour=12)) == "outside 22:00-06:00 (UTC)"
    assert why_wait(NIGHT, Conditions(last_request_at=now - timedelta(minutes=3)), now) == \
        "a request 3 min ago"
    assert why_wait(NIGHT, Conditions(last_request_at=now - timedelta(seconds=5)), now) == \
        "a request just now"
    assert why_wait(NIGHT, Conditions(last_request_at=now - timedelta(minutes=15)), now) == ""
    assert why_wait(NIGHT, Conditions(in_flight=2), now) == "answering 2 request(s)"
    morning = now.replace(hour=7)
    assert why_wait(NIGHT, Conditions(False, 2.25, morning, 0), morning) == \
        "on battery; busy: load 2.25 per core (max 0.5); outside 22:00-06:00 (UTC); " \
        "a request just now"
    lenient = JobsSettings(require_mains=False, idle_minutes=0, max_load=4)
    assert why_wait(lenient, Conditions(False, 3.9, now, 1), now.replace(hour=12)) == ""


def test_hours_across_midnight_and_in_a_time_zone():
    night = parse_hours("22:00-06:00")
    assert night.label == "22:00-06:00"
    paris = parse_hours("01:00 - 06:00", "Europe/Paris")
    assert paris.label == "01:00-06:00 (Europe/Paris)"
    winter = datetime(2026, 1, 10, tzinfo=UTC)
    # 00:30 UTC is 01:30 in Paris (UTC+1): in; 05:30 UTC is 06:30 there: out
    assert paris.contains(winter.replace(hour=0, minute=30))
    assert not paris.contains(winter.replace(hour=5, minute=30))
    assert parse_hours("") is None
    for text in ("1-6", "25:00-06:00", "01:00-06:60", "06:00-06:00"):
        with pytest.raises(ValueError, match=f"'{text}'"):
            parse_hours(text)


def test_jobs_settings_from_tenshu_toml(tmp_path):
    path = tmp_path / "tenshu.toml"
    path.write_text('[server]\nport = 7400\n\n[jobs]\nheavy_hours = "01:00-06:00"\n'
                    'timezone = "Europe/Paris"\nrequire_mains = false\nmax_load = 1\n'
                    'idle_minutes = 30\n')
    assert load_server_settings(path).port == 7400  # [jobs] is no unknown key to the server
    settings = load_jobs_settings(path)
    assert settings == JobsSettings("01:00-06:00", "Europe/Paris", False, 1.0, 30.0)
    assert settings.hours.label == "01:00-06:00 (Europe/Paris)"
    assert load_jobs_settings(tmp_path / "missing.toml") == JobsSettings()
    assert JobsSettings().hours is None  # by default: any time, on mains, idle


@pytest.mark.parametrize(("text", "says"), [
    ('heavy_hours = "1am-6am"', "jobs.heavy_hours: '1am-6am': expected two times of day"),
    ('timezone = "Nowhere/City"', "jobs.timezone: unknown time zone 'Nowhere/City'"),
    ("max_load = 0", "jobs.max_load: must be > 0"),
    ("max_load = true", "jobs.max_load: must be a number"),
    ("idle_minutes = -1", "jobs.idle_minutes: must be >= 0"),
    ('require_mains = "yes"', "jobs.require_mains: must be true or false"),
    ("heavy = true", "jobs: unknown key(s) heavy"),
])
def test_bad_jobs_settings_are_one_clear_error(tmp_path, text, says):
    path = tmp_path / "tenshu.toml"
    path.write_text(f"[jobs]\n{text}\n")
    with pytest.raises(ValueError) as caught:
        load_jobs_settings(path)
    assert says in str(caught.value) and "tenshu.toml" in str(caught.value)


def test_the_real_probe_on_this_machine():
    seen = SystemProbe().read()
    assert isinstance(seen.on_mains, bool)
    if psutil.sensors_battery() is None:  # no battery: on mains
        assert seen.on_mains
    assert 0 <= seen.load_per_core < 1000
    assert (seen.last_request_at, seen.in_flight) == (None, 0)  # no gateway, no requests


# -- the energy counters -------------------------------------------------------------------------


def test_the_meter_sums_the_packages_across_a_wrap(tmp_path):
    root = powercap(tmp_path, {"package-0": 5_000_000, "package-1": RANGE_UJ - 1_000_000,
                               "psys": 9_000_000})
    meter = EnergyMeter.open(root, clock=Ticks())
    assert meter.available and meter.unavailable == ""
    assert [z.name for z in meter.zones] == ["package-0", "package-1"]  # psys holds them both
    start = meter.read()
    counter(root, 0).write_text("12000000\n")  # +7 J
    counter(root, 1).write_text("2000000\n")  # wrapped: 1 J to the top, then 2 J
    assert meter.read().since(start) == pytest.approx(10.0)
    assert meter.sample_every == 30.0  # 262 kJ lasts 262 s at SAFE_WATTS: well within it


def test_the_platform_zone_where_there_is_no_package(tmp_path):
    root = powercap(tmp_path, {"psys": 1_000_000})
    meter = EnergyMeter.open(root, clock=Ticks())
    start = meter.read()
    counter(root, 0).write_text("4000000\n")
    assert [z.name for z in meter.zones] == ["psys"]
    assert meter.read().since(start) == pytest.approx(3.0)


def test_reads_too_far_apart_lose_count_rather_than_guess(tmp_path):
    root = powercap(tmp_path, {"package-0": 1_000_000})
    ticks = Ticks()
    meter = EnergyMeter.open(root, clock=ticks)
    start = meter.read()
    ticks.now += RANGE_UJ / 1e6 / SAFE_WATTS  # it may have wrapped more than once since
    counter(root, 0).write_text("3000000\n")
    after_gap = meter.read()
    assert after_gap.since(start) is None and after_gap.gaps == 1
    ticks.now += 1
    counter(root, 0).write_text("4000000\n")
    assert meter.read().since(after_gap) == pytest.approx(1.0)  # counting again


def test_counters_that_cannot_be_read_say_why(tmp_path):
    assert "is not there" in EnergyMeter.open(tmp_path / "none").unavailable
    assert EnergyMeter.open(tmp_path / "none").read() is None
    (tmp_path / "empty").mkdir()
    assert "no RAPL package counters" in EnergyMeter.open(tmp_path / "empty").unavailable
    if os.geteuid() == 0:
        pytest.skip("root reads a file whatever its mode: no refusal to see here")
    root = powercap(tmp_path / "rapl", {"package-0": 1_000_000})
    counter(root, 0).chmod(0o000)  # as the kernel has it since 5.10 (0400, root's) to others
    meter = EnergyMeter.open(root)
    assert not meter.available and meter.read() is None
    assert meter.unavailable.endswith("intel-rapl:0/energy_uj is readable by root only")


def test_the_machines_own_counters():
    meter = EnergyMeter.open()
    if not meter.available:
        pytest.skip(f"no readable energy counters here: {meter.unavailable}")
    start = meter.read()
    sum(range(2_000_000))  # some work
    assert meter.read().since(start) >= 0


# -- the scheduler -------------------------------------------------------------------------------


@pytest.fixture
def rapl(tmp_path) -> Path:
    return powercap(tmp_path / "sys", {"package-0": 1_000_000})


async def night_scheduler(store, logs, rapl, *jobs: Job, probe: FixedProbe,
                          clock: Clock | None = None) -> Scheduler:
    """A scheduler at 02:59 UTC, a minute before its nightly jobs are due."""
    clock = clock or Clock(datetime(2026, 3, 2, 2, 59, tzinfo=UTC))
    scheduler = Scheduler(jobs, store.jobs, logs=logs, policy=NIGHT, probe=probe,
                          meter=EnergyMeter.open(rapl), clock=clock)
    await scheduler.start()
    return scheduler


async def test_a_deferred_heavy_job_starts_once_the_machine_allows(store, logs, rapl, tmp_path):
    release, finished = tmp_path / "release", Finished()
    probe = FixedProbe(Conditions(on_mains=False))
    clock = Clock(datetime(2026, 3, 2, 2, 59, tzinfo=UTC))
    train = Job("train", NIGHTLY, [*BLOCK, str(release)], heavy=True, on_done=finished)
    scheduler = await night_scheduler(store, logs, rapl, train, probe=probe, clock=clock)
    try:
        clock.at(minutes=2)  # 03:01: due, on battery
        await scheduler.check()
        (waiting,) = store.jobs.runs("train")
        assert (waiting.trigger, waiting.status, waiting.why) == \
            ("schedule", "deferred", "on battery")
        assert scheduler.deferred("train").id == waiting.id
        assert scheduler.running("train") is None
        assert scheduler.state("train").next_run_at == datetime(2026, 3, 3, 3, tzinfo=UTC)

        request = datetime(2026, 3, 2, 3, 1, tzinfo=UTC)
        for (hour, minute), conditions, why in (
                ((3, 2), Conditions(load_per_core=1.7), "busy: load 1.7 per core (max 0.5)"),
                ((3, 3), Conditions(last_request_at=request), "a request 2 min ago"),
                ((6, 3), Conditions(), "outside 22:00-06:00 (UTC)")):
            probe.conditions = conditions
            clock.now = clock.now.replace(hour=hour, minute=minute)
            await scheduler.check()
            (still,) = store.jobs.runs("train")
            assert (still.id, still.status, still.why) == (waiting.id, "deferred", why)

        clock.now = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)  # within the night's hours
        await scheduler.check()
        run = scheduler.running("train")
        assert run.id == waiting.id and run.started_at == clock.now
        assert scheduler.deferred("train") is None
        await printed(run, "ready")
        counter(rapl, 0).write_text("43000000\n")  # the package used 42 J while it ran
        release.touch()
        ended = await finished.next()
    finally:
        await scheduler.close()
    assert (ended.status, ended.energy_j) == ("succeeded", pytest.approx(42.0))
    assert ended.why == "waited 19 h 29 min (outside 22:00-06:00 (UTC))"
    assert store.jobs.runs("train") == [ended]
    assert scheduler.joules == {"train": pytest.approx(42.0)}


async def test_a_deferred_run_is_given_up_when_the_next_comes_due(store, logs, rapl, tmp_path):
    probe = FixedProbe(Conditions(on_mains=False))
    clock = Clock(datetime(2026, 3, 2, 2, 59, tzinfo=UTC))
    train = Job("train", NIGHTLY, [*WRITE, str(tmp_path / "out")], heavy=True)
    scheduler = await night_scheduler(store, logs, rapl, train, probe=probe, clock=clock)
    try:
        clock.at(minutes=2)
        await scheduler.check()
        clock.at(days=1)  # on battery all day: the next night's run comes due first
        await scheduler.check()
        newer, older = store.jobs.runs("train")
        assert (older.status, older.why) == \
            ("skipped", "given up: the next run came due first (on battery)")
        assert older.finished_at == clock.now and older.energy_j is None
        assert (newer.status, newer.why) == ("deferred", "on battery")
        assert scheduler.deferred("train").id == newer.id
        paused = await scheduler.pause("train")  # a paused job's waiting run is given up too
        assert paused.paused and scheduler.deferred("train") is None
    finally:
        await scheduler.close()
    assert store.jobs.run(newer.id).why == "paused while it waited (on battery)"
    assert not (tmp_path / "out").exists()  # nothing ran


async def test_runs_by_hand_and_light_jobs_never_wait(store, logs, rapl, tmp_path):
    probe = FixedProbe(Conditions(on_mains=False, load_per_core=9.0))
    clock = Clock(datetime(2026, 3, 2, 2, 59, tzinfo=UTC))
    finished = Finished()
    train = Job("train", NIGHTLY, [*WRITE, str(tmp_path / "train")], heavy=True,
                on_done=finished)
    tidy = Job("tidy", NIGHTLY, [*WRITE, str(tmp_path / "tidy")], on_done=finished)
    scheduler = await night_scheduler(store, logs, rapl, train, tidy, probe=probe, clock=clock)
    try:
        manual = await scheduler.wait(await scheduler.trigger("train"))
        assert (manual.status, manual.trigger, manual.why) == ("succeeded", "manual", "")
        assert await finished.next() == manual
        clock.at(minutes=2)
        await scheduler.check()
        assert (await finished.next()).job == "tidy"  # light: ran when due, on battery
        waiting = scheduler.deferred("train")
        assert waiting is not None and waiting.why.startswith("on battery; busy: load 9")
        by_hand = await scheduler.wait(await scheduler.trigger("train"))
    finally:
        await scheduler.close()
    assert by_hand.status == "succeeded"
    assert store.jobs.run(waiting.id).status == "skipped"
    assert store.jobs.run(waiting.id).why == f"run by hand instead ({by_hand.id})"
    assert manual.energy_j == 0.0 and by_hand.energy_j == 0.0  # the fake counter stood still


async def test_a_run_waiting_when_the_server_stops_is_caught_up(store, logs, rapl, tmp_path):
    probe = FixedProbe(Conditions(on_mains=False))
    clock = Clock(datetime(2026, 3, 2, 2, 59, tzinfo=UTC))
    train = Job("train", NIGHTLY, [*WRITE, str(tmp_path / "out")], heavy=True, catch_up=True)
    scheduler = await night_scheduler(store, logs, rapl, train, probe=probe, clock=clock)
    clock.at(minutes=2)
    await scheduler.check()
    await scheduler.close()
    (waiting,) = store.jobs.runs("train")
    assert waiting.status == "deferred"  # the next start decides

    clock.at(minutes=30)
    scheduler = await night_scheduler(store, logs, rapl, train, probe=probe, clock=clock)
    try:
        caught_up, old = store.jobs.runs("train")
        assert (old.id, old.status) == (waiting.id, "cancelled")
        assert (caught_up.trigger, caught_up.status, caught_up.why) == \
            ("catch-up", "deferred", "on battery")
        probe.conditions = Conditions()
        await scheduler.check()
        ended = await scheduler.wait(caught_up.id)
    finally:
        await scheduler.close()
    assert (ended.status, ended.why) == ("succeeded", "waited 0 min (on battery)")


# -- /metrics ------------------------------------------------------------------------------------


def test_metrics_show_the_joules_of_jobs_and_per_1k_engine_tokens(tmp_path, rapl):
    from tenshu.api.server import build_server
    from tenshu.config import ServerSettings

    server = build_server(ServerSettings(embedder=False, log_level="warning"),
                          state_db=tmp_path / "state.db", jobs=[])
    try:
        metrics = Metrics(meter=EnergyMeter.open(rapl))
        metrics.attach(server.gateway)
        scheduler = Scheduler([Job("train", None, WRITE, heavy=True)], server.store.jobs,
                              meter=EnergyMeter.open(rapl))
        scheduler.joules["train"] += 1234.5  # what its runs used, as _run adds it
        metrics.attach_scheduler(scheduler)
        first = metrics.render().decode()
        assert 'tenshu_job_energy_joules_total{job="train"} 1234.5' in first
        assert "tenshu_engine_joules_per_1k_tokens" not in first  # one scrape: no interval yet
        metrics.request_done("tenshu-tiny", 10, 400, 0, None, None)  # the engine's tokens
        metrics.request_done("elsewhere", 10, 999, 0, None, None)  # not the engine's
        counter(rapl, 0).write_text("21000000\n")  # 20 J since the last scrape
        second = metrics.render().decode()
        assert "tenshu_engine_joules_per_1k_tokens 50.0" in second  # 20 J / 400 tokens
        third = metrics.render().decode()
        assert "tenshu_engine_joules_per_1k_tokens" not in third  # no tokens since

        bare = Metrics(meter=EnergyMeter.open(tmp_path / "none"))  # no counters: no energy
        bare.attach(server.gateway)
        bare.attach_scheduler(Scheduler([], server.store.jobs,
                                        meter=EnergyMeter.open(tmp_path / "none")))
        bare.request_done("tenshu-tiny", 10, 400, 0, None, None)
        text = bare.render().decode() + bare.render().decode()
        assert "joules" not in text
    finally:
        server.gateway.close()
        server.store.close()


async def test_the_probe_sees_the_gateways_requests(tmp_path):
    import httpx

    from tenshu.api.server import build_server
    from tenshu.config import ServerSettings

    server = build_server(ServerSettings(embedder=False, log_level="warning"),
                          state_db=tmp_path / "state.db", jobs=[])
    probe = SystemProbe(server.gateway)
    try:
        assert probe.read().last_request_at is None
        before = datetime.now(UTC)
        transport = httpx.ASGITransport(app=server.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            answer = await http.post("/v1/chat/completions", json={
                "model": "tenshu-tiny", "max_tokens": 2,
                "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200, answer.text
        seen = probe.read()
        assert before <= seen.last_request_at <= datetime.now(UTC)
        assert seen.in_flight == 0
        assert why_wait(JobsSettings(max_load=1000), seen, datetime.now(UTC)) == \
            "a request just now"
    finally:
        await server.gateway.aclose()
        server.store.close()

