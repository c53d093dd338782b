"""A browser, as far as an OAuth sign-in needs one: it follows the authorization URL to the
provider (which approves at once), then the provider's redirect back to tenshu's loopback
callback, and keeps the page it was shown.

    page = visit(url)                        # or, as $BROWSER: python browser.py URL
    page = visit(url, state="forged")        # the callback with another state
"""

from __future__ import annotations

import sys
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx


def authorize(url: str) -> str:
    """The provider's redirect for `url`: where it sends the browser back to."""
    answer = httpx.get(url, follow_redirects=False, timeout=10)
    assert answer.status_code == 302, (answer.status_code, answer.text)
    return answer.headers["location"]


def visit(url: str, *, state: str | None = None) -> httpx.Response:
    """Sign in at `url` and follow the redirect back (with `state` in place of the one the
    provider returned, when given); the page tenshu showed."""
    back = authorize(url)
    if state is not None:
        parts = urlsplit(back)
        query = dict(parse_qsl(parts.query)) | {"state": state}
        back = urlunsplit(parts._replace(query=urlencode(query)))
    return httpx.get(back, timeout=10)


if __name__ == "__main__":  # as $BROWSER, for `tenshu integrations connect` in a subprocess
    sys.exit(0 if visit(sys.argv[1]).status_code == 200 else 1)
