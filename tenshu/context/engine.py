"""The context engine: sources notice events, each event is stored once, and every trigger that
takes it delivers it as an agent run, once, with retries and a record of what failed for good.

    engine = ContextEngine(settings.context, store, agents, notifier)
    await engine.start()     # sources watch and poll; deliveries left running are taken up
    await engine.emit(event) # (what a source calls) stored once per (source, key)
    await engine.close()

A delivery (store/context.py) is an (event, trigger) pair. The loop claims the ones that are due
(pending -> running, the attempt counted, atomically), renders the trigger's input template over
the event (Jinja2, sandboxed, an unknown name an error rather than empty text), starts a run of
the trigger's agent as the trigger's owner, and follows it to its end, approval waits included.
A run that succeeds ends the delivery; its answer goes to the trigger's channels unless it is the
trigger's `quiet` answer (a heartbeat's "nothing to report"). A failure is tried again after
backoff_s, doubled after each attempt, until max_attempts; then the delivery is failed for good,
listed for its owner and retried only when they ask.

A restart resumes rather than repeats: a delivery whose run was under way waits for that run,
which the agents' service resumes from its journal; one whose run had not been recorded yet is
put back in line at once (the attempt already counted). The clock is injectable and
`deliver_due` does one pass, so tests never sleep for a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from starlette.concurrency import run_in_threadpool

from tenshu.config.context import INBOX, ContextSettings, SourceSpec, TriggerSpec
from tenshu.context.events import Event
from tenshu.context.schedules import ScheduleSource
from tenshu.core.errors import NotFoundError
from tenshu.store.people import Principal
from tenshu.store.runs import new_run_id

if TYPE_CHECKING:
    from tenshu.agents.service import AgentService
    from tenshu.store.context import Delivery, StoredEvent

log = logging.getLogger("tenshu.context")

_RECHECK = 60.0  # the longest the loop sleeps without looking at the store
_COMPACT_EVERY = timedelta(hours=1)
MAX_BACKOFF = 6 * 3600.0  # a retry waits at most this long
MAX_CONCURRENT = 4  # deliveries whose runs go on at once


def _now() -> datetime:
    return datetime.now(UTC)


class StoreCursor:
    """A source's cursor kept in the state database (read once at start, written on change)."""

    def __init__(self, store, source: str, state: dict) -> None:
        self.store, self.source, self.state = store, source, state

    def get(self) -> dict:
        return dict(self.state)

    async def put(self, state: dict) -> None:
        self.state = dict(state)
        await run_in_threadpool(self.store.context.put_cursor, self.source, self.state)


@dataclass
class Outcome:
    """How one attempt ended: the delivery's new status, and why."""

    status: str  # succeeded | pending (tried again) | failed
    error: str = ""
    run_id: str | None = None


