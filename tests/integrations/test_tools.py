"""The agent tools on the services' official SDKs (google-api-python-client, PyGithub,
slack_sdk), against loopback servers that answer their API calls (services.py) and take only
tokens the real OAuth server issued: what the model is told, what reached the service, and the
token handling (a 401 answered by one refresh and one retry, a dead grant told as "connect
again", one user's token never used for another)."""

from __future__ import annotations

import email
from dataclasses import replace
from pathlib import Path

import pytest

from tenshu.agents.tools import ToolContext
from tenshu.config.agents import AgentSpec
from tenshu.config.integrations import IntegrationSpec
from tenshu.integrations import BUILT_IN, Integration, TokenSource, connect
from tenshu.integrations.tools import service_tools
from tenshu.store.people import Principal
from tests.integrations.conftest import SECRET_ENV, USER
from tests.integrations.services import Services


def at(server, provider: str, name: str, api_url: str) -> Integration:
    """A `provider` integration whose OAuth endpoints are the test server's (the built-in ones
    are the real services'), and whose API is `api_url`."""
    spec = IntegrationSpec(name=name, provider=provider, client_id=server.client.client_id,
                           client_secret_env=SECRET_ENV, api_url=api_url)
    built_in = BUILT_IN[provider]
    # Slack's envelope ({"ok", "authed_user"}) is its token endpoint's, not an RFC server's
    endpoints = replace(built_in, authorize_url=server.authorize_url, token_url=server.token_url,
                        revoke_url=server.revoke_url, ok_envelope=False, scope_param="scope",
                        scope_separator=" ")
    return Integration(name, endpoints, spec.client_id, ("read",), spec)


@pytest.fixture
def services(server):
    with Services(server) as running:
        yield running


@pytest.fixture
async def tools(server, services, store, browser, monkeypatch):
    """Each provider's tools, connected for USER: {"gmail__search_mail": Tool, ...}."""
    monkeypatch.setenv(SECRET_ENV, server.client.client_secret)
    integrations = [at(server, p, n, services.url + path) for p, n, path in (
        ("google", "gmail", ""), ("github", "code", ""), ("slack", "chat", "/api"))]
    for integration in integrations:
        await connect(integration, store, USER, open_url=browser.open, timeout=10)
    source = TokenSource(integrations, store)
    return {t.name: t for i in integrations for t in service_tools(i, source)}


def ctx(user: str = USER) -> ToolContext:
    return ToolContext(Principal(int(user), "ana", "member"), AgentSpec("helper", "m"),
                       Path("/nonexistent"), timeout_s=10)


async def test_gmail_search_and_read(tools, services, server):
    found = await tools["gmail__search_mail"].call({"query": "lunch"}, ctx())

    assert not found.is_error
    assert "[m1]" in found.text and "Rosa <rosa@example.org>" in found.text
    assert "Lunch on Friday?" in found.text and "m2" not in found.text
    assert services.queries["/gmail/v1/users/me/messages"]["q"] == "lunch"

    mail = await tools["gmail__read_mail"].call({"id": "m1"}, ctx())

    assert "Subject: Lunch on Friday?" in mail.text
    assert mail.text.endswith("Shall we try the ramen place?")  # the text/plain part
    assert mail.data["body"] == "Shall we try the ramen place?"
    assert all(server.valid(token) for _, _, token in services.calls)


async def test_gmail_draft_is_saved_not_sent(tools, services):
    out = await tools["gmail__draft_mail"].call(
        {"to": "rosa@example.org", "subject": "Re: Lunch", "body": "Friday works."}, ctx())

    assert not out.is_error and "not sent" in out.text
    draft = email.message_from_string(services.drafts[0])
    assert draft["To"] == "rosa@example.org" and draft["Subject"] == "Re: Lunch"
    assert draft.get_payload().strip() == "Friday works."
    assert [p for m, p, _ in services.calls if m == "POST"] == ["/gmail/v1/users/me/drafts"]


