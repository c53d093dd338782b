"""Notifications: how the context engine tells the person that an agent run started by a
trigger, or a scheduled pipeline, has something to say.

A trigger or pipeline hands a Notification to the Notifier, which sends it to the channels it
names: this machine's desktop (notify-send on Linux, osascript on macOS), a webhook (ntfy by
default, or generic JSON), or email over SMTP. One channel failing never stops the others; the
Notifier answers which channels delivered and why the rest did not. `channels_from_config`
builds the channels from tenshu.toml:

    [notify.channels.phone]
    type = "webhook"
    url = "https://ntfy.example.net/mytopic"    # format = "json" for a generic webhook
    [notify.channels.desk]
    type = "desktop"
    [notify.channels.mail]
    type = "email"
    host = "smtp.example.net"
    port = 587                                  # STARTTLS (the default); ssl = true for 465
    sender = "tenshu@example.net"
    to = ["me@example.net"]
    username = "tenshu@example.net"
    password_env = "TENSHU_SMTP_PASSWORD"       # the password itself never sits in the file
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import shutil
import smtplib
import ssl as tls
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.header import Header
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal, Protocol
from urllib.parse import urlsplit

import httpx

from tenshu.core.errors import InvalidRequestError, UpstreamError

log = logging.getLogger("tenshu.context.notify")

Priority = Literal["low", "default", "high"]
PRIORITIES = ("low", "default", "high")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")


class NotificationError(UpstreamError):
    """A channel could not deliver a notification: `channel` names it, `cause` says why. An
    UpstreamError (502): the service that failed is outside tenshu, not the caller's fault."""

    def __init__(self, channel: str, cause: str):
        super().__init__(f"notification channel {channel!r}: {cause}")
        self.channel = channel
        self.cause = cause


@dataclass(frozen=True)
class Notification:
    """What the person is told. `body` is plain text or Markdown, delivered as written; `url`
    is what the notification opens (a run's page, a report)."""

    title: str
    body: str
    url: str | None = None
    priority: Priority = "default"
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ValueError(f"priority: one of {', '.join(PRIORITIES)}, got {self.priority!r}")
        if not isinstance(self.tags, tuple) or not all(isinstance(t, str) for t in self.tags):
            raise ValueError("tags: a tuple of strings")

    def text(self) -> str:
        """The body with the url after it, for channels that have no place of their own for it."""
        return f"{self.body}\n\n{self.url}" if self.url else self.body


class Channel(Protocol):
    """Somewhere a notification can go. `send` returns once it is delivered, or raises a
    NotificationError naming the channel and the cause."""

    async def send(self, n: Notification) -> None: ...


# -- the desktop --------------------------------------------------------------------------------

_URGENCY = {"low": "low", "default": "normal", "high": "critical"}


def _desktop_program() -> str:
    return "osascript" if sys.platform == "darwin" else "notify-send"


@dataclass(frozen=True)
class DesktopChannel:
    """A notification on this machine's desktop: notify-send (libnotify) on Linux and other
    Unixes, osascript on macOS. The text travels as arguments of their own, with no shell and,
    on macOS, never as AppleScript source (the script reads it from argv), so nothing in it can
    be taken for an option, a command or code."""

    timeout_s: float = 10.0
    name: str = "desktop"

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError("timeout_s: must be > 0")
        if not self.available():
            raise ValueError(
                f"{_desktop_program()} is not on PATH, so tenshu cannot show desktop "
                "notifications here; install it (Debian and Ubuntu: apt install libnotify-bin) "
                "or use a webhook or email channel")

    @staticmethod
    def available() -> bool:
        """Whether this machine has the program that shows desktop notifications."""
        return shutil.which(_desktop_program()) is not None

    def argv(self, n: Notification) -> list[str]:
        program = shutil.which(_desktop_program())
        if program is None:
            raise NotificationError(self.name, f"{_desktop_program()} is no longer on PATH")
        if sys.platform == "darwin":
            script = ["on run argv",
                      "display notification (item 2 of argv) with title (item 1 of argv)",
                      "end run"]
            return [program, *(a for line in script for a in ("-e", line)), "--",
                    n.title, n.text()]
        return [program, "--urgency", _URGENCY[n.priority], "--app-name", "tenshu", "--",
                n.title, n.text()]

    async def send(self, n: Notification) -> None:
        argv = self.argv(n)
        program = _desktop_program()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise NotificationError(self.name, f"cannot run {program}: {exc}") from exc
        try:
            _, err = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            raise NotificationError(
                self.name, f"{program} did not finish within {self.timeout_s:g} s") from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise NotificationError(self.name, f"{program} exited with status "
                                    f"{proc.returncode}: {_excerpt(err.decode(errors='replace'))}")


