"""The context engine inside a real server: events become agent runs through triggers, once per
event; failures are retried with backoff and then listed; a heartbeat's "nothing to report"
is not sent; a restart during a run neither loses nor repeats it; and each person sees only
their own deliveries and inbox.

The agents' model is an OpenAI-compatible server on loopback that answers with the task it was
given (or fails, or is slow, when the task says so), reached through tenshu's real upstream
backend: so a test reads, in the run's answer, exactly what the trigger's template made of the
event. The engine's clock is a test's, so no test sleeps for a backoff.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiohttp import web

from tenshu.api.server import build_server
from tenshu.config import ModelSpec, ServerSettings
from tenshu.config.agents import AgentSpec, AgentsSettings
from tenshu.config.context import ContextSettings, SourceSpec, TriggerSpec
from tenshu.context.events import Event
from tenshu.store.people import Principal
from tests.api.live import free_port
from tests.chat_stub import chat_server, stream_reply


class Echo:
    """The model: answers "DONE: <task>"; a task with "fail" gets a 500, one with "quiet" the
    heartbeat's answer, one with "slow" waits for `release` first."""

    def __init__(self) -> None:
        self.tasks: list[str] = []
        self.release = asyncio.Event()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        task = body["messages"][-1]["content"]
        task = task if isinstance(task, str) else " ".join(p.get("text", "") for p in task)
        self.tasks.append(task)
        if "fail" in task:
            return web.json_response({"error": {"message": "the model fell over"}}, status=500)
        if "slow" in task:
            await self.release.wait()
        reply = "NOTHING TO REPORT" if "quiet" in task else f"DONE: {task}"
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        return await stream_reply(request, {"role": "assistant", "content": reply}, "stop",
                                  usage)


@pytest.fixture
async def echo():
    model = Echo()
    async with chat_server(model.chat) as model.url:
        yield model
        model.release.set()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def settings(echo: Echo, tmp_path, **trigger) -> ServerSettings:
    agents = AgentsSettings((AgentSpec("clerk", "echo", max_tokens=64),))
    options = {"source": "news", "agent": "clerk", "owner": "ana", "notify": ("inbox",),
               "input": "Brief ana on {{ event.payload.title }}", "max_attempts": 2,
               "backoff_s": 30.0, **trigger}
    context = ContextSettings(
        sources=(SourceSpec("news", "schedule", at="2030-01-01T00:00:00+00:00"),),
        triggers=(TriggerSpec("brief", **options),))
    return ServerSettings(port=free_port(), embedder=False, agents=agents, context=context,
                          models=(ModelSpec("echo", backend="openai", endpoints=(echo.url,)),))


class Running:
    """A server built and started in the test's own event loop (no HTTP listener needed for
    the engine; the API is reached through httpx's ASGI transport)."""

    def __init__(self, settings: ServerSettings, state, clock: Clock) -> None:
        self.server = build_server(settings, state_db=state, jobs=[])
        self.app = self.server.app
        self.clock = clock

    async def __aenter__(self):
        self.engine = self.app.state.context
        self.engine.clock = self.clock  # before the start: what it takes up reads it too
        self.lifespan = self.app.router.lifespan_context(self.app)
        await self.lifespan.__aenter__()
        self.store = self.server.store
        return self

    async def __aexit__(self, *exc):
        await self.lifespan.__aexit__(None, None, None)

    def api(self, key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                 base_url="http://127.0.0.1", headers={
                                     "Authorization": f"Bearer {key}"})


def news(key: str, title: str, at: datetime | None = None) -> Event:
    extra = {} if at is None else {"at": at}
    return Event("news", key, "feed.entry", {"title": title, "link": f"https://x/{key}"},
                 **extra)


def deliveries(tenshu, who: str = "ana") -> list:
    return tenshu.store.context.deliveries(Principal.of(tenshu.store.users.get(who)))


def people(store) -> dict[str, str]:
    if store.users.get("ana") is None:
        store.users.add("ana")
        store.users.add("ben")
    return {name: store.keys.create(f"{name}-{len(store.keys.list())}", user=name)[1]
            for name in ("ana", "ben")}


