"""The context engine's settings: [context.sources.*], [context.triggers.*] and
[notify.channels.*] in tenshu.toml.

    [context.sources.inbox]                  # files that appear in a folder
    type = "folder"
    path = "~/Inbox"
    patterns = ["*.md", "*.pdf"]

    [context.sources.news]                   # an RSS or Atom feed, polled
    type = "feed"
    url = "https://example.org/feed.xml"
    every = "15m"
    keywords = ["sqlite", "postgres"]

    [context.sources.orders]                 # an HTTP JSON endpoint, polled
    type = "http"
    url = "http://127.0.0.1:9000/orders"
    every = "5m"
    items = "data"                           # each new item of this list is an event
    id_field = "id"

    [context.sources.morning]                # a schedule: cron with a zone, `every 1h`, or `at`
    type = "schedule"
    cron = "0 7 * * *"
    timezone = "Europe/Paris"
    catch_up = true                          # a time missed while down fires once at start

    [context.triggers.brief]                 # each event of a source becomes an agent run
    source = "news"
    agent = "writer"
    owner = "ana"                            # whose run it is (default: the owner)
    input = "Draft a note on {{ event.payload.title }}: {{ event.payload.link }}"
    notify = ["phone", "inbox"]              # where the run's answer goes
    quiet = "NOTHING TO REPORT"              # an answer that starts so is not sent anywhere

    [notify.channels.phone]                  # context/notify.py reads these tables
    type = "webhook"
    url = "http://127.0.0.1:8080/tenshu"

Validated here, once: a trigger naming no source, no agent the server has, or no channel; a
template that does not compile; a schedule that does not parse. The engine takes these frozen
settings as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SOURCE_TYPES = ("folder", "feed", "http", "schedule")
INBOX = "inbox"  # the channel every server has: the web UI's inbox
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
_EVERY = re.compile(r"^\s*(?:every\s+)?(\d+)\s*([smhd])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_POLL_SECONDS = 10  # feeds and endpoints are someone else's servers


def seconds(every: str, where: str) -> float:
    """'15m' (or 'every 15m') as seconds; units s, m, h, d."""
    match = _EVERY.match(every)
    if not match:
        raise ValueError(f"{where}: {every!r} is not an interval such as '30s', '15m', '1h'")
    return int(match[1]) * _UNITS[match[2].lower()]


@dataclass(frozen=True)
class SourceSpec:
    """One source. Each type reads its own keys; the others must be left out."""

    name: str
    type: str
    path: str = ""  # folder
    patterns: tuple[str, ...] = ("*",)  # folder: the file names it reports (glob)
    recursive: bool = True  # folder
    url: str = ""  # feed, http
    every: str = ""  # feed, http: how often it is polled; schedule: an interval ("1h")
    keywords: tuple[str, ...] = ()  # feed: only entries that mention one
    headers: tuple[tuple[str, str], ...] = ()  # feed, http
    items: str = ""  # http: the dotted path of a list whose new items are events
    id_field: str = "id"  # http: each item's id
    cron: str = ""  # schedule: five cron fields
    at: str = ""  # schedule: one time (ISO 8601; in `timezone` when it has no offset)
    timezone: str = ""  # schedule: the zone of `cron` and `at` (default: the machine's)
    catch_up: bool = True  # schedule: a time missed while the server was down fires at start

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"{self.name!r}: a source's name is letters, digits, - and _")
        if self.type not in SOURCE_TYPES:
            raise ValueError(f"type: {self.type!r} is not one of {', '.join(SOURCE_TYPES)}")
        own = {"folder": {"path", "patterns", "recursive"},
               "feed": {"url", "every", "keywords", "headers"},
               "http": {"url", "every", "headers", "items", "id_field"},
               "schedule": {"every", "cron", "at", "timezone", "catch_up"}}[self.type]
        defaults = SourceSpec.__dataclass_fields__
        for key in ("path", "patterns", "recursive", "url", "every", "keywords", "headers",
                    "items", "id_field", "cron", "at", "timezone", "catch_up"):
            if key not in own and getattr(self, key) != defaults[key].default:
                raise ValueError(f"{key}: a {self.type} source does not take it")
        if self.type == "folder" and not self.path:
            raise ValueError("path: the folder to watch")
        if self.type in ("feed", "http"):
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url: {self.url!r} is not an http(s) URL")
            if seconds(self.every or "15m", "every") < MIN_POLL_SECONDS:
                raise ValueError(f"every: at least {MIN_POLL_SECONDS}s between polls")
        if self.type == "schedule":
            self.schedule()  # raises, naming the key

    @property
    def poll_seconds(self) -> float:
        return seconds(self.every or "15m", "every")

    def schedule(self):
        """A schedule source's times: jobs.schedule's Schedule for `cron`/`every`, or the one
        aware datetime of `at`."""
        from datetime import datetime

        from tenshu.jobs.schedule import local_zone, parse_schedule, zone_named

        given = [k for k in ("cron", "every", "at") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give one of cron, every or at")
        zone = zone_named(self.timezone, self.at or self.cron) if self.timezone else None
        if self.at:
            try:
                when = datetime.fromisoformat(self.at)
            except ValueError:
                raise ValueError(f"at: {self.at!r} is not an ISO 8601 time") from None
            return when if when.tzinfo else when.replace(tzinfo=zone or local_zone())
        text = self.cron or ("every " + self.every.removeprefix("every").strip())
        return parse_schedule(text, self.timezone)


ACTIONS = ("agent", "ingest", "pipeline")


@dataclass(frozen=True)
class TriggerSpec:
    """Events of `source` (of `kinds`, if given) become runs of `agent`, for `owner`; with
    action "ingest", documents of the owner's memory `collection` (a file event's file, a
    feed entry's or item's link); with action "pipeline", runs of the shipped pipeline
    [pipelines.NAME] `pipeline` (an analyst's report, a draft from a feed's article)."""

    name: str
    source: str
    agent: str = ""
    input: str = ""  # a Jinja2 template over `event` (source, key, kind, payload, at)
    action: str = "agent"
    collection: str = ""  # ingest: the owner's memory collection (made if missing)
    pipeline: str = ""  # pipeline: the [pipelines.NAME] it runs
    owner: str = ""  # a user's name (default: the server's owner)
    kinds: tuple[str, ...] = ()
    max_attempts: int = 3  # runs tried for one event before it is given up
    backoff_s: float = 60.0  # the wait before the second attempt; doubled after each
    notify: tuple[str, ...] = ()  # channels the run's answer goes to
    quiet: str = "NOTHING TO REPORT"  # an answer starting so (any case) is not sent

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"{self.name!r}: a trigger's name is letters, digits, - and _")
        if self.action not in ACTIONS:
            raise ValueError(f"action: {self.action!r} is not one of {', '.join(ACTIONS)}")
        if self.action != "pipeline" and self.pipeline:
            raise ValueError("pipeline: only a pipeline trigger (action = \"pipeline\") takes it")
        if self.action == "ingest":
            if not self.collection:
                raise ValueError("collection: the memory collection an ingest trigger fills")
            if self.agent or self.input:
                raise ValueError("an ingest trigger takes no agent or input")
        elif self.action == "pipeline":
            if not self.pipeline:
                raise ValueError("pipeline: the [pipelines.NAME] a pipeline trigger runs")
            if self.agent or self.input or self.collection:
                raise ValueError("a pipeline trigger takes no agent, input or collection")
        elif not self.agent:
            raise ValueError("agent: the agent the events are given to")
        elif not self.input.strip():
            raise ValueError("input: the template of the task the agent is given")
        elif self.collection:
            raise ValueError("collection: only an ingest trigger takes it")
        if self.max_attempts < 1:
            raise ValueError("max_attempts: must be at least 1")
        if self.backoff_s < 0:
            raise ValueError("backoff_s: must be >= 0")
        from jinja2 import TemplateSyntaxError
        from jinja2.sandbox import SandboxedEnvironment

        try:
            SandboxedEnvironment().from_string(self.input)
        except TemplateSyntaxError as exc:
            raise ValueError(f"input: the template does not compile: {exc}") from None


@dataclass(frozen=True)
class ContextSettings:
    sources: tuple[SourceSpec, ...] = ()
    triggers: tuple[TriggerSpec, ...] = ()
    channels: tuple[tuple[str, dict], ...] = ()  # [notify.channels.NAME] tables, as written
    pipelines: tuple = ()  # config.pipelines.PipelineSpec: [pipelines.NAME]
    keep_days: float = 30.0  # then an event's payload is emptied, once nothing will read it

    def __post_init__(self) -> None:
        if not isinstance(self.keep_days, int | float) or isinstance(self.keep_days, bool) \
                or self.keep_days <= 0:
            raise ValueError("context.keep_days: a number of days, more than 0")
        for kind, names in (("sources", [s.name for s in self.sources]),
                            ("triggers", [t.name for t in self.triggers])):
            if len(set(names)) != len(names):
                raise ValueError(f"context.{kind}: two share a name")
        sources = {s.name for s in self.sources}
        channels = {name for name, _ in self.channels} | {INBOX}
        pipelines = {p.name for p in self.pipelines}
        for trigger in self.triggers:
            where = f"context.triggers.{trigger.name}"
            if trigger.pipeline and trigger.pipeline not in pipelines:
                raise ValueError(f"{where}.pipeline: {trigger.pipeline!r} names no configured "
                                 f"pipeline ([pipelines.{trigger.pipeline}])")
            if trigger.source not in sources:
                raise ValueError(f"{where}.source: {trigger.source!r} names no configured "
                                 f"source ([context.sources.{trigger.source}])")
            for channel in trigger.notify:
                if channel not in channels:
                    raise ValueError(f"{where}.notify: {channel!r} names no channel "
                                     f"([notify.channels.{channel}], or {INBOX!r})")

    def check_agents(self, agents) -> None:
        """Every trigger's agent is one the server has (config.agents.AgentsSettings)."""
        for trigger in self.triggers:
            if trigger.action == "agent" and agents.agent(trigger.agent) is None:
                raise ValueError(f"context.triggers.{trigger.name}.agent: {trigger.agent!r} "
                                 f"is no configured agent ([agents.{trigger.agent}])")


