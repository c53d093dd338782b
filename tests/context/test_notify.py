"""Notification channels against real receivers on loopback: an aiohttp server for webhooks,
aiosmtpd for email, and small notify-send / osascript scripts on PATH that record their argv.
The Notifier delivers to every channel that works however the others fail, and every mistake
in [notify.channels] is an error that names the channel and the key."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import shutil
import socket
import sys
import tomllib
from email.header import decode_header, make_header

import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult

from tenshu.context.notify import (
    DesktopChannel,
    EmailChannel,
    Notification,
    NotificationError,
    Notifier,
    WebhookChannel,
    channels_from_config,
)
from tenshu.core.errors import InvalidRequestError

NOTE = Notification(title="Report ready — 3 new items", body="All *green*.\nSee the report.",
                    url="http://127.0.0.1/runs/7", priority="high",
                    tags=("robot", "white_check_mark"))
PASSWORD = "s3cret"
SECRETS = {"TENSHU_SMTP_PASSWORD": PASSWORD}.get


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- receivers ----------------------------------------------------------------------------------


@pytest.fixture
async def hooks():
    """A webhook receiver: what it got, by path; /fail answers 500."""
    got: dict[str, tuple] = {}

    async def receive(request: web.Request) -> web.Response:
        got[request.path] = (request.headers.copy(), await request.read())
        if request.path == "/fail":
            return web.Response(status=500, text="topic exploded\n" + "x" * 500)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{topic}", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}", got
    await runner.cleanup()


class Mailbox:
    """aiosmtpd's handler: keeps each message; refuses mail to nowhere.example."""

    def __init__(self):
        self.messages: list[tuple] = []  # (envelope, the login it was sent under)

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address.endswith("@nowhere.example"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope, session.auth_data and session.auth_data.login))
        return "250 OK"


def login(server, session, envelope, mechanism, data) -> AuthResult:
    ok = (data.login, data.password) == (b"tenshu", PASSWORD.encode())
    return AuthResult(success=ok, handled=False, auth_data=data)  # not handled: aiosmtpd says 535


@pytest.fixture
async def smtp():
    """An SMTP server on loopback with AUTH over plain text (no TLS: it is loopback)."""
    box = Mailbox()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(box, hostname="localhost", authenticator=login, auth_require_tls=False),
        "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], box
    server.close()
    await server.wait_closed()


def mail(port: int, **table) -> EmailChannel:
    table = {"type": "email", "host": "127.0.0.1", "port": port, "sender": "tenshu@example.net",
             "to": ["me@example.net", "you@example.net"], "starttls": False} | table
    return channels_from_config({"mail": table}, secret=SECRETS)["mail"]


# -- webhooks -----------------------------------------------------------------------------------


async def test_ntfy_webhook_gets_the_body_and_ntfy_headers(hooks):
    base, got = hooks
    await WebhookChannel(f"{base}/mytopic", headers={"Authorization": "Bearer tk_1"}).send(NOTE)
    headers, body = got["/mytopic"]
    assert body.decode() == NOTE.body
    assert str(make_header(decode_header(headers["Title"]))) == NOTE.title  # RFC 2047: not ASCII
    assert headers["Priority"] == "high"
    assert headers["Tags"] == "robot,white_check_mark"
    assert headers["Click"] == NOTE.url
    assert headers["Authorization"] == "Bearer tk_1"
    assert headers["Content-Type"].startswith("text/plain")


async def test_json_webhook_gets_the_whole_notification(hooks):
    base, got = hooks
    await WebhookChannel(f"{base}/hook", format="json").send(
        Notification(title="Done", body="ok", tags=("a",)))
    headers, body = got["/hook"]
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"title": "Done", "body": "ok", "url": None,
                                "priority": "default", "tags": ["a"]}


async def test_a_webhook_answering_500_is_an_error_naming_the_status_and_the_answer(hooks):
    base, _ = hooks
    with pytest.raises(NotificationError) as caught:
        await WebhookChannel(f"{base}/fail", name="phone").send(NOTE)
    assert caught.value.channel == "phone"
    assert "answered 500 Internal Server Error: topic exploded xxx" in str(caught.value)
    assert len(caught.value.cause) < 300  # the start of the answer, not all of it


