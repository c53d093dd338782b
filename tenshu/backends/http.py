"""The HTTP client under the upstream backends: aiohttp, behind the few calls they make.

    client = HttpClient(connect_timeout=5, max_connections=0)
    async with client.stream("POST", url, json=body, headers=h) as response:
        response.status, response.headers.get("content-type")
        async for line in response.lines(): ...  # or: await response.read()
    await client.aclose()

Why aiohttp here when tenshu's other clients use httpx: this is the gateway's hot path, one
request out per request in. Against benchmarks/fast_upstream.py on the 2-core machine of
docs/benchmarks.md, a streamed chat completion cost httpx 0.28.1 about 2.1-2.9 ms of CPU and
aiohttp 0.2-0.3 ms (httpx's pure-Python pool, URL and header models; aiohttp parses in C). The
backends see only this module's names, so the choice stays in one file.

Failures below HTTP come out as this module's errors, never aiohttp's:

    HttpError            the request failed below HTTP
    ├── ConnectError     no connection: refused, unknown host, bad URL, TLS
    │   └── ConnectTimeout
    └── ConnectionLost   the connection broke, or the reply was not HTTP

Lines are split at "\\n" (a "\\r" before it is dropped): what SSE and NDJSON servers send. A body is
read in whatever pieces arrive, so a line has no length limit (aiohttp's readline has one).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping

import aiohttp

from tenshu import __version__

# Idle connections are dropped after this long: a little before the 5 s after which uvicorn
# (vLLM, another tenshu) and Node close theirs, so a request is never sent down a connection the
# server is closing at that moment (a POST that hits one is not retried).
KEEPALIVE_SECONDS = 4.0


class HttpError(Exception):
    """A request that failed below HTTP."""


class ConnectError(HttpError):
    """No connection could be made (refused, unknown host, bad URL, TLS)."""


class ConnectTimeout(ConnectError):
    """The connection was not made in time."""


class ConnectionLost(HttpError):
    """The connection broke before the reply was whole, or the reply was not HTTP."""


class HttpResponse:
    """One response whose body has not been read yet."""

    def __init__(self, response: aiohttp.ClientResponse):
        self._response = response
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers  # case-insensitive
        self.body = b""  # after read()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    async def read(self) -> bytes:
        with _translated():
            self.body = await self._response.read()
        return self.body

    async def lines(self) -> AsyncIterator[str]:
        """The body's lines, without their line ends, as they arrive."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        with _translated():
            async for chunk in self._response.content.iter_any():
                pending += decoder.decode(chunk)
                if "\n" not in pending:
                    continue
                *lines, pending = pending.split("\n")
                for line in lines:
                    yield line[:-1] if line.endswith("\r") else line
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending.removesuffix("\r")


class HttpClient:
    """A pool of keep-alive connections. Only connecting is timed here; reads are the caller's
    to time (the upstream backends time each event)."""

    def __init__(self, *, connect_timeout: float, max_connections: int = 0):
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}  # (scheme, host) -> proxy URL

    @contextlib.asynccontextmanager
    async def stream(self, method: str, url: str, *, json=None,
                     headers: Mapping[str, str] | None = None) -> AsyncIterator[HttpResponse]:
        """Send the request; yield the response once its head has arrived. Leaving the block
        releases the connection: back to the pool if the body was read to its end."""
        session = self._session_for_this_loop()
        with _translated():
            response = await session.request(method, url, json=json, headers=headers,
                                             proxy=self._proxy_for(url),
                                             allow_redirects=False)  # as httpx: not followed
        try:
            yield HttpResponse(response)
        finally:
            response.release()

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _session_for_this_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # Made on first use: a session belongs to the event loop that made it, and the
            # backends are built before the server's loop runs.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections,
                                               keepalive_timeout=KEEPALIVE_SECONDS),
                headers={"User-Agent": f"tenshu/{__version__}"},
                timeout=aiohttp.ClientTimeout(total=None, connect=self.connect_timeout,
                                              sock_connect=self.connect_timeout),
                auto_decompress=True,
            )
            self._loop = loop
        return self._session

    def _proxy_for(self, url: str) -> str | None:
        """The proxy that HTTP_PROXY / HTTPS_PROXY name for this URL unless NO_PROXY exempts it
        (as httpx and curl read them), looked up once per host: aiohttp's own lookup
        (trust_env) goes through a thread on every request."""
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in self._proxies:
            bypass = urllib.request.proxy_bypass(parts.hostname or "")
            self._proxies[key] = None if bypass else urllib.request.getproxies().get(parts.scheme)
        return self._proxies[key]


@contextlib.contextmanager
def _translated():
    """aiohttp's exceptions as this module's."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise ConnectTimeout(_reason(exc)) from exc
    except aiohttp.NonHttpUrlClientError as exc:
        raise ConnectError(f"not an http:// or https:// URL: {exc}") from exc
    except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
        raise ConnectError(_reason(exc)) from exc
    except aiohttp.ClientError as exc:  # disconnected, payload broken, not HTTP, reset
        raise ConnectionLost(_reason(exc)) from exc


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