def parse_context(data: dict) -> ContextSettings:
    """[context.*] and [notify.*] of a read tenshu.toml. Any problem is a ValueError naming
    the key."""
    from tenshu.config.agents import _pairs
    from tenshu.config.routing import _build

    context = data.get("context", {})
    if not isinstance(context, dict) or set(context) - {"sources", "triggers", "keep_days"}:
        raise ValueError("[context] takes two tables, sources and triggers, and keep_days")
    notify = data.get("notify", {})
    if not isinstance(notify, dict) or set(notify) - {"channels"}:
        raise ValueError("[notify] takes one table, channels ([notify.channels.NAME])")
    sources = []
    for name, table in (context.get("sources") or {}).items():
        where = f"context.sources.{name}"
        if isinstance(table, dict) and "headers" in table:
            table = {**table, "headers": _pairs(table["headers"], f"{where}.headers")}
        sources.append(_build(SourceSpec, table, where, name=name))
    triggers = [_build(TriggerSpec, table, f"context.triggers.{name}", name=name)
                for name, table in (context.get("triggers") or {}).items()]
    channels = []
    for name, table in (notify.get("channels") or {}).items():
        if not isinstance(table, dict):
            raise ValueError(f"notify.channels.{name}: must be a table")
        if name == INBOX:
            raise ValueError(f"notify.channels.{INBOX}: the name is the web UI's inbox's")
        channels.append((name, dict(table)))
    pipelines = ()
    if "pipelines" in data:
        from tenshu.config.pipelines import parse_pipelines

        pipelines = tuple(parse_pipelines(data))
    settings = ContextSettings(tuple(sources), tuple(triggers), tuple(channels), pipelines,
                               **({"keep_days": context["keep_days"]}
                                  if "keep_days" in context else {}))
    if channels:
        from tenshu.context.notify import channels_from_config

        channels_from_config(dict(channels))  # raises, naming the channel and key
    return settings