async def test_a_webhook_nobody_listens_on_is_an_error_naming_where():
    port = closed_port()
    with pytest.raises(NotificationError, match=f"cannot reach 127.0.0.1:{port}"):
        await WebhookChannel(f"http://127.0.0.1:{port}/t", name="phone").send(NOTE)


# -- email --------------------------------------------------------------------------------------


async def test_email_arrives_with_subject_sender_recipients_and_body(smtp):
    port, box = smtp
    channel = mail(port, username="tenshu", password_env="TENSHU_SMTP_PASSWORD")
    assert PASSWORD not in repr(channel)
    await channel.send(NOTE)
    [(envelope, user)] = box.messages
    assert user == b"tenshu"
    assert envelope.mail_from == "tenshu@example.net"
    assert envelope.rcpt_tos == ["me@example.net", "you@example.net"]
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert message["Subject"] == NOTE.title
    assert message["From"] == "tenshu@example.net"
    assert message["To"] == "me@example.net, you@example.net"
    assert message["X-Priority"] == "1"
    assert message.get_content_type() == "text/plain"
    assert message.get_content().replace("\r\n", "\n") == f"{NOTE.body}\n\n{NOTE.url}\n"


async def test_email_login_refused_is_an_error_naming_the_user(smtp):
    port, box = smtp
    channel = channels_from_config({"mail": {
        "type": "email", "host": "127.0.0.1", "port": port, "sender": "t@example.net",
        "to": ["me@example.net"], "starttls": False, "username": "tenshu",
        "password_env": "TENSHU_SMTP_PASSWORD"}}, secret={"TENSHU_SMTP_PASSWORD": "wrong"}.get)
    with pytest.raises(NotificationError, match="refused the login of 'tenshu': 535"):
        await channel["mail"].send(NOTE)
    assert box.messages == []


async def test_email_without_its_password_in_the_environment_says_which_variable(smtp):
    port, _ = smtp
    channel = channels_from_config({"mail": {
        "type": "email", "host": "127.0.0.1", "port": port, "sender": "t@example.net",
        "to": ["me@example.net"], "starttls": False, "username": "tenshu",
        "password_env": "TENSHU_SMTP_PASSWORD"}}, secret={}.get)["mail"]
    with pytest.raises(NotificationError, match="TENSHU_SMTP_PASSWORD is not set"):
        await channel.send(NOTE)


async def test_email_recipients_refused_are_named(smtp):
    port, box = smtp
    with pytest.raises(NotificationError, match="refused every recipient: nobody@nowhere.example "
                                                r"\(550 5.1.1 no such mailbox\)"):
        await mail(port, to=["nobody@nowhere.example"]).send(NOTE)
    with pytest.raises(NotificationError, match="refused some recipients .*nobody@nowhere"):
        await mail(port, to=["me@example.net", "nobody@nowhere.example"]).send(NOTE)
    assert [m[0].rcpt_tos for m in box.messages] == [["me@example.net"]]


async def test_email_to_a_closed_port_or_without_starttls_is_a_clear_error(smtp):
    port, _ = smtp
    with pytest.raises(NotificationError, match="connection refused"):
        await mail(closed_port()).send(NOTE)
    # STARTTLS is the default, and this server does not offer it
    with pytest.raises(NotificationError, match="STARTTLS extension not supported"):
        await mail(port, starttls=True).send(NOTE)


# -- the desktop --------------------------------------------------------------------------------


