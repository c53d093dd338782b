"""A route's rules, applied to one request: which tier, and why.

The order is fixed and documented (docs/config.md): an `x-tenshu-tier` header naming one of the
route's tiers; then the route's rules, first match wins; then the sentinel, when the route has
a `simple_tier`; then the route's default tier.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from tenshu.config.routing import RouteSpec, Rule
from tenshu.core.messages import ImageBlock, ToolResultBlock
from tenshu.core.request import ChatRequest

TIER_HEADER = "x-tenshu-tier"


def route_tiers(route: RouteSpec, all_tiers: tuple[str, ...]) -> list[str]:
    """Every tier a route may use: its default, its rules', its simple tier, its fallbacks
    (or, with no fallback given, every tier in [tiers] order)."""
    named = [route.tier, *(r.tier for r in route.rules)]
    if route.simple_tier:
        named.append(route.simple_tier)
    named += route.fallback if route.fallback is not None else all_tiers
    return list(dict.fromkeys(named))


def tier_order(route: RouteSpec, chosen: str, all_tiers: tuple[str, ...]) -> list[str]:
    """The chosen tier first, then the fallbacks: the route's `fallback` list, or every other
    tier in [tiers] order."""
    fallback = route.fallback if route.fallback is not None else all_tiers
    return list(dict.fromkeys([chosen, *fallback]))


def first_rule(route: RouteSpec, request: ChatRequest, headers: Mapping[str, str],
               prompt_tokens: int) -> tuple[int, Rule] | None:
    for i, rule in enumerate(route.rules):
        if matches(rule, request, headers, prompt_tokens):
            return i, rule
    return None


def matches(rule: Rule, request: ChatRequest, headers: Mapping[str, str],
            prompt_tokens: int) -> bool:
    if rule.model is not None and not fnmatch.fnmatchcase(request.model, rule.model):
        return False
    if rule.tools is not None and bool(request.tools) != rule.tools:
        return False
    if rule.images is not None and has_images(request) != rule.images:
        return False
    if rule.thinking is not None and wants_thinking(request) != rule.thinking:
        return False
    if rule.min_prompt_tokens is not None and prompt_tokens < rule.min_prompt_tokens:
        return False
    if rule.header is not None:
        name, sep, value = rule.header.partition(":")
        got = headers.get(name.strip().lower())
        if got is None or (sep and got.strip() != value.strip()):
            return False
    return all(str(request.metadata.get(k)) == v for k, v in rule.metadata)


def has_images(request: ChatRequest) -> bool:
    for m in request.messages:
        for b in m.content:
            if isinstance(b, ImageBlock) or (
                    isinstance(b, ToolResultBlock) and any(
                        isinstance(c, ImageBlock) for c in b.content)):
                return True
    return False


def wants_thinking(request: ChatRequest) -> bool:
    thinking = request.thinking or {}
    return bool(thinking) and thinking.get("type") not in ("disabled", None) or \
        bool(thinking.get("effort"))