async def test_an_event_becomes_one_run_and_a_note_in_its_owners_inbox(echo, tmp_path):
    clock = Clock()
    async with Running(settings(echo, tmp_path), tmp_path / "s.db", clock) as tenshu:
        keys = people(tenshu.store)
        event_id = await tenshu.engine.emit(news("e1", "the moat froze"))
        assert await tenshu.engine.emit(news("e1", "the moat froze")) is None  # seen already
        await tenshu.engine.settle()
        assert [d.status for d in deliveries(tenshu)] == ["succeeded"]
        assert echo.tasks == ["Brief ana on the moat froze"]
        await tenshu.engine.settle()  # nothing twice
        async with tenshu.api(keys["ana"]) as ana:
            inbox = (await ana.get("/tenshu/v1/inbox")).json()
            (item,) = inbox["data"]
            assert inbox["unread"] == 1 and item["title"] == "brief: the moat froze"
            assert item["body"] == "DONE: Brief ana on the moat froze"
            (delivery,) = (await ana.get("/tenshu/v1/context/deliveries")).json()["data"]
            assert (delivery["event_id"], delivery["status"]) == (event_id, "succeeded")
            run = (await ana.get(f"/tenshu/v1/runs/{delivery['run_id']}")).json()
            assert run["agent"] == "clerk" and run["status"] == "succeeded"
            assert (await ana.post(f"/tenshu/v1/inbox/{item['id']}/read")).status_code == 200
            assert (await ana.get("/tenshu/v1/inbox")).json()["unread"] == 0
        async with tenshu.api(keys["ben"]) as ben:
            assert (await ben.get("/tenshu/v1/inbox")).json()["data"] == []
            assert (await ben.get("/tenshu/v1/context/deliveries")).json()["data"] == []
            assert (await ben.post(f"/tenshu/v1/inbox/{item['id']}/read")).status_code == 404
            assert (await ben.get("/tenshu/v1/context/events")).status_code == 403
    # a restart does not deliver the event again
    async with Running(settings(echo, tmp_path), tmp_path / "s.db", clock) as tenshu:
        assert await tenshu.engine.emit(news("e1", "the moat froze")) is None
        await tenshu.engine.settle()
    assert len(echo.tasks) == 1


async def test_a_failing_run_is_retried_with_backoff_then_listed_and_retried_by_hand(
        echo, tmp_path):
    clock = Clock()
    async with Running(settings(echo, tmp_path), tmp_path / "s.db", clock) as tenshu:
        keys = people(tenshu.store)
        event_id = await tenshu.engine.emit(news("e2", "fail please"))
        await tenshu.engine.settle()
        (first,) = deliveries(tenshu)
        assert (first.status, first.attempts) == ("pending", 1) and "fell over" in first.error
        assert first.next_at == clock.now + timedelta(seconds=30)
        clock.now += timedelta(seconds=29)
        await tenshu.engine.settle()  # not before its backoff
        assert len(echo.tasks) == 1
        clock.now += timedelta(seconds=2)
        await tenshu.engine.settle()
        (second,) = deliveries(tenshu)
        assert (second.status, second.attempts) == ("failed", 2)  # max_attempts 2: given up
        assert len(echo.tasks) == 2
        async with tenshu.api(keys["ana"]) as ana:
            (failed,) = (await ana.get("/tenshu/v1/context/deliveries",
                                       params={"status": "failed"})).json()["data"]
            assert failed["attempts"] == 2 and "fell over" in failed["error"]
            path = f"/tenshu/v1/context/deliveries/{event_id}/brief/retry"
            async with tenshu.api(keys["ben"]) as ben:
                assert (await ben.post(path)).status_code == 404  # not his
            retried = await ana.post(path)
            assert retried.status_code == 200 and retried.json()["status"] == "pending"
            assert (await ana.post(path)).status_code == 409  # only a failed one
        await tenshu.engine.settle()
        (third,) = deliveries(tenshu)
        assert (third.status, third.attempts) == ("pending", 1) and len(echo.tasks) == 3
        assert tenshu.store.context.inbox(Principal.of(tenshu.store.users.get("ana"))) == []


async def test_a_quiet_heartbeat_notifies_nobody(echo, tmp_path):
    clock = Clock()
    async with Running(settings(echo, tmp_path), tmp_path / "s.db", clock) as tenshu:
        people(tenshu.store)
        await tenshu.engine.emit(news("e3", "quiet night"))
        await tenshu.engine.emit(news("e4", "a loud morning"))
        await tenshu.engine.settle()
        assert [d.status for d in deliveries(tenshu)] == ["succeeded", "succeeded"]
        ana = Principal.of(tenshu.store.users.get("ana"))
        assert [i.title for i in tenshu.store.context.inbox(ana)] == ["brief: a loud morning"]


