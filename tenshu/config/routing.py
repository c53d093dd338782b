"""The models, tiers, routes and budgets of tenshu.toml, validated into frozen settings.

    [[models]]   what can answer: a checkpoint (embedded) or an upstream server
    [tiers]      named, ordered lists of models: small, local, strong, ...
    [[routes]]   virtual models (`auto`, Claude Code's model names) that pick a tier per request
    [router]     sovereignty, the sentinel, cooldowns
    [[budgets]]  daily tokens or dollars per key and tier

docs/config.md documents every key. `parse_routing` turns the file's tables into these
dataclasses; each dataclass checks its own values and `RoutingSettings` checks that the names
refer to each other. Any problem is a ValueError naming the key, e.g. `routes[0].tier: ...`.
"""

from __future__ import annotations

import fnmatch
import re
import types
import typing
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

from tenshu.core.keep_alive import keep_alive_seconds
from tenshu.router.sovereignty import DEFAULT_MATCHERS, MATCHERS

# openai: Chat Completions; openai-responses: OpenAI's Responses API (POST {endpoint}/responses)
UPSTREAM_BACKENDS = ("openai", "openai-responses", "anthropic", "ollama")
BACKENDS = ("embedded", *UPSTREAM_BACKENDS)
_LOOPBACK = ("localhost", "::1", "[::1]")


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in _LOOPBACK or host.startswith("127.")


# EngineConfig.quantization's values (engine/config.py; not imported: it would load torch)
QUANTIZATIONS = ("int8", "int4", "gptq", "awq")


def check_quantization(value: str) -> None:
    if value and value not in QUANTIZATIONS:
        raise ValueError(f"quantization: must be one of {', '.join(QUANTIZATIONS)}, "
                         f"got {value!r}")


