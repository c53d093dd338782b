"""Agent tools over the connected services' official SDKs: Gmail and Google Calendar
(google-api-python-client), GitHub (PyGithub) and Slack (slack_sdk).

    tools = service_tools(source.integration("gmail"), source)   # gmail__search_mail, ...

An agent names them in its tools as `integration:NAME` (all of that integration's) or
`integration:NAME__TOOL`. Each call acts for the run's user with that user's token, taken from
the TokenSource (refreshed first when it expires soon); a 401 from the service is answered by
one refresh and one retry, as TokenSource.authorized_request does for plain HTTP. Reading is
class `read`; what writes at the service (a draft, an event, an issue, a comment, a message) is
class `write`, so the approval policy asks first by default. Nothing sends mail.

The SDKs reach the integration's `api_url` where one is configured (GitHub Enterprise Server,
or a loopback server in the tests), else the service's own API.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenshu.agents.tools import Tool, ToolContext, ToolOutput
from tenshu.config.agents import SEPARATOR
from tenshu.core.errors import IntegrationError
from tenshu.integrations.oauth import Integration
from tenshu.integrations.token_source import TokenSource


class BadArguments(Exception):
    """A call's arguments fit the schema but make no request (a date that is not one, a
    channel that does not exist): told to the model, which may try again."""


@dataclass(frozen=True)
class ServiceTool:
    """One tool of a service: `run(arguments, api)` with the service's client; a plain function
    runs in a thread (the SDK blocks), a coroutine function is awaited."""

    name: str
    description: str
    parameters: dict
    cls: str
    run: Callable[[dict, Any], Any]


@dataclass(frozen=True)
class Service:
    """A provider's tools, and how to speak to it: `client(token, api_url, timeout_s)` makes
    the SDK's client; `unauthorized(exc)` says whether an error is the service refusing the
    token; `failure(exc)` is an error's message for the model (None: not the service's error,
    raised as it is)."""

    name: str
    tools: tuple[ServiceTool, ...]
    client: Callable[[str, str, float], Any]
    unauthorized: Callable[[BaseException], bool]
    failure: Callable[[BaseException], str | None]


def _services() -> dict[str, Service]:
    from tenshu.integrations.tools import github, google, slack

    return {s.name: s for s in (google.SERVICE, github.SERVICE, slack.SERVICE)}


def tool_names(provider: str) -> list[str]:
    """The tools a provider's integrations offer (none for a custom provider)."""
    service = _services().get(provider)
    return [t.name for t in service.tools] if service else []


def service_tools(integration: Integration, source: TokenSource) -> list[Tool]:
    """The integration's tools, named NAME__TOOL, acting with `source`'s tokens."""
    service = _services().get(integration.provider.name)
    if service is None:
        return []
    return [Tool(f"{integration.name}{SEPARATOR}{t.name}",
                 f"{t.description} (through the {integration.name} integration)", t.parameters,
                 t.cls, _caller(integration, source, service, t), source=integration.name)
            for t in service.tools]


def _caller(integration: Integration, source: TokenSource, service: Service, tool: ServiceTool):
    async def call(args: dict, ctx: ToolContext) -> ToolOutput:
        user = str(ctx.principal.user_id)
        try:
            token = await source.access_token(user, integration.name)
            try:
                return await _once(service, tool, args, token, integration, ctx.timeout_s)
            except Exception as exc:
                if not service.unauthorized(exc):
                    raise
            fresh = await source.refresh(user, integration.name, stale=token)
            try:
                return await _once(service, tool, args, fresh.access_token, integration,
                                   ctx.timeout_s)
            except Exception as exc:
                if service.unauthorized(exc):
                    raise integration.reconnect("the service refused a token just refreshed") \
                        from None
                raise
        except IntegrationError as exc:  # not connected, or a grant that is gone
            return ToolOutput.error(str(exc))
        except BadArguments as exc:
            return ToolOutput.error(f"{integration.name}: {exc}")
        except Exception as exc:
            message = service.failure(exc)
            if message is None:
                raise
            return ToolOutput.error(f"{integration.name}: {message}")

    return call


async def _once(service: Service, tool: ServiceTool, args: dict, token: str,
                integration: Integration, timeout_s: float) -> ToolOutput:
    api = service.client(token, integration.spec.api_url, timeout_s)
    if inspect.iscoroutinefunction(tool.run):
        return await tool.run(args, api)
    return await asyncio.to_thread(tool.run, args, api)


def obj(properties: dict, required: list[str]) -> dict:
    """A tool's input schema: an object of these properties, nothing else."""
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False}


def text(most: int) -> dict:
    return {"type": "string", "maxLength": most}


def count(default: int, most: int) -> dict:
    return {"type": "integer", "minimum": 1, "maximum": most, "default": default}