async def test_a_template_naming_what_the_event_lacks_fails_at_once_saying_so(echo, tmp_path):
    clock = Clock()
    config = settings(echo, tmp_path, input="{{ event.payload.author }} wrote")
    async with Running(config, tmp_path / "s.db", clock) as tenshu:
        people(tenshu.store)
        await tenshu.engine.emit(news("e5", "no author"))
        await tenshu.engine.settle()
        (failed,) = deliveries(tenshu)
        assert (failed.status, failed.attempts) == ("failed", 1) and "author" in failed.error
        assert echo.tasks == []


async def test_a_restart_during_a_run_finishes_it_once(echo, tmp_path):
    clock = Clock()
    async with Running(settings(echo, tmp_path), tmp_path / "s.db", clock) as tenshu:
        people(tenshu.store)
        await tenshu.engine.emit(news("e6", "slow news"))
        for _ in range(200):  # until the run's model call reaches the model
            if echo.tasks:
                break
            await asyncio.sleep(0.05)
        assert echo.tasks == ["Brief ana on slow news"]
    # the server stopped mid-run: the delivery is still running, with its run recorded
    echo.release.set()
    async with Running(settings(echo, tmp_path), tmp_path / "s.db", clock) as tenshu:
        await tenshu.engine.wait_idle()
        ana = Principal.of(tenshu.store.users.get("ana"))
        (delivery,) = tenshu.store.context.deliveries(ana)
        assert (delivery.status, delivery.attempts) == ("succeeded", 1)
        assert len(tenshu.store.runs.list(ana)) == 1  # the same run, resumed
        assert [i.title for i in tenshu.store.context.inbox(ana)] == ["brief: slow news"]


@pytest.mark.parametrize("made", [False, True], ids=["before-the-run", "after-the-run"])
async def test_a_stop_while_the_run_is_being_made_starts_it_once(echo, tmp_path, monkeypatch,
                                                                 made):
    """The server stops just before the trigger's run is made, or just after: either way the
    next start ends with one run, delivered once."""
    clock = Clock()
    async with Running(settings(echo, tmp_path), tmp_path / "s.db", clock) as tenshu:
        people(tenshu.store)
        reached = asyncio.Event()
        create = tenshu.app.state.agents.create

        async def stopped_here(*args, **kwargs):
            if made:
                await create(*args, **kwargs)
            reached.set()
            await asyncio.Event().wait()  # the server stops here

        monkeypatch.setattr(tenshu.app.state.agents, "create", stopped_here)
        await tenshu.engine.emit(news("e7", "the gate creaks"))
        await asyncio.wait_for(reached.wait(), 60)
    monkeypatch.undo()
    async with Running(settings(echo, tmp_path), tmp_path / "s.db", clock) as tenshu:
        await tenshu.engine.settle()
        ana = Principal.of(tenshu.store.users.get("ana"))
        (delivery,) = deliveries(tenshu)
        assert (delivery.status, delivery.attempts) == ("succeeded", 1)
        (run,) = tenshu.store.runs.list(ana)  # one run, made once
        assert run.id == delivery.run_id and run.status == "succeeded"
        assert [i.title for i in tenshu.store.context.inbox(ana)] == ["brief: the gate creaks"]


async def test_old_events_are_emptied_once_nothing_will_read_them_and_stay_known(echo,
                                                                                 tmp_path):
    clock = Clock()
    async with Running(settings(echo, tmp_path), tmp_path / "s.db", clock) as tenshu:
        people(tenshu.store)
        # noticed at the test's clock (Event.at defaults to the wall's): compact() counts
        # keep_days from the events' own time
        done = await tenshu.engine.emit(news("e8", "old news", clock.now))
        failed = await tenshu.engine.emit(news("e9", "fail news", clock.now))
        await tenshu.engine.settle()
        clock.now += timedelta(minutes=5)  # past the backoff: the second attempt fails too
        await tenshu.engine.settle()
        assert sorted(d.status for d in deliveries(tenshu)) == ["failed", "succeeded"]
        assert await tenshu.engine.compact() == 0  # within keep_days (30)

        clock.now += timedelta(days=31)
        assert await tenshu.engine.compact() == 1

        context = tenshu.store.context
        assert context.event(done).payload == {}
        assert context.event(failed).payload["title"] == "fail news"  # may be retried by hand
        assert await tenshu.engine.emit(news("e8", "old news")) is None  # still known


