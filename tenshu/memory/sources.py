"""Where documents come from besides files: URLs fetched over HTTP, and the person's recorded
conversations rendered as Markdown. Each gives bytes that readers.py reads like a file's.

A URL is fetched only when a person asks for it (`tenshu ingest URL`, or an admin through the
API): tenshu makes no connection nobody configured.
"""

from __future__ import annotations

from tenshu.memory.readers import ReadError


async def fetch(url: str, *, timeout: float, max_bytes: int) -> tuple[bytes, str | None]:
    """The body at `url` and its content type; ReadError for anything but a whole 2xx body
    within max_bytes."""
    if not url.startswith(("http://", "https://")):
        raise ReadError(f"{url}: only http:// and https:// URLs can be fetched")
    import httpx  # here, not at the top: a server that fetches no URL starts without it

    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client, \
                client.stream("GET", url) as response:
            if response.status_code >= 400:
                raise ReadError(f"{url}: the server answered {response.status_code}")
            body = bytearray()
            async for part in response.aiter_bytes():
                body += part
                if len(body) > max_bytes:
                    raise ReadError(f"{url}: larger than the {max_bytes // 2**20} MB limit "
                                    "([memory] max_file_mb)")
            content_type = response.headers.get("content-type")
    except httpx.TimeoutException:
        raise ReadError(f"{url}: no answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise ReadError(f"{url}: cannot be fetched ({exc})") from None
    return bytes(body), content_type.split(";")[0].strip() if content_type else None


def conversation_markdown(title: str, messages: list[dict]) -> str:
    """A conversation as Markdown: its title, then each message's words under its role."""
    lines = [f"# {title}", ""]
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            words = content
        else:
            words = "\n".join(b.get("text", "") for b in content or []
                              if isinstance(b, dict) and b.get("type") == "text")
        if words.strip() and message.get("role") in ("user", "assistant"):
            lines += [f"## {message['role']}", "", words.strip(), ""]
    return "\n".join(lines)