class FakeBin:
    """A folder first on PATH, of shell scripts that stand in for programs."""

    def __init__(self, folder):
        self.folder = folder
        self.folder.mkdir()

    def add(self, name: str, script: str = 'printf "%s\\0" "$@" > "$ARGV_FILE"') -> None:
        """`name` runs `script`; by default it writes its arguments to $ARGV_FILE."""
        path = self.folder / name
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(0o755)

    def argv(self) -> list[str]:
        """The arguments the last run of a default script got."""
        return (self.folder / "argv").read_text().split("\0")[:-1]


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    fake = FakeBin(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{fake.folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ARGV_FILE", str(fake.folder / "argv"))
    return fake


# The text is passed through untouched, however much it looks like options, shell or code.
TRICKY = Notification(title='-h "$(touch /tmp/x)" `id`', body="a\\b \"end\" ; rm -rf ~",
                      url="http://127.0.0.1/r", priority="high")


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS shows notifications with osascript")
async def test_notify_send_gets_urgency_title_and_body_as_their_own_arguments(fake_bin):
    fake_bin.add("notify-send")
    await DesktopChannel().send(TRICKY)
    assert fake_bin.argv() == ["--urgency", "critical", "--app-name", "tenshu", "--",
                               TRICKY.title, f"{TRICKY.body}\n\n{TRICKY.url}"]
    await DesktopChannel().send(Notification(title="t", body="b", priority="low"))
    assert fake_bin.argv()[:2] == ["--urgency", "low"]


async def test_osascript_reads_the_text_from_argv_never_from_its_script(fake_bin, monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    fake_bin.add("osascript")
    await DesktopChannel().send(TRICKY)
    argv = fake_bin.argv()
    assert argv[-3:] == ["--", TRICKY.title, f"{TRICKY.body}\n\n{TRICKY.url}"]
    script = argv[:-3]
    assert script[::2] == ["-e"] * 3
    assert script[1::2] == ["on run argv",
                            "display notification (item 2 of argv) with title (item 1 of argv)",
                            "end run"]


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS shows notifications with osascript")
async def test_notify_send_failing_or_hanging_is_a_clear_error(fake_bin):
    fake_bin.add("notify-send", 'echo "Cannot autolaunch D-Bus without X11 $DISPLAY" >&2; exit 1')
    with pytest.raises(NotificationError, match="exited with status 1: Cannot autolaunch D-Bus"):
        await DesktopChannel(name="desk").send(NOTE)
    fake_bin.add("notify-send", "exec sleep 10")
    with pytest.raises(NotificationError, match="did not finish within 0.3 s"):
        await DesktopChannel(timeout_s=0.3).send(NOTE)


def test_without_notify_send_the_desktop_channel_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not DesktopChannel.available()
    with pytest.raises(ValueError, match="notify-send is not on PATH.*libnotify-bin"):
        DesktopChannel()
    with pytest.raises(ValueError, match="notify.channels.desk: notify-send is not on PATH"):
        channels_from_config({"desk": {"type": "desktop"}})


def no_desktop() -> str:
    """Why a real notify-send cannot show a notification here ("" when it can)."""
    if sys.platform == "darwin" or not shutil.which("notify-send"):
        return "notify-send is not installed (Debian and Ubuntu: libnotify-bin)"
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return "no desktop session (DBUS_SESSION_BUS_ADDRESS is not set)"
    return ""


@pytest.mark.skipif(bool(no_desktop()), reason=no_desktop())
async def test_a_real_notify_send_shows_it():
    await DesktopChannel().send(Notification(title="tenshu test", body="from test_notify.py",
                                             priority="low"))


# -- the notifier -------------------------------------------------------------------------------


async def test_one_failing_channel_never_stops_the_others(hooks, caplog):
    base, got = hooks
    notifier = Notifier({
        "phone": WebhookChannel(f"{base}/mytopic"),
        "broken": WebhookChannel(f"{base}/fail"),
        "mail": EmailChannel("127.0.0.1", closed_port(), "t@example.net", ("me@example.net",),
                             starttls=False),
    })
    delivery = await notifier.send(NOTE)
    assert delivery.sent == ("phone",)
    assert set(delivery.failed) == {"broken", "mail"}
    assert "answered 500" in delivery.failed["broken"]
    assert "connection refused" in delivery.failed["mail"]
    assert "/mytopic" in got
    assert "not sent to broken" in caplog.text and "not sent to mail" in caplog.text

    delivery = await notifier.send(NOTE, channels="phone")
    assert delivery.sent == ("phone",) and delivery.failed == {}


async def test_naming_a_channel_that_is_not_there_is_the_one_error_send_raises(hooks):
    base, got = hooks
    notifier = Notifier({"phone": WebhookChannel(f"{base}/mytopic")})
    with pytest.raises(InvalidRequestError, match="no notification channel 'pager'; "
                                                  "the channels are: phone"):
        await notifier.send(NOTE, channels=["phone", "pager"])
    assert got == {}  # nothing was sent


# -- configuration ------------------------------------------------------------------------------

CONFIG = """
[notify.channels.phone]
type = "webhook"
url = "http://127.0.0.1:8080/mytopic"
headers = { Authorization = "Bearer tk_1" }

[notify.channels.hook]
type = "webhook"
url = "https://hooks.example.net/x"
format = "json"
timeout_s = 5

[notify.channels.mail]
type = "email"
host = "smtp.example.net"
port = 587
sender = "tenshu@example.net"
to = ["me@example.net"]
username = "tenshu@example.net"
password_env = "TENSHU_SMTP_PASSWORD"
"""


def test_channels_are_read_from_notify_channels():
    table = tomllib.loads(CONFIG)["notify"]["channels"]
    channels = channels_from_config(table, secret=SECRETS)
    assert channels == {
        "phone": WebhookChannel("http://127.0.0.1:8080/mytopic",
                                headers=(("Authorization", "Bearer tk_1"),), name="phone"),
        "hook": WebhookChannel("https://hooks.example.net/x", format="json", timeout_s=5.0,
                               name="hook"),
        "mail": EmailChannel("smtp.example.net", 587, "tenshu@example.net", ("me@example.net",),
                             username="tenshu@example.net", password_env="TENSHU_SMTP_PASSWORD",
                             password=PASSWORD, name="mail"),
    }


@pytest.mark.parametrize(("table", "error"), [
    ({"type": "sms"}, "notify.channels.x.type: 'sms' is not one of desktop, webhook, email"),
    ({"url": "http://h/t"}, "notify.channels.x.type: missing"),
    ({"type": "webhook"}, "notify.channels.x: .*missing 1 required .*'url'"),
    ({"type": "webhook", "url": "ftp://h/t"}, "notify.channels.x.url: 'ftp://h/t' is not an "
                                              "http"),
    ({"type": "webhook", "url": "http://h/t", "topic": "t"},
     "notify.channels.x: unknown key\\(s\\) topic"),
    ({"type": "webhook", "url": "http://h/t", "format": "xml"}, "notify.channels.x.format:"),
    ({"type": "webhook", "url": "http://h/t", "headers": ["a"]}, "notify.channels.x.headers:"),
    ({"type": "email", "host": "h", "port": "587", "sender": "a@b", "to": ["c@d"]},
     "notify.channels.x.port: must be an integer"),
    ({"type": "email", "host": "h", "port": 587, "sender": "a@b", "to": "c@d"},
     "notify.channels.x.to: must be a list of strings"),
    ({"type": "email", "host": "h", "port": 587, "sender": "a@b", "to": ["c@d"],
      "password": "hunter2"}, "notify.channels.x: unknown key\\(s\\) password"),
    ({"type": "email", "host": "h", "port": 587, "sender": "a@b", "to": ["c@d"],
      "username": "u"}, "notify.channels.x.password_env:"),
    ({"type": "email", "host": "smtp.example.net", "port": 25, "sender": "a@b", "to": ["c@d"],
      "username": "u", "password_env": "P", "starttls": False},
     "notify.channels.x.starttls: a login to smtp.example.net needs starttls or ssl"),
])
def test_a_mistake_in_a_channel_names_the_channel_and_the_key(table, error):
    with pytest.raises(ValueError, match=error):
        channels_from_config({"x": table}, secret=SECRETS)


def test_a_bad_channel_name_or_priority_is_refused():
    with pytest.raises(ValueError, match="notify.channels.my phone: a channel's name"):
        channels_from_config({"my phone": {"type": "webhook", "url": "http://h/t"}})
    with pytest.raises(ValueError, match="priority: one of low, default, high"):
        Notification(title="t", body="b", priority="urgent")
