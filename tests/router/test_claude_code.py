"""Claude Code through tenshu, when its "anthropic" upstream starts failing mid-session.

Claude Code asks for tenshu's `auto` route, which answers with the strong tier (an Anthropic-protocol upstream: another tenshu process behind a fault proxy, marked
cloud) and falls back to the small tier (a model tenshu runs itself). The first turn is served
by the upstream; then the upstream answers 529 overloaded to everything, and the next turn of
the same session (`--continue`) must still work, served locally.
"""

from __future__ import annotations

import time

import pytest

from tests.api.test_claude_code import CLAUDE, claude
from tests.faultproxy import FaultProxy
from tests.router.conftest import UPSTREAM_MODEL, front_server

pytestmark = pytest.mark.skipif(not CLAUDE.exists(), reason="Claude Code is not installed")

# Claude Code sends a much longer prompt for Anthropic's own model names (about 54k tokens of
# this checkpoint's tokenizer, past its 32k window), so the session asks for the route by its
# own name; tests/router/test_fallback.py covers `claude-*` names reaching the route.
MODEL = "auto"


def test_claude_code_keeps_working_on_the_local_tier(tmp_path, upstream, wide_checkpoint):
    config = f"""
[[models]]
name = "local"
path = "{wide_checkpoint}"

[[models]]
name = "cloud"
backend = "anthropic"
endpoint = "PROXY"
upstream_model = "{UPSTREAM_MODEL}"
locality = "cloud"
# A loaded machine prefills Claude Code's prompt slowly: the first turn must not time out and
# fall back locally, which would look like the upstream failing.
first_token_timeout = 900
idle_timeout = 900

[tiers]
small = ["local"]
strong = ["cloud"]

[[routes]]
name = "auto"
models = ["claude-*"]
tier = "strong"
fallback = ["small"]
"""
    home = tmp_path / "home"
    home.mkdir()
    with FaultProxy(upstream.url) as proxy, \
            front_server(tmp_path, config.replace("PROXY", proxy.url)) as front:
        def served_by() -> list[str]:
            """Who answered each of the session's requests, oldest first, once every answered
            request is in the log (the audit writer flushes every half second): nothing in
            flight, and the log unchanged for a second."""
            last = None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                rows = front.server.store.audit.recent(200)
                served = [r.backend for r in reversed(rows) if r.model == MODEL and r.status == 200]
                if served == last and not front.gateway.in_flight:
                    break
                last = served
                time.sleep(1.0)
            return served

        first = claude(front, MODEL, "say hello", home)
        assert first.returncode == 0, first.stdout + first.stderr
        assert proxy.requests, "the first turn should have gone to the upstream"
        assert set(served_by()) == {"cloud"}

        proxy.fail(529)
        failed_before = len(proxy.requests)
        second = claude(front, MODEL, "and again", home, "--continue")
        assert second.returncode == 0, second.stdout + second.stderr
        assert second.stdout.strip()
        assert len(proxy.requests) > failed_before  # the upstream was tried, and failed
        assert served_by()[-1] == "local"
