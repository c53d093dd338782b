"""Raw HTTP/1.1 over a socket, for requests no client library would send: two Host headers,
an absolute-form target, a header that never ends, a body one byte at a time."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value
    body: bytes

    def json(self):
        return json.loads(self.body)


def connect(base_url: str, timeout: float = 30.0) -> socket.socket:
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def request(base_url: str, head: bytes, body: bytes = b"", timeout: float = 30.0) -> Reply | None:
    """Send `head` (the request line and headers, without the blank line) and `body`; the reply,
    or None when the server closed the connection without one."""
    with connect(base_url, timeout) as sock:
        sock.sendall(head + b"\r\n\r\n" + body)
        return read_reply(sock)


def read_reply(sock: socket.socket) -> Reply | None:
    """One whole reply (by Content-Length), or None if the connection closes before a reply."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = _recv(sock)
        if not chunk:
            break
        body += chunk
    return Reply(status, headers, body[:length])


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (what it sends is read and
    dropped), without this side sending anything."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    return False


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionError:
        return b""