# -- webhooks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookChannel:
    """An HTTP POST. format "ntfy" (the default): the body as text, with ntfy's Title,
    Priority, Tags and Click headers (non-ASCII header text RFC 2047-encoded, which ntfy
    decodes); "json": {title, body, url, priority, tags} for a generic webhook. `headers` are
    added to every request, after ours (an Authorization, say). Proxies in the environment are
    not used: tenshu connects only where it is configured to."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    format: str = "ntfy"  # or "json"
    timeout_s: float = 10.0
    name: str = "webhook"

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url: {self.url!r} is not an http(s) URL")
        if self.format not in ("ntfy", "json"):
            raise ValueError(f"format: ntfy or json, got {self.format!r}")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s: must be > 0")
        headers = tuple(dict(self.headers).items())  # a dict from Python callers, pairs from TOML
        for key, value in headers:
            if not isinstance(value, str) or "\r" in value or "\n" in value:
                raise ValueError(f"headers: {key}'s value must be a string on one line")
        object.__setattr__(self, "headers", headers)

    def request(self, n: Notification) -> tuple[dict[str, str], dict]:
        """The headers and httpx's body arguments of the POST that carries `n`."""
        if self.format == "json":
            body = {"title": n.title, "body": n.body, "url": n.url, "priority": n.priority,
                    "tags": list(n.tags)}
            return dict(self.headers), {"json": body}
        headers = {"Content-Type": "text/plain; charset=utf-8", "Title": _header(n.title),
                   "Priority": n.priority}
        if n.tags:
            headers["Tags"] = _header(",".join(n.tags))
        if n.url:
            headers["Click"] = _header(n.url)
        return headers | dict(self.headers), {"content": n.body.encode()}

    async def send(self, n: Notification) -> None:
        headers, body = self.request(n)
        parts = urlsplit(self.url)
        where = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, trust_env=False) as client:
                response = await client.post(self.url, headers=headers, **body)
        except httpx.TimeoutException as exc:
            raise NotificationError(
                self.name, f"no answer from {where} within {self.timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise NotificationError(self.name, f"cannot reach {where}: {exc}") from exc
        if not response.is_success:
            raise NotificationError(self.name, f"{where} answered {response.status_code} "
                                    f"{response.reason_phrase}: {_excerpt(response.text)}")


def _header(text: str) -> str:
    """`text` as one header value: on one line, and RFC 2047-encoded when it is not ASCII
    (httpx sends header values as Latin-1 and refuses what that cannot hold)."""
    text = " ".join(text.split())
    if text.isascii():
        return text
    return Header(text, "utf-8").encode(linesep=" ")


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


# -- email --------------------------------------------------------------------------------------

_X_PRIORITY = {"low": "5", "high": "1"}


@dataclass(frozen=True)
class EmailChannel:
    """A mail over SMTP, with smtplib in a thread. STARTTLS by default, `ssl` for implicit TLS
    (port 465); neither only for a server on this machine when there is a login, so that a
    password never crosses a network in the clear. `password` is the secret itself, read by
    config from the environment variable `password_env` names; it is never in tenshu.toml."""

    host: str
    port: int
    sender: str
    to: tuple[str, ...]
    username: str | None = None
    password_env: str | None = None
    starttls: bool = True
    ssl: bool = False
    timeout_s: float = 30.0
    password: str | None = field(default=None, repr=False)
    name: str = "email"

    def __post_init__(self) -> None:
        object.__setattr__(self, "to", (self.to,) if isinstance(self.to, str) else tuple(self.to))
        if not self.host:
            raise ValueError("host: the SMTP server's name or address")
        if not 0 < self.port < 65536:
            raise ValueError(f"port: 1 to 65535, got {self.port}")
        if "@" not in self.sender:
            raise ValueError(f"sender: {self.sender!r} is not an email address")
        if not self.to:
            raise ValueError("to: at least one address")
        for address in self.to:
            if "@" not in address:
                raise ValueError(f"to: {address!r} is not an email address")
        if self.starttls and self.ssl:
            raise ValueError("starttls: set starttls (port 587) or ssl (port 465), not both")
        if self.username and not (self.password_env or self.password):
            raise ValueError("password_env: the environment variable that holds the password "
                             "(needed with username)")
        if self.password_env and not self.username:
            raise ValueError("username: needed with password_env")
        if self.username and not (self.starttls or self.ssl or _loopback(self.host)):
            raise ValueError(f"starttls: a login to {self.host} needs starttls or ssl, so that "
                             "the password is not sent in the clear")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s: must be > 0")

    def message(self, n: Notification) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = " ".join(n.title.split())  # a header: one line
        message["From"] = self.sender
        message["To"] = ", ".join(self.to)
        message["Date"] = formatdate(localtime=True)
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2])
        if n.priority in _X_PRIORITY:
            message["X-Priority"] = _X_PRIORITY[n.priority]
        message.set_content(n.text())
        return message

    async def send(self, n: Notification) -> None:
        if self.username and self.password is None:
            raise NotificationError(self.name, f"no password: the environment variable "
                                    f"{self.password_env} is not set")
        cause = await asyncio.to_thread(self._deliver, self.message(n))
        if cause:
            raise NotificationError(self.name, cause)

    def _deliver(self, message: EmailMessage) -> str | None:
        """Sends `message` (in a thread); returns why it failed, or None."""
        server = f"{self.host}:{self.port}"
        context = tls.create_default_context()
        try:
            smtp = (smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s, context=context)
                    if self.ssl else smtplib.SMTP(self.host, self.port, timeout=self.timeout_s))
            with smtp:
                if self.starttls:
                    smtp.starttls(context=context)
                if self.username:
                    smtp.login(self.username, self.password or "")
                refused = smtp.send_message(message)
        except smtplib.SMTPAuthenticationError as exc:
            return (f"{server} refused the login of {self.username!r}: "
                    f"{exc.smtp_code} {_reply(exc.smtp_error)}")
        except smtplib.SMTPRecipientsRefused as exc:
            return f"{server} refused every recipient: {_refusals(exc.recipients)}"
        except smtplib.SMTPSenderRefused as exc:
            return (f"{server} refused the sender {exc.sender}: "
                    f"{exc.smtp_code} {_reply(exc.smtp_error)}")
        except smtplib.SMTPNotSupportedError as exc:
            return f"{server}: {exc} (see starttls, ssl and username)"
        except smtplib.SMTPException as exc:
            if isinstance(exc.__context__, TimeoutError):  # smtplib's word for a read timeout
                return f"no answer from {server} within {self.timeout_s:g} s"
            return f"{server}: {exc}"
        except tls.SSLError as exc:
            return f"TLS with {server} failed: {exc} (port 465 takes ssl, 587 starttls)"
        except TimeoutError:
            return f"no answer from {server} within {self.timeout_s:g} s"
        except ConnectionRefusedError:
            return (f"cannot connect to {server}: connection refused (is the server up, and the "
                    "port right?)")
        except OSError as exc:
            return f"cannot reach {server}: {exc}"
        if refused:
            return f"{server} refused some recipients (the others got it): {_refusals(refused)}"
        return None


