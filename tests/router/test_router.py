"""Router.plan: which deployments a request may go to, in which order, and what the trace says.

The deployments are real upstream backends aimed at a closed port: planning never calls them.
Requests that do reach upstreams are in test_fallback.py.
"""

from __future__ import annotations

import time
from datetime import date

import pytest

from tenshu.backends.embedding import DEFAULT_EMBEDDER, SentenceEmbedder, default_embedder_path
from tenshu.backends.upstreams import upstream_backend
from tenshu.config import load_server_settings
from tenshu.core.errors import (
    ModelNotFoundError,
    OverloadedError,
    PermissionDeniedError,
    QuotaExceededError,
    UpstreamError,
)
from tenshu.core.messages import ImageBlock, Message, TextBlock, ToolSpec
from tenshu.core.request import ChatRequest
from tenshu.router.budget import Budgets
from tenshu.router.health import Deployment
from tenshu.router.router import Router
from tenshu.router.sentinel import EmbeddingSentinel
from tenshu.router.trace import Trace

CONFIG = """
[[models]]
name = "tiny"
backend = "openai"
endpoint = "http://127.0.0.1:9/v1"
context_window = 2048

[[models]]
name = "coder"
backend = "openai"
endpoints = ["http://127.0.0.1:9/v1", "http://127.0.0.2:9/v1"]
context_window = 32768

[[models]]
name = "sonnet"
backend = "anthropic"
endpoint = "https://api.anthropic.example"
context_window = 200000
price_input = 3.0
price_output = 15.0
vision = true

[tiers]
small = ["tiny"]
local = ["coder"]
strong = ["sonnet"]

[[routes]]
name = "auto"
models = ["claude-*"]
tier = "strong"
fallback = ["local", "small"]
rules = [
  { model = "claude-*haiku*", tier = "small" },
  { header = "x-project: secret", tier = "local" },
  { tools = true, thinking = true, tier = "strong" },
]

[router]
cooldown_failures = 2
cooldown = 30

[[budgets]]
tier = "strong"
daily_usd = 1.0
"""


def make_router(tmp_path, text: str = CONFIG, **kwargs) -> Router:
    file = tmp_path / "tenshu.toml"
    file.write_text(text)
    routing = load_server_settings(file).routing
    deployments = {}
    for spec in routing.models:
        group = []
        for i, url in enumerate(spec.endpoints):
            name = spec.name if len(spec.endpoints) == 1 else f"{spec.name}[{i}]"
            backend = upstream_backend(spec.backend, name, url,
                                       context_window=spec.context_window)
            group.append(Deployment(name, spec, backend))
        deployments[spec.name] = group
    return Router(routing, deployments, budgets=Budgets(routing), **kwargs)


def ask(text: str = "hello", model: str = "auto", **fields) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message.of("user", text)], **fields)


async def plan(router, request, **kwargs) -> tuple[list[str], Trace]:
    trace = Trace()
    found = await router.plan(request, trace, **kwargs)
    return [d.name for d in found], trace


async def test_a_route_tries_its_tier_then_its_fallbacks_in_order(tmp_path):
    names, trace = await plan(make_router(tmp_path), ask())
    assert names == ["sonnet", "coder[0]", "coder[1]", "tiny"]
    assert (trace.route, trace.tier, trace.reason) == ("auto", "strong", "default")


async def test_claude_code_names_reach_the_route_and_haiku_goes_small(tmp_path):
    router = make_router(tmp_path)
    names, trace = await plan(router, ask(model="claude-haiku-4-5-20251001"))
    assert names[0] == "tiny" and trace.tier == "small"
    assert trace.reason == "rule 0: model=claude-*haiku*"
    assert trace.route == "auto"
    names, trace = await plan(router, ask(model="claude-sonnet-4-5"))
    assert names[0] == "sonnet"


