"""Slack, through slack_sdk's asynchronous Web API client, with the person's own (user) token.

Tools: list_channels, read_channel and search_messages (read), post_message (write: as the
person). Scopes: channels:read and channels:history (groups:* for private channels),
search:read, chat:write.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tenshu.agents.tools import ToolOutput, clip
from tenshu.integrations.tools import BadArguments, Service, ServiceTool, count, obj, text

API_URL = "https://slack.com/api/"
# Slack answers HTTP 200 with {"ok": false, "error"}; these mean the token is not taken
REFUSED = frozenset({"invalid_auth", "not_authed", "token_expired"})
_CHANNEL = {**text(200), "description": "a channel id (C0123...) or #name"}


def client(token: str, api_url: str, timeout_s: float):
    from slack_sdk.web.async_client import AsyncWebClient

    base = api_url.rstrip("/") + "/" if api_url else API_URL
    return AsyncWebClient(token=token, base_url=base, timeout=int(max(1, timeout_s)))


async def list_channels(args: dict, slack) -> ToolOutput:
    channels = await _channels(slack, args.get("max_results", 200))
    if not channels:
        return ToolOutput("no channels", data={"channels": []})
    lines = [f"#{c['name']} ({c['id']})" + (f": {c['topic']}" if c["topic"] else "")
             for c in channels]
    return ToolOutput(clip("\n".join(lines)), data={"channels": channels})


async def read_channel(args: dict, slack) -> ToolOutput:
    channel = await _channel_id(slack, args["channel"])
    answer = await slack.conversations_history(channel=channel,
                                               limit=args.get("max_results", 20))
    messages = [_message(m) for m in answer.get("messages", [])]
    messages.reverse()  # oldest first, as a conversation reads
    if not messages:
        return ToolOutput(f"no messages in {args['channel']}", data={"messages": []})
    return ToolOutput(clip("\n".join(f"{m['time']} {m['user']}: {m['text']}" for m in messages)),
                      data={"channel": channel, "messages": messages})


async def search_messages(args: dict, slack) -> ToolOutput:
    answer = await slack.search_messages(query=args["query"], count=args.get("max_results", 20))
    matches = [{**_message(m), "channel": (m.get("channel") or {}).get("name", ""),
                "link": m.get("permalink", "")}
               for m in (answer.get("messages") or {}).get("matches", [])]
    if not matches:
        return ToolOutput(f"no messages match {args['query']!r}", data={"messages": []})
    return ToolOutput(clip("\n".join(f"#{m['channel']} {m['time']} {m['user']}: {m['text']}"
                                     for m in matches)), data={"messages": matches})


async def post_message(args: dict, slack) -> ToolOutput:
    channel = await _channel_id(slack, args["channel"])
    answer = await slack.chat_postMessage(channel=channel, text=args["text"])
    return ToolOutput(f"posted in {args['channel']} (ts {answer['ts']})",
                      data={"channel": answer.get("channel", channel), "ts": answer["ts"]})


async def _channels(slack, most: int) -> list[dict]:
    """The channels the person can see, page by page (Slack's cursors), up to `most`."""
    found, cursor = [], None
    while len(found) < most:
        answer = await slack.conversations_list(types="public_channel,private_channel",
                                                exclude_archived=True, limit=200,
                                                cursor=cursor)
        found += [{"id": c["id"], "name": c.get("name", ""),
                   "topic": (c.get("topic") or {}).get("value", "")}
                  for c in answer.get("channels", [])]
        cursor = (answer.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            break
    return found[:most]


async def _channel_id(slack, channel: str) -> str:
    if not channel.startswith("#"):
        return channel
    for found in await _channels(slack, 10_000):
        if found["name"] == channel[1:]:
            return found["id"]
    raise BadArguments(f"no channel named {channel} that this token can see")


def _message(m: dict) -> dict:
    ts = m.get("ts", "0")
    time = datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M")
    return {"ts": ts, "time": time, "user": m.get("username") or m.get("user", ""),
            "text": m.get("text", "")}


def _unauthorized(exc: BaseException) -> bool:
    from slack_sdk.errors import SlackApiError

    return isinstance(exc, SlackApiError) and exc.response.get("error") in REFUSED


def _failure(exc: BaseException) -> str | None:
    import aiohttp
    from slack_sdk.errors import SlackApiError

    if isinstance(exc, SlackApiError):
        return f"Slack answered {exc.response.get('error') or exc.response.status_code}"
    if isinstance(exc, aiohttp.ClientError | TimeoutError):
        return f"could not reach Slack: {exc!r}"
    return None


SERVICE = Service("slack", (
    ServiceTool("list_channels", "The Slack channels the person can see.",
                obj({"max_results": count(200, 1000)}, []), "read", list_channels),
    ServiceTool("read_channel", "The latest messages of a Slack channel, oldest first.",
                obj({"channel": _CHANNEL, "max_results": count(20, 200)}, ["channel"]),
                "read", read_channel),
    ServiceTool("search_messages", "Search the person's Slack messages (Slack's search "
                "syntax: in:#channel, from:@name, ...).",
                obj({"query": text(500), "max_results": count(20, 100)}, ["query"]),
                "read", search_messages),
    ServiceTool("post_message", "Post a message in a Slack channel, as the person.",
                obj({"channel": _CHANNEL, "text": text(40_000)}, ["channel", "text"]),
                "write", post_message),
), client, _unauthorized, _failure)