class ContextEngine:
    def __init__(self, settings: ContextSettings, store, agents: AgentService, notifier=None,
                 *, memory=None, clock: Callable[[], datetime] = _now,
                 sources: dict | None = None) -> None:
        self.settings = settings
        self.store = store
        self.agents = agents
        self.memory = memory  # memory.Memory, for ingest triggers
        self.notifier = notifier  # context.notify.Notifier, or None: only the inbox
        self.clock = clock
        self.triggers = {t.name: t for t in settings.triggers}
        self.sources = sources if sources is not None else {
            s.name: make_source(s, clock) for s in settings.sources}
        self._templates = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._attempts: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)

    # -- the server's side -------------------------------------------------------------------

    async def start(self) -> None:
        """Take up deliveries a stopped server left running, start every source, and the loop
        that delivers."""
        for delivery in await run_in_threadpool(self.store.context.running):
            self._spawn_attempt(self._resume(delivery))
        for name, source in self.sources.items():
            state = await run_in_threadpool(self.store.context.cursor, name)
            cursor = StoreCursor(self.store, name, state)
            self._spawn(self._watch(name, source, cursor))
        self._spawn(self._loop())

    async def close(self) -> None:
        """Stop the sources and the loop. Attempts under way are left as they are: their runs
        stay in the agents' journal, and the next start takes them up."""
        self._stop.set()
        for task in [*self._tasks, *self._attempts]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._attempts, return_exceptions=True)

    def wake(self) -> None:
        """Look at the deliveries now (one was retried, or added from outside)."""
        self._wake.set()

    def _spawn(self, work) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn_attempt(self, work) -> asyncio.Task:
        task = asyncio.create_task(work)
        self._attempts.add(task)
        task.add_done_callback(self._attempts.discard)
        return task

    async def _watch(self, name: str, source, cursor: StoreCursor) -> None:
        """Run one source until the engine stops; a source that fails is logged and started
        again after a while (a folder that vanished may come back), never taking the others
        down."""
        while not self._stop.is_set():
            try:
                await source.run(self.emit, cursor, self._stop)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (logged; the source is tried again)
                log.error("context source %s failed: %s; trying again in %.0f s", name, exc,
                          _RECHECK)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=_RECHECK)

    # -- events in ---------------------------------------------------------------------------

    async def emit(self, event: Event) -> int | None:
        """Store an event (once per source and key) and queue it for every trigger that takes
        it; the new event's id, or None when it had been seen."""
        event_id = await run_in_threadpool(self.store.context.add_event, event.source,
                                           event.key, event.kind, event.payload, event.at)
        if event_id is None:
            return None
        log.info("context event %s %s: %s", event.source, event.kind, event.key[:200])
        for trigger in self.triggers.values():
            if trigger.source != event.source or (trigger.kinds and
                                                  event.kind not in trigger.kinds):
                continue
            owner = await self._owner(trigger)
            if owner is None:
                log.error("context trigger %s: no user named %r; event %s not delivered",
                          trigger.name, trigger.owner, event_id)
                continue
            await run_in_threadpool(self.store.context.add_delivery, event_id, trigger.name,
                                    owner.user_id, self.clock())
        self._wake.set()
        return event_id

    # -- deliveries out ----------------------------------------------------------------------

    async def _loop(self) -> None:
        compacted = None
        while not self._stop.is_set():
            self._wake.clear()
            try:
                await self.deliver_due()
                if compacted is None or self.clock() - compacted > _COMPACT_EVERY:
                    compacted = self.clock()
                    await self.compact()
            except Exception:  # a database that went away for a moment: logged, looked again
                log.exception("context deliveries could not be read")
            following = await run_in_threadpool(self.store.context.next_due)
            wait = _RECHECK if following is None else min(
                _RECHECK, max(0.05, (following - self.clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def deliver_due(self, wait: bool = False) -> list[Outcome]:
        """Start an attempt for every delivery that is due; with `wait`, their outcomes."""
        started = []
        for delivery in await run_in_threadpool(self.store.context.due, self.clock()):
            attempt = await run_in_threadpool(self.store.context.claim, delivery.event_id,
                                              delivery.trigger)
            if attempt is not None:
                started.append(self._spawn_attempt(self._attempt(delivery, attempt)))
        return list(await asyncio.gather(*started)) if wait else []

    async def compact(self) -> int:
        """Empty old events' payloads ([context] keep_days), once nothing will read them."""
        before = self.clock() - timedelta(days=self.settings.keep_days)
        emptied = await run_in_threadpool(self.store.context.compact, before)
        if emptied:
            log.info("context: emptied %d event(s) older than %g days", emptied,
                     self.settings.keep_days)
        return emptied

    async def wait_idle(self) -> None:
        """Until no attempt is under way."""
        while self._attempts:
            await asyncio.gather(*self._attempts, return_exceptions=True)

    async def settle(self) -> None:
        """Until every delivery due now has had its attempt and none is under way (what a
        test waits for; the loop and this claim atomically, so nothing runs twice). A delivery
        the loop has claimed but not yet started counts as under way: it is running in the
        store before its task exists."""
        context = self.store.context
        while True:
            await self.deliver_due()
            await self.wait_idle()
            if not (await run_in_threadpool(context.due, self.clock(), 1)
                    or await run_in_threadpool(context.running)):
                return
            await asyncio.sleep(0.02)

    async def _attempt(self, delivery: Delivery, attempt: int) -> Outcome:
        async with self._slots:
            trigger = self.triggers.get(delivery.trigger)
            try:
                if trigger is None:
                    raise _Failed(f"the trigger {delivery.trigger!r} is no longer configured",
                                  final=True)
                event = await run_in_threadpool(self.store.context.event, delivery.event_id)
                principal = await self._principal(delivery.owner_id)
                if trigger.action == "ingest":
                    return await self._ingest(delivery, trigger, event, principal)
                if trigger.action == "pipeline":
                    return await self._pipeline(delivery, trigger, event, principal)
                task = self.render(trigger, event)
                # the run's id is recorded before the run exists: a restart in between finds
                # an id with no run (and starts one), never a run it does not know of
                run_id = new_run_id()
                await run_in_threadpool(self.store.context.set_run, delivery.event_id,
                                        trigger.name, run_id)
                await self.agents.create(principal, trigger.agent, task, run_id=run_id)
                return await self._follow(delivery, trigger, event, principal, run_id, attempt)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (the attempt's failure, recorded)
                final = getattr(exc, "final", False) or trigger is None
                return await self._failed(delivery, trigger, attempt, str(exc) or
                                          type(exc).__name__, None, final=final)

    async def _resume(self, delivery: Delivery) -> Outcome:
        """A delivery that was running when the server stopped."""
        if delivery.run_id is None or not await self._run_exists(delivery):
            # stopped before its run was made: put it back in line (the attempt not counted)
            await run_in_threadpool(self.store.context.requeue, delivery.event_id,
                                    delivery.trigger, self.clock())
            self._wake.set()
            return Outcome("pending")
        async with self._slots:
            trigger = self.triggers.get(delivery.trigger)
            if trigger is None:
                return await self._failed(delivery, None, delivery.attempts, "the trigger is "
                                          "no longer configured", delivery.run_id, final=True)
            try:
                event = await run_in_threadpool(self.store.context.event, delivery.event_id)
                principal = await self._principal(delivery.owner_id)
                return await self._follow(delivery, trigger, event, principal, delivery.run_id,
                                          delivery.attempts)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (recorded)
                return await self._failed(delivery, trigger, delivery.attempts, str(exc),
                                          delivery.run_id, final=getattr(exc, "final", False))

    async def _run_exists(self, delivery: Delivery) -> bool:
        user = await run_in_threadpool(self.store.users.by_id, delivery.owner_id)
        if user is None:
            return True  # the owner is gone: following it fails the delivery, as it should
        try:
            await self.agents.get(Principal.of(user), delivery.run_id)
        except NotFoundError:
            return False
        return True

    async def _follow(self, delivery: Delivery, trigger: TriggerSpec, event: StoredEvent,
                      principal: Principal, run_id: str, attempt: int) -> Outcome:
        run = await self._ended(principal, run_id)
        if run.status != "succeeded":
            why = run.why or f"the run ended {run.status}"
            return await self._failed(delivery, trigger, attempt, why, run_id)
        await run_in_threadpool(self.store.context.finish, delivery.event_id, trigger.name,
                                "succeeded")
        quiet = trigger.quiet.strip().upper()
        if trigger.notify and not (quiet and run.result.strip().upper().startswith(quiet)):
            await self._tell(trigger, event, principal, run)
        return Outcome("succeeded", run_id=run_id)

    async def _ingest(self, delivery: Delivery, trigger: TriggerSpec, event: StoredEvent,
                      principal: Principal) -> Outcome:
        """A file event's file, or a feed entry's or item's link, into the owner's memory."""
        if self.memory is None:
            raise _Failed("this server keeps no memory to ingest into", final=True)
        payload = event.payload
        if isinstance(payload.get("path"), str):
            summary = await self.memory.ingest(principal, trigger.collection,
                                               [Path(payload["path"])])
            what = payload.get("relative") or payload["path"]
        elif (link := event.link()) is not None:
            summary = await self.memory.ingest_url(principal, trigger.collection, link)
            what = link
        else:
            raise _Failed(f"a {event.kind} event has no file or link to ingest", final=True)
        if summary.failed:
            raise _Failed("; ".join(f"{f.source}: {f.error}" for f in summary.failed))
        await run_in_threadpool(self.store.context.finish, delivery.event_id, trigger.name,
                                "succeeded")
        if trigger.notify:
            body = (f"{what}: {summary.added} added, {summary.updated} updated, "
                    f"{summary.chunks} chunks in {summary.collection}")
            await self._send(trigger, principal, f"{trigger.name}: {what}", body, None)
        return Outcome("succeeded")

    async def _pipeline(self, delivery: Delivery, trigger: TriggerSpec, event: StoredEvent,
                        principal: Principal) -> Outcome:
        """A shipped pipeline (context/pipelines/) over the event, as the owner."""
        from tenshu.config import tenshu_home
        from tenshu.context.pipelines import run_pipeline

        spec = next(p for p in self.settings.pipelines if p.name == trigger.pipeline)
        result = await run_pipeline(spec, event, principal, gateway=self.agents.gateway,
                                    home=tenshu_home(), now=self.clock())
        await run_in_threadpool(self.store.context.finish, delivery.event_id, trigger.name,
                                "succeeded")
        if trigger.notify:
            await self._send(trigger, principal, result.title, result.body, None)
        return Outcome("succeeded")

    async def _ended(self, principal: Principal, run_id: str):
        """The run once it has ended (an approval it waits for may take hours)."""
        queue = self.agents.subscribe(run_id)
        try:
            while True:
                run = await self.agents.get(principal, run_id)
                if run.ended or not self.agents.live(run_id):
                    return run
                while (await queue.get()) is not None:  # None: the run's end
                    pass
        finally:
            self.agents.unsubscribe(run_id, queue)

    async def _failed(self, delivery: Delivery, trigger: TriggerSpec | None, attempt: int,
                      error: str, run_id: str | None, final: bool = False) -> Outcome:
        if final or trigger is None or attempt >= trigger.max_attempts:
            log.error("context trigger %s gave up on event %s after %d attempt(s): %s",
                      delivery.trigger, delivery.event_id, attempt, error)
            await run_in_threadpool(self.store.context.finish, delivery.event_id,
                                    delivery.trigger, "failed", error)
            return Outcome("failed", error, run_id)
        wait = min(MAX_BACKOFF, trigger.backoff_s * 2 ** (attempt - 1))
        log.warning("context trigger %s, event %s, attempt %d failed: %s; again in %.0f s",
                    trigger.name, delivery.event_id, attempt, error, wait)
        await run_in_threadpool(self.store.context.finish, delivery.event_id, trigger.name,
                                "pending", error, self.clock() + timedelta(seconds=wait))
        self._wake.set()
        return Outcome("pending", error, run_id)

    # -- pieces ------------------------------------------------------------------------------

    def render(self, trigger: TriggerSpec, event: StoredEvent) -> str:
        """The task the agent is given: the trigger's template over the event."""
        try:
            return self._templates.from_string(trigger.input).render(event={
                "id": event.id, "source": event.source, "key": event.key, "kind": event.kind,
                "payload": event.payload, "at": event.at.isoformat()})
        except TemplateError as exc:
            raise _Failed(f"input template: {exc}", final=True) from None

    async def _tell(self, trigger: TriggerSpec, event: StoredEvent, principal: Principal,
                    run) -> None:
        """The run's answer to the trigger's channels (the inbox is the owner's)."""
        await self._send(trigger, principal, f"{trigger.name}: {_summary(event)}", run.result,
                         run.id)

    async def _send(self, trigger: TriggerSpec, principal: Principal, title: str, body: str,
                    run_id: str | None) -> None:
        if INBOX in trigger.notify:
            await run_in_threadpool(self.store.context.notify, principal.user_id, title, body,
                                    None, f"trigger:{trigger.name}", run_id)
        others = [name for name in trigger.notify if name != INBOX]
        if others and self.notifier is not None:
            from tenshu.context.notify import Notification

            await self.notifier.send(Notification(title, body), others)

    async def _owner(self, trigger: TriggerSpec) -> Principal | None:
        users = self.store.users
        user = await run_in_threadpool(users.get, trigger.owner) if trigger.owner else \
            await run_in_threadpool(users.owner)
        return Principal.of(user) if user is not None else None

    async def _principal(self, user_id: int) -> Principal:
        user = await run_in_threadpool(self.store.users.by_id, user_id)
        if user is None:
            raise _Failed(f"the trigger's owner (user {user_id}) no longer exists", final=True)
        return Principal.of(user)


class _Failed(Exception):
    def __init__(self, message: str, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


def _summary(event: StoredEvent) -> str:
    payload = event.payload
    for key in ("title", "name", "relative", "due"):
        if isinstance(payload.get(key), str) and payload[key]:
            return payload[key][:120]
    return event.kind


def make_source(spec: SourceSpec, clock: Callable[[], datetime] = _now):
    """The source a [context.sources.NAME] table describes."""
    if spec.type == "schedule":
        return ScheduleSource(spec, clock)
    from tenshu.context import sources

    return sources.from_spec(spec)