async def test_rules_read_headers_tools_and_thinking(tmp_path):
    router = make_router(tmp_path)
    names, trace = await plan(router, ask(), headers={"x-project": "secret"})
    assert names[0] == "coder[0]" and trace.reason.startswith("rule 1")
    names, _ = await plan(router, ask(), headers={"x-project": "other"})
    assert names[0] == "sonnet"
    tools = [ToolSpec("read", "", {"type": "object"})]
    _, trace = await plan(router, ask(tools=tools, thinking={"type": "enabled"}))
    assert trace.reason == "rule 2: tools=True, thinking=True"
    _, trace = await plan(router, ask(tools=tools))
    assert trace.reason == "default"
    names, trace = await plan(router, ask(), headers={"x-tenshu-tier": "local"})
    assert names[0] == "coder[0]" and trace.reason == "header x-tenshu-tier"


async def test_a_named_model_gets_only_its_own_replicas_least_busy_first(tmp_path):
    router = make_router(tmp_path)
    router.deployments["coder"][0].in_flight = 3
    names, trace = await plan(router, ask(model="coder"))
    assert names == ["coder[1]", "coder[0]"]
    assert (trace.route, trace.reason) == ("coder", "model")
    with pytest.raises(ModelNotFoundError, match="auto"):
        await plan(router, ask(model="gpt-4o"))


@pytest.mark.parametrize("how", ["header", "key", "content", "local_only"])
async def test_private_requests_never_get_a_cloud_candidate(tmp_path, how):
    text = CONFIG.replace("[router]", "[router]\nlocal_only = true") if how == "local_only" \
        else CONFIG
    router = make_router(tmp_path, text)
    request = ask("my key is AKIAIOSFODNN7EXAMPLE, fix the deploy" if how == "content"
                  else "hello")
    names, trace = await plan(router, request, key_private=how == "key",
                              headers={"x-tenshu-private": "1"} if how == "header" else {})
    assert "sonnet" not in names and names[0] == "coder[0]"
    assert trace.private and "AKIA" not in trace.private
    assert ("sonnet", "skipped", "private") in [(a.backend, a.outcome, a.error)
                                                for a in trace.attempts]


async def test_a_private_request_with_no_local_model_is_refused_not_sent(tmp_path):
    text = CONFIG.replace('fallback = ["local", "small"]', "fallback = []")
    router = make_router(tmp_path, text)
    with pytest.raises(PermissionDeniedError, match="must stay on this machine"):
        await plan(router, ask(), headers={"x-tenshu-private": "true"})
    names, _ = await plan(router, ask())  # not private: the cloud is fine
    assert names == ["sonnet"]


async def test_a_spent_budget_routes_local(tmp_path):
    router = make_router(tmp_path)
    router.budgets.add(None, "sonnet", 100_000, 1.20)
    names, trace = await plan(router, ask())
    assert names[0] == "coder[0]"
    skipped = next(a for a in trace.attempts if a.backend == "sonnet")
    assert "daily budget of all keys on tier strong is spent ($1.20 of $1.00)" in skipped.error


async def test_a_key_budget_binds_only_that_key_and_resets_each_day(tmp_path):
    text = CONFIG.replace("tier = \"strong\"\ndaily_usd = 1.0",
                          "key = \"ci\"\ndaily_tokens = 1000")
    day = [date(2026, 11, 21)]
    router = make_router(tmp_path, text)
    router.budgets.clock = lambda: day[0]
    router.budgets.day = day[0]
    router.budgets.add("ci", "sonnet", 1500, 0.0)
    assert (await plan(router, ask(), key_name="ci"))[0][0] == "coder[0]"
    assert (await plan(router, ask(), key_name="laptop"))[0][0] == "sonnet"
    day[0] = date(2026, 11, 22)
    assert (await plan(router, ask(), key_name="ci"))[0][0] == "sonnet"


async def test_only_a_spent_budget_left_is_a_clear_429(tmp_path):
    text = CONFIG.replace('fallback = ["local", "small"]', "fallback = []")
    router = make_router(tmp_path, text)
    router.budgets.add(None, "sonnet", 10, 5.0)
    with pytest.raises(QuotaExceededError, match="budget .* is spent"):
        await plan(router, ask())