@dataclass(frozen=True)
class ModelSpec:
    """One model tenshu can send requests to.

    An embedded model is a checkpoint directory (`path`); an upstream model is a `backend`
    protocol and one or more `endpoints` (replicas, balanced least-busy). `locality` decides
    what private requests may use: left empty, it is `local` for checkpoints and loopback
    endpoints and `cloud` for anything else. `api_key_env` names the environment variable
    holding the upstream's key; the key itself never goes in the file.
    """

    name: str
    path: str = ""
    backend: str = "embedded"
    endpoints: tuple[str, ...] = ()
    upstream_model: str = ""
    api_key_env: str = ""
    context_window: int = 0  # 0: the checkpoint's own, or unknown for an upstream
    price_input: float = 0.0  # USD per million tokens
    price_output: float = 0.0
    locality: str = ""
    max_concurrency: int = 0  # requests at once per endpoint; 0 = no limit
    connect_timeout: float = 5.0
    first_token_timeout: float = 60.0
    idle_timeout: float = 30.0
    vision: bool = False
    quantization: str = ""  # an embedded model's; empty: server.quantization
    keep_alive: str = ""  # an embedded model's idle time before unload; empty: server's

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name: every model needs one")
        check_quantization(self.quantization)
        if self.keep_alive:
            if self.backend != "embedded":
                raise ValueError("keep_alive: applies to embedded models only")
            try:
                keep_alive_seconds(self.keep_alive)
            except ValueError as exc:
                raise ValueError(f"keep_alive: {exc}") from None
        if self.quantization and self.backend != "embedded":
            raise ValueError("quantization: applies to embedded models only (an upstream "
                             "quantizes its own)")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: must be one of {', '.join(BACKENDS)}, "
                             f"got {self.backend!r}")
        if self.backend == "embedded":
            if not self.path:
                raise ValueError("needs a path (a checkpoint directory), or a "
                                 "backend and an endpoint for an upstream server")
            if self.endpoints:
                raise ValueError("an endpoint needs a backend "
                                 f"({', '.join(UPSTREAM_BACKENDS)})")
        else:
            if not self.endpoints:
                sdk = self.backend.removesuffix("-responses")  # both of OpenAI's APIs: its SDK
                raise ValueError(f"needs an endpoint: the URL you would give the {sdk} SDK")
            for url in self.endpoints:
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise ValueError(f"endpoint: {url!r} is not an http(s) URL")
        locality = self.locality or (
            "local" if self.backend == "embedded" or all(map(is_loopback_url, self.endpoints))
            else "cloud")
        if locality not in ("local", "cloud"):
            raise ValueError(f"locality: must be local or cloud, got {locality!r}")
        object.__setattr__(self, "locality", locality)
        for key in ("context_window", "max_concurrency", "price_input", "price_output"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: must be >= 0")
        for key in ("connect_timeout", "first_token_timeout", "idle_timeout"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: must be > 0 (seconds)")

    @property
    def is_local(self) -> bool:
        return self.locality == "local"

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.price_input + output_tokens * self.price_output) / 1e6


@dataclass(frozen=True)
class Rule:
    """A route's rule: when every condition given holds, the request goes to `tier`."""

    tier: str
    model: str | None = None  # a glob over the model name the client asked for
    tools: bool | None = None  # the request offers tools
    images: bool | None = None  # the request carries images
    thinking: bool | None = None  # the client asked for extended thinking
    min_prompt_tokens: int | None = None  # the prompt is at least this long (estimated)
    header: str | None = None  # "name" (present) or "name: value"
    metadata: tuple[tuple[str, str], ...] = ()  # request metadata that must match

    def __post_init__(self) -> None:
        conditions = [f.name for f in fields(self) if f.name != "tier"]
        if all(getattr(self, c) in (None, ()) for c in conditions):
            raise ValueError(f"a rule needs a condition ({', '.join(conditions)})")

    def describe(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "tier" and value not in (None, ()):
                parts.append(f"{f.name}={dict(value) if f.name == 'metadata' else value}")
        return ", ".join(parts)


@dataclass(frozen=True)
class RouteSpec:
    """A virtual model: requests naming it (or a name matching one of `models`) go to a tier
    chosen per request, then to the `fallback` tiers in order."""

    name: str
    tier: str  # when no rule matches and the sentinel is not asked
    models: tuple[str, ...] = ()  # globs over requested model names, e.g. "claude-*"
    fallback: tuple[str, ...] | None = None  # None: every other tier, in [tiers] order
    rules: tuple[Rule, ...] = ()
    simple_tier: str | None = None  # set: the sentinel sends "simple" requests here
    threshold: float = 0.5  # sentinel scores at or above it are "complex"
    memory: tuple[str, ...] = ()  # collections its requests retrieve from (memory/stage.py)

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise ValueError("threshold: must be within 0..1")

    def answers(self, model: str) -> bool:
        return model == self.name or any(fnmatch.fnmatchcase(model, g) for g in self.models)


@dataclass(frozen=True)
class BudgetSpec:
    """A daily allowance: for one key (by name) or all, for one tier or every cloud model."""

    key: str | None = None
    tier: str | None = None
    daily_tokens: int | None = None
    daily_usd: float | None = None

    def __post_init__(self) -> None:
        if self.daily_tokens is None and self.daily_usd is None:
            raise ValueError("a budget needs daily_tokens or daily_usd")
        if (self.daily_tokens or 0) < 0 or (self.daily_usd or 0) < 0:
            raise ValueError("a budget's limits must be >= 0")

    def describe(self) -> str:
        scope = f"key {self.key}" if self.key else "all keys"
        tier = f"tier {self.tier}" if self.tier else "cloud models"
        return f"the daily budget of {scope} on {tier}"


@dataclass(frozen=True)
class RouterSettings:
    """[router]: what may leave the machine, the sentinel, and when a failing upstream rests.

    local_only: nothing leaves the machine, whatever the routes say.
    private_content: content matchers that mark a request private (see router/sovereignty.py).
    sentinel: "embedder" (semantic, all-MiniLM-L6-v2), a local model's name, or "" (off).
    cooldown_failures / cooldown_window / cooldown: a deployment that fails this many times
        within the window (seconds) is skipped for `cooldown` seconds, then probed.
    """

    local_only: bool = False
    private_content: tuple[str, ...] = DEFAULT_MATCHERS
    sentinel: str = "embedder"
    cooldown_failures: int = 3
    cooldown_window: float = 60.0
    cooldown: float = 30.0

    def __post_init__(self) -> None:
        unknown = set(self.private_content) - set(MATCHERS)
        if unknown:
            raise ValueError(f"private_content: unknown matcher(s) "
                             f"{', '.join(sorted(unknown))}; known: {', '.join(MATCHERS)}")
        if self.cooldown_failures < 1:
            raise ValueError("cooldown_failures: must be >= 1")
        if self.cooldown_window <= 0 or self.cooldown < 0:
            raise ValueError("cooldown_window must be > 0 and cooldown >= 0")


@dataclass(frozen=True)
class RoutingSettings:
    """Everything the router needs, with every cross-reference checked."""

    models: tuple[ModelSpec, ...] = ()
    tiers: tuple[tuple[str, tuple[str, ...]], ...] = ()  # ordered: name -> model names
    routes: tuple[RouteSpec, ...] = ()
    budgets: tuple[BudgetSpec, ...] = ()
    router: RouterSettings = field(default_factory=RouterSettings)

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"models: two models share a name: {', '.join(names)}")
        models = set(names)
        tiers = dict(self.tiers)
        for tier, members in self.tiers:
            if not members:
                raise ValueError(f"tiers.{tier}: lists no model")
            for m in members:
                if m not in models:
                    raise ValueError(f"tiers.{tier}: no model named {m!r}; the models are "
                                     f"{', '.join(names) or 'none'}")
        seen = set(models)
        for route in self.routes:
            where = f"routes.{route.name}"
            if route.name in seen:
                raise ValueError(f"{where}: the name is already a model's or another route's")
            seen.add(route.name)
            used = [("tier", route.tier), ("simple_tier", route.simple_tier)]
            used += [("fallback", t) for t in route.fallback or ()]
            used += [(f"rules[{i}].tier", r.tier) for i, r in enumerate(route.rules)]
            for key, tier in used:
                if tier is not None and tier not in tiers:
                    raise ValueError(f"{where}.{key}: no tier named {tier!r}; the tiers are "
                                     f"{', '.join(tiers) or 'none ([tiers] is empty)'}")
        for i, budget in enumerate(self.budgets):
            if budget.tier is not None and budget.tier not in tiers:
                raise ValueError(f"budgets[{i}].tier: no tier named {budget.tier!r}")
        sentinel = self.router.sentinel
        if sentinel not in ("", "embedder"):
            spec = next((m for m in self.models if m.name == sentinel), None)
            if spec is None or not spec.is_local:
                raise ValueError(f"router.sentinel: {sentinel!r} is not a local model here; "
                                 "use \"embedder\", a local model's name, or \"\" (off)")

    def tier_of(self, model: str) -> str | None:
        """The first tier that lists `model` (for budgets and stats)."""
        return next((t for t, members in self.tiers if model in members), None)


# -- reading the file's tables -------------------------------------------------------------------


def parse_routing(data: dict, models: list[dict]) -> dict:
    """The RoutingSettings keyword arguments for a parsed tenshu.toml (without [server]);
    `models` are the [[models]] tables. Raises ValueError naming the key."""
    out: dict = {"models": tuple(parse_model(m, f"models[{i}]") for i, m in enumerate(models))}
    tiers = data.get("tiers", {})
    if not isinstance(tiers, dict):
        raise ValueError("tiers: must be a table of tier = [model names]")
    out["tiers"] = tuple((name, _strings(v, f"tiers.{name}")) for name, v in tiers.items())
    out["routes"] = tuple(_route(r, f"routes[{i}]") for i, r in enumerate(_tables(data, "routes")))
    out["budgets"] = tuple(_build(BudgetSpec, b, f"budgets[{i}]")
                           for i, b in enumerate(_tables(data, "budgets")))
    if "router" in data:
        out["router"] = _build(RouterSettings, data["router"], "router")
    return out


def parse_model(entry: dict, where: str) -> ModelSpec:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a table")
    entry = dict(entry)
    if "endpoint" in entry:
        if "endpoints" in entry:
            raise ValueError(f"{where}: give endpoint or endpoints, not both")
        entry["endpoints"] = [entry.pop("endpoint")]
    name = entry.get("name")
    return _build(ModelSpec, entry, f"models.{name}" if isinstance(name, str) and name else where)


def _route(entry, where: str) -> RouteSpec:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a table")
    entry = dict(entry)
    name = entry.get("name")
    where = f"routes.{name}" if isinstance(name, str) and name else where
    rules = entry.pop("rules", [])
    if not isinstance(rules, list):
        raise ValueError(f"{where}.rules: must be a list of tables")
    built = []
    for i, rule in enumerate(rules):
        if isinstance(rule, dict) and isinstance(rule.get("metadata"), dict):
            rule = {**rule, "metadata": [[k, str(v)] for k, v in rule["metadata"].items()]}
        built.append(_build(Rule, rule, f"{where}.rules[{i}]"))
    return _build(RouteSpec, entry, where, rules=tuple(built))


def _tables(data: dict, key: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key}: must be an array of tables ([[{key}]])")
    return value


def _strings(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: must be a list of strings")
    return tuple(value)


def _build(cls, table, where: str, **extra):
    """cls(**table), each value checked against the field's declared type."""
    if not isinstance(table, dict):
        raise ValueError(f"{where}: must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)} - set(extra)
    unknown = set(table) - known
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(known))}")
    values = {key: _check(value, hints[key], f"{where}.{key}") for key, value in table.items()}
    try:
        return cls(**values, **extra)
    except TypeError as exc:  # a required key is missing
        raise ValueError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}" if _KEYED.match(str(exc)) else f"{where}: {exc}") \
            from None


def _check(value, hint, where: str):
    """`value` as `hint` (str, int, float, bool, tuple[str, ...], tuple of pairs, or X | None)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    hint = next(o for o in options if o is not type(None))
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    else:  # tuples: of strings, or of [key, value] pairs
        item = typing.get_args(hint)[0]
        if item is str:
            return _strings(value, where)
        ok = isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value)
        value = tuple(tuple(p) for p in value) if ok else value
    if not ok:
        name = "a list of strings" if hint is tuple else getattr(hint, "__name__", str(hint))
        raise ValueError(f"{where}: must be {_ARTICLE.get(name, name)}, got {value!r}")
    return value


_KEYED = re.compile(r"[a-z_]+:")  # a message that starts by naming its key
_ARTICLE = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}