async def test_calendar_lists_and_creates_events(tools, services):
    listed = await tools["gmail__list_events"].call({"days": 3}, ctx())

    assert "Dentist (Main St)" in listed.text
    query = services.queries["/calendar/v3/calendars/primary/events"]
    assert query["singleEvents"] == "true" and query["orderBy"] == "startTime"
    assert query["timeMin"].endswith("Z") and query["timeMax"] > query["timeMin"]

    created = await tools["gmail__create_event"].call(
        {"summary": "Ramen", "start": "2026-12-11T12:30:00+01:00",
         "end": "2026-12-11T13:30:00+01:00", "location": "Noodle bar"}, ctx())
    all_day = await tools["gmail__create_event"].call(
        {"summary": "Holiday", "start": "2026-12-24", "end": "2026-12-25"}, ctx())

    assert "created 'Ramen'" in created.text and "https://calendar.example/e0" in created.text
    assert services.events[0]["start"] == {"dateTime": "2026-12-11T12:30:00+01:00"}
    assert services.events[0]["location"] == "Noodle bar"
    assert services.events[1]["start"] == {"date": "2026-12-24"} and not all_day.is_error


async def test_an_event_time_without_an_offset_is_refused_before_any_call(tools, services):
    before = len(services.calls)

    out = await tools["gmail__create_event"].call(
        {"summary": "Ramen", "start": "2026-12-11T12:30", "end": "tomorrow"}, ctx())

    assert out.is_error and "start: '2026-12-11T12:30' has no UTC offset" in out.text
    assert [c for c in services.calls[before:] if c[0] == "POST"] == []


async def test_github_issues(tools, services):
    listed = await tools["code__list_issues"].call({"repo": "o/r"}, ctx())

    assert "#1 [open] Crash on start (ana; bug)" in listed.text
    assert "#2 [open] Faster loading (ana, pull request)" in listed.text

    read = await tools["code__read_issue"].call({"repo": "o/r", "number": 1}, ctx())

    assert "It crashes." in read.text and "rosa" in read.text and "Same here." in read.text

    opened = await tools["code__create_issue"].call(
        {"repo": "o/r", "title": "Docs typo", "body": "In the README.", "labels": ["docs"]},
        ctx())
    commented = await tools["code__comment_issue"].call(
        {"repo": "o/r", "number": 1, "body": "Fixed in main."}, ctx())

    assert opened.text.startswith("opened #3 in o/r")
    assert services.issues[-1]["title"] == "Docs typo"
    assert services.issues[-1]["labels"] == [{"name": "docs"}]
    assert services.comments[1][-1]["body"] == "Fixed in main." and not commented.is_error


async def test_a_github_error_is_told_to_the_model(tools):
    out = await tools["code__read_issue"].call({"repo": "o/missing", "number": 1}, ctx())

    assert out.is_error and out.text == "code: GitHub answered HTTP 404: Not Found"


async def test_slack(tools, services):
    channels = await tools["chat__list_channels"].call({}, ctx())

    assert "#general (C1): everything" in channels.text
    assert "#random (C3)" in channels.text  # on the second page

    history = await tools["chat__read_channel"].call({"channel": "#releases"}, ctx())

    assert history.data["channel"] == "C2"
    assert history.text.splitlines()[-1].endswith("U2: shipped 1.2")  # oldest first

    posted = await tools["chat__post_message"].call({"channel": "C1", "text": "hello"}, ctx())
    found = await tools["chat__search_messages"].call({"query": "deploy"}, ctx())

    assert services.posts == [{"channel": "C1", "text": "hello"}] and not posted.is_error
    assert "#general" in found.text and "about deploy" in found.text

    missing = await tools["chat__read_channel"].call({"channel": "#nope"}, ctx())
    assert missing.is_error and "no channel named #nope" in missing.text


@pytest.mark.parametrize("tool, args", [
    ("gmail__search_mail", {"query": "invoice"}),
    ("code__list_issues", {"repo": "o/r"}),
    ("chat__list_channels", {}),
])
async def test_a_refused_token_is_refreshed_once_and_the_call_made_again(tools, services,
                                                                          server, tool, args):
    server.kill_access_tokens()  # the services answer 401 (Slack: invalid_auth) to them

    out = await tools[tool].call(args, ctx())

    assert not out.is_error, out.text
    assert server.requests["refresh_token"] == 1
    assert server.valid(services.calls[-1][2])


async def test_a_dead_grant_says_to_connect_again(tools, server):
    server.revoke_grants()

    out = await tools["code__list_issues"].call({"repo": "o/r"}, ctx())

    assert out.is_error and out.text.endswith("connect again: tenshu integrations connect code")


async def test_another_users_token_is_never_used(tools, services):
    before = len(services.calls)

    out = await tools["gmail__search_mail"].call({"query": "lunch"}, ctx("2"))

    assert out.is_error
    assert out.text == ("integration 'gmail': not connected; connect: "
                        "tenshu integrations connect gmail")
    assert len(services.calls) == before