def _reply(text: bytes | str) -> str:
    return _excerpt(text.decode(errors="replace") if isinstance(text, bytes) else text)


def _refusals(recipients: dict) -> str:
    return "; ".join(f"{rcpt} ({code} {_reply(reply)})"
                     for rcpt, (code, reply) in recipients.items())


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the notifier -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What Notifier.send did: the channels that delivered, and why each of the others did not."""

    sent: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)


class Notifier:
    """The configured channels, by name."""

    def __init__(self, channels: Mapping[str, Channel]):
        self.channels = dict(channels)

    async def send(self, n: Notification, channels: str | Iterable[str] | None = None
                   ) -> Delivery:
        """Sends `n` to the channels named (all by default) at once. A channel that fails is
        logged and reported in the answer; only a name that is no channel raises."""
        if isinstance(channels, str):
            channels = (channels,)
        names = list(dict.fromkeys(self.channels if channels is None else channels))
        unknown = [name for name in names if name not in self.channels]
        if unknown:
            known = ", ".join(self.channels) or "none ([notify.channels.NAME] in tenshu.toml)"
            raise InvalidRequestError(f"no notification channel {', '.join(map(repr, unknown))}; "
                                      f"the channels are: {known}", field="channels")
        errors = dict(zip(names, await asyncio.gather(*(self._try(name, n) for name in names)),
                          strict=True))
        return Delivery(sent=tuple(name for name, error in errors.items() if error is None),
                        failed={name: error for name, error in errors.items() if error is not None})

    async def _try(self, name: str, n: Notification) -> str | None:
        try:
            await self.channels[name].send(n)
        except NotificationError as exc:
            log.warning("notification %r not sent to %s: %s", n.title, name, exc.cause)
            return exc.cause
        except Exception as exc:  # a broken channel must not keep the others from delivering
            log.exception("notification %r not sent to %s", n.title, name)
            return f"{type(exc).__name__}: {exc}"
        return None


# -- configuration ------------------------------------------------------------------------------

TYPES = {"desktop": DesktopChannel, "webhook": WebhookChannel, "email": EmailChannel}


def channels_from_config(table: dict, secret: Callable[[str], str | None] | None = None
                         ) -> dict[str, Channel]:
    """The channels of tenshu.toml's [notify.channels] table ([notify.channels.NAME] each), by
    name. `secret` reads the environment variable an email channel's password_env names
    (tenshu.config.credential when not given: only config reads the environment). Any problem
    is a ValueError naming the channel and the key, as the rest of tenshu.toml's are."""
    from tenshu.config.routing import _build  # here: config may import this module

    if secret is None:
        from tenshu.config import credential

        secret = credential
    if not isinstance(table, dict):
        raise ValueError("notify.channels: must be a table of channels ([notify.channels.NAME])")
    channels: dict[str, Channel] = {}
    for name, entry in table.items():
        where = f"notify.channels.{name}"
        if not _NAME.match(name):
            raise ValueError(f"{where}: a channel's name is letters, digits, - and _")
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be a table")
        entry = dict(entry)
        kind = entry.pop("type", None)
        if not isinstance(kind, str) or kind not in TYPES:
            given = "missing" if kind is None else f"{kind!r} is not"
            raise ValueError(f"{where}.type: {given} one of {', '.join(TYPES)}")
        extra: dict = {"name": name}
        if "headers" in entry:
            if not isinstance(entry["headers"], dict):
                raise ValueError(f"{where}.headers: must be a table of strings")
            entry["headers"] = [[k, v] for k, v in entry["headers"].items()]
        if kind == "email":
            env = entry.get("password_env")
            extra["password"] = secret(env) if isinstance(env, str) and env else None
        channels[name] = _build(TYPES[kind], entry, where, **extra)
    return channels