async def test_long_prompts_skip_small_windows_and_images_prefer_vision(tmp_path):
    router = make_router(tmp_path)
    names, trace = await plan(router, ask(model="claude-haiku-4-5"), prompt_tokens=5000)
    assert names == ["coder[0]", "coder[1]"]  # tiny's 2048 is too small
    assert any(a.backend == "tiny" and "exceeds its 2,048 window" in a.error
               for a in trace.attempts)
    image = ChatRequest(model="auto", messages=[Message("user", [
        TextBlock("what is this?"), ImageBlock("image/png", "iVBORw0KGgo=")])])
    names, _ = await plan(router, image)
    assert names == ["sonnet"]
    # a prompt no model can take still goes to the largest, which says so in its own words
    names, _ = await plan(router, ask(), prompt_tokens=10**6)
    assert names == ["sonnet"]


async def test_a_failing_deployment_rests_then_gets_one_probe(tmp_path):
    router = make_router(tmp_path)
    sonnet = router.deployments["sonnet"][0]
    settings = router.settings.router
    t = time.monotonic()
    sonnet.failed(UpstreamError("boom"), settings, now=t)
    assert not sonnet.resting(now=t)  # one failure is not enough
    sonnet.failed(UpstreamError("boom"), settings, now=t + 1)
    assert sonnet.resting(now=t + 1) == pytest.approx(30.0)
    names, trace = await plan(router, ask())
    assert names[0] == "coder[0]" and "cooling down" in trace.attempts[0].error
    # after the cooldown, one probe at a time; failing it rests it again at once
    assert sonnet.resting(now=t + 31.5) == 0
    sonnet.acquire()
    assert sonnet.resting(now=t + 31.6) == float("inf")
    sonnet.failed(UpstreamError("still down"), settings, now=t + 31.7)
    sonnet.release()
    assert sonnet.resting(now=t + 31.8) == pytest.approx(29.9)
    sonnet.acquire()
    sonnet.succeeded()
    sonnet.release()
    assert sonnet.resting() == 0 and not sonnet.failures


async def test_a_429_rests_for_its_retry_after_and_quota_for_longer(tmp_path):
    router = make_router(tmp_path)
    settings = router.settings.router
    sonnet, tiny = router.deployments["sonnet"][0], router.deployments["tiny"][0]
    sonnet.failed(OverloadedError("slow down", retry_after=7), settings, now=0.0)
    assert sonnet.resting(now=0.0) == pytest.approx(7.0)
    tiny.failed(QuotaExceededError("no credit"), settings, now=0.0)
    assert tiny.resting(now=0.0) == pytest.approx(300.0)


async def test_when_everything_rests_everything_is_still_tried(tmp_path):
    router = make_router(tmp_path)
    for group in router.deployments.values():
        for d in group:
            d.resting_until = 10**12
    names, _ = await plan(router, ask())
    assert names == ["sonnet", "coder[0]", "coder[1]", "tiny"]


async def test_the_sentinel_sends_simple_requests_to_the_simple_tier(tmp_path):
    """The real MiniLM embedder as the sentinel: a greeting stays small, a design task goes to
    the route's strong tier, and a calibrated threshold replaces the configured one."""
    path = default_embedder_path()
    if path is None:
        pytest.skip("the all-MiniLM-L6-v2 package is not installed")
    text = CONFIG.replace('fallback = ["local", "small"]',
                          'fallback = ["local", "small"]\nsimple_tier = "small"')
    sentinel = EmbeddingSentinel(SentenceEmbedder(DEFAULT_EMBEDDER, path))
    router = make_router(tmp_path, text, sentinel=sentinel)
    names, trace = await plan(router, ask("hi there, thanks!"))
    assert names[0] == "tiny" and trace.tier == "small"
    assert trace.reason.startswith("sentinel: simple") and 0 <= trace.score < 0.5
    hard = ("Design a sharded, replicated key-value store with linearizable reads, explain "
            "its failure handling, and prove that leader election cannot split the brain.")
    names, trace = await plan(router, ask(hard))
    assert names[0] == "sonnet" and trace.reason.startswith("sentinel: complex")
    # a rule still comes before the sentinel
    _, trace = await plan(router, ask("hi", model="claude-haiku-4-5"))
    assert trace.reason.startswith("rule 0")
    # a calibrated threshold of 0 sends everything to the strong tier
    router.thresholds["auto"] = 0.0
    names, trace = await plan(router, ask("hi there, thanks!"))
    assert names[0] == "sonnet" and "threshold 0.00" in trace.reason