async def test_a_file_dropped_in_a_watched_folder_lands_in_its_owners_memory(echo, tmp_path):
    """The folder-to-memory pipeline end to end: a real watcher, the ingest action, the inbox."""
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "old.md").write_text("# Old\n\nAlready here before the server started.")
    context = ContextSettings(
        sources=(SourceSpec("drop", "folder", path=str(folder), patterns=("*.md",)),),
        triggers=(TriggerSpec("file-it", source="drop", action="ingest", collection="notes",
                              owner="ana", notify=("inbox",)),))
    config = ServerSettings(port=free_port(), context=context,
                            models=(ModelSpec("echo", backend="openai", endpoints=(echo.url,)),))
    async with Running(config, tmp_path / "s.db", Clock()) as tenshu:
        people(tenshu.store)
        for _ in range(600):  # until the watcher has taken its first look (what is there)
            if tenshu.store.context.cursor("drop"):
                break
            await asyncio.sleep(0.05)
        (folder / "moat.md").write_text("# The moat\n\nThe moat key is under the third stone.")
        for _ in range(600):
            await tenshu.engine.settle()
            if any(d.status == "succeeded" for d in deliveries(tenshu)):
                break
            await asyncio.sleep(0.1)
        (delivery,) = deliveries(tenshu)  # old.md was there already: not an event
        assert delivery.status == "succeeded", delivery.error
        ana = Principal.of(tenshu.store.users.get("ana"))
        hits = await tenshu.app.state.memory.search(ana, "where is the moat key", ["notes"])
        assert "third stone" in hits[0].text and hits[0].source.endswith("moat.md")
        (note,) = tenshu.store.context.inbox(ana)
        assert note.title == "file-it: moat.md" and "1 added" in note.body
        ben = Principal.of(tenshu.store.users.get("ben"))
        assert tenshu.store.collections.list(ben) == []  # ana's memory, not his


async def test_a_schedule_triggers_the_analyst_pipeline_whose_report_reaches_the_inbox(
        tmp_path, monkeypatch):
    """A pipeline trigger end to end: a due time, the analyst over a CSV with the served model
    (grammar-held JSON), the report and chart in the owner's workspace, a note in the inbox."""
    from tenshu.config.pipelines import PipelineSpec

    monkeypatch.setenv("TENSHU_HOME", str(tmp_path / "home"))
    rows = ["day,region,sales"] + [f"2026-11-{d:02d},{r},{100 + d * (2 if r == 'north' else 1)}"
                                   for d in range(1, 31) for r in ("north", "south")]
    (tmp_path / "sales.csv").write_text("\n".join(rows) + "\n")
    context = ContextSettings(
        sources=(SourceSpec("daily", "schedule", cron="0 7 * * *"),),
        triggers=(TriggerSpec("report", source="daily", action="pipeline", pipeline="sales",
                              owner="ana", notify=("inbox",)),),
        pipelines=(PipelineSpec("sales", "analyst", model="tenshu-tiny",
                                csv=str(tmp_path / "sales.csv"), group_by="region"),))
    config = ServerSettings(port=free_port(), embedder=False, context=context,
                            kv_cache_memory_gib=0.25)
    async with Running(config, tmp_path / "s.db", Clock()) as tenshu:
        people(tenshu.store)
        await tenshu.engine.emit(Event("daily", "2026-12-06T07:00:00+00:00", "schedule.due",
                                       {"due": "2026-12-06T07:00:00+00:00"}))
        await tenshu.engine.settle()
        (delivery,) = deliveries(tenshu)
        assert delivery.status == "succeeded", delivery.error
        ana = tenshu.store.users.get("ana")
        reports = tmp_path / "home" / "workspaces" / str(ana.id) / "pipelines" / "reports"
        report = (reports / "2026-12-06-sales.md").read_text()
        assert "north" in report and "2026-12-06-sales.png" in report
        assert (reports / "2026-12-06-sales.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        (note,) = tenshu.store.context.inbox(Principal.of(ana))
        assert note.source == "trigger:report"
