"""What `tenshu config check` reports about valid settings: a summary, and warnings for what
would fail later.

Settings that load are valid (loading is the validation: config/__init__.py); this module says
what they amount to (each model, where it runs, local or cloud; the tiers, the routes and their
rules, the budgets, what private requests may use) and what would go wrong once serving: a
checkpoint directory that is not there, an api_key_env that is not set. The CLI prints it
(cli/config.py); the admin page shows it for the running server (api/admin.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from tenshu.config import ServerSettings, credential


@dataclass(frozen=True)
class ModelLine:
    name: str
    locality: str  # local or cloud
    backend: str  # embedded, openai, openai-responses, anthropic, ollama
    upstream_model: str
    where: str  # the checkpoint directory, or the endpoints
    price: str  # "" when free


@dataclass(frozen=True)
class RouteLine:
    name: str
    also: tuple[str, ...]  # other names (globs) it answers
    tier: str  # the default tier
    rules: tuple[tuple[str, str], ...]  # (conditions, tier)
    sentinel: str  # "" without a simple tier
    fallback: str


@dataclass(frozen=True)
class ConfigCheck:
    server: str  # host:port
    store: str  # without its password
    models: tuple[ModelLine, ...]
    tiers: tuple[tuple[str, tuple[str, ...]], ...]
    routes: tuple[RouteLine, ...]
    budgets: tuple[str, ...]
    private: str  # what makes a request private
    warnings: tuple[str, ...]

    def to_json(self) -> dict:
        data = asdict(self)
        data["tiers"] = [{"name": name, "models": list(members)} for name, members in self.tiers]
        for route in data["routes"]:
            route["rules"] = [{"when": when, "tier": tier} for when, tier in route["rules"]]
        return {"object": "config.check", "valid": True, **data}


def check(settings: ServerSettings, *, store: str | None = None) -> ConfigCheck:
    """The summary and warnings of settings that loaded (so are valid). `store`: the database
    actually in use, where a server was given another than the settings name."""
    routing = settings.routing
    warnings = []
    models = []
    for m in routing.models:
        where = m.path if m.backend == "embedded" else ", ".join(m.endpoints)
        price = (f"${m.price_input:g}/${m.price_output:g} per M tokens"
                 if m.price_input or m.price_output else "")
        models.append(ModelLine(m.name, m.locality, m.backend, m.upstream_model, where, price))
        if m.backend == "embedded" and not Path(m.path).is_dir():
            warnings.append(f"models.{m.name}: {m.path} is not a directory")
        if m.api_key_env and credential(m.api_key_env) is None:
            warnings.append(f"models.{m.name}: the environment variable {m.api_key_env} is "
                            "not set (the upstream will refuse tenshu until it is)")
    routes = []
    for route in routing.routes:
        sentinel = (f"sentinel ({routing.router.sentinel or 'off'}): scores below "
                    f"{route.threshold:g} -> {route.simple_tier}" if route.simple_tier else "")
        routes.append(RouteLine(
            route.name, tuple(route.models), route.tier,
            tuple((rule.describe(), rule.tier) for rule in route.rules), sentinel,
            "every other tier" if route.fallback is None else ", ".join(route.fallback) or "none"))
    budgets = []
    for budget in routing.budgets:
        limits = [f"{budget.daily_tokens:,} tokens" if budget.daily_tokens is not None else "",
                  f"${budget.daily_usd:g}" if budget.daily_usd is not None else ""]
        budgets.append(f"{budget.describe()}: {' and '.join(x for x in limits if x)} a day")
    r = routing.router
    private = ("everything (local_only)" if r.local_only else
               "header, key, " + (", ".join(r.private_content) or "no content matchers"))
    return ConfigCheck(f"{settings.host}:{settings.port}", shown_store(store or settings.store),
                       tuple(models), tuple(routing.tiers), tuple(routes), tuple(budgets),
                       private, tuple(warnings))


def shown_store(url: str) -> str:
    """A store URL without its password (a SQLite database: its path)."""
    from sqlalchemy.engine import make_url

    if "://" not in url:
        return url
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database:
        return parsed.database
    return parsed.render_as_string(hide_password=True)
