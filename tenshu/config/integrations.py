"""[integrations.NAME] in tenshu.toml: the services a person connects tenshu to with OAuth 2.

    [integrations.gmail]
    provider = "google"                        # google, github, slack, or custom
    client_id = "1234-abc.apps.googleusercontent.com"
    client_secret_env = "GOOGLE_CLIENT_SECRET" # the variable that holds the secret, never the
                                               #   secret itself; leave out for a public client
    scopes = ["openid", "email", "https://www.googleapis.com/auth/gmail.readonly"]

    [integrations.work]                        # any OAuth 2 server, its endpoints given here
    provider = "custom"
    client_id = "tenshu"
    authorize_url = "https://auth.example.com/authorize"
    token_url = "https://auth.example.com/token"
    revoke_url = "https://auth.example.com/revoke"   # optional: RFC 7009 revocation

    [integrations.ghe]                         # any provider: where its API is, when it is not
    provider = "github"                        #   the public one (GitHub Enterprise Server)
    client_id = "Iv1.0123456789abcdef"
    api_url = "https://github.example.com/api/v3"

Validated here, once, each error naming its key; tenshu/integrations takes these frozen settings
as they are. The secret is read from its variable when it is used (`client_secret`), so that
`tenshu integrations list` works without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

PROVIDERS = ("google", "github", "slack", "custom")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL_KEYS = ("authorize_url", "token_url", "revoke_url")


@dataclass(frozen=True)
class IntegrationSpec:
    """One integration: a client of `provider` registered by the person (`client_id`), asking
    for `scopes` (None: the provider's defaults)."""

    name: str
    provider: str
    client_id: str
    client_secret_env: str = ""
    scopes: tuple[str, ...] | None = None
    authorize_url: str = ""  # custom only, as are the two below
    token_url: str = ""
    revoke_url: str = ""
    api_url: str = ""  # the service's API for its agent tools ("": the provider's own)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"{self.name!r}: an integration's name is letters, digits, - and _")
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider: {self.provider!r} is not one of {', '.join(PROVIDERS)}")
        if not self.client_id.strip():
            raise ValueError("client_id: the client id the provider gave your app")
        if self.client_secret_env and not _ENV.match(self.client_secret_env):
            raise ValueError(f"client_secret_env: {self.client_secret_env!r} is not the name "
                             "of an environment variable (put the secret in the variable)")
        for scope in self.scopes or ():
            if not scope or any(c.isspace() for c in scope) or "," in scope:
                raise ValueError(f"scopes: {scope!r} is not one scope (one per list item)")
        if self.api_url:
            _check_url(self.api_url, "api_url")
        if self.provider != "custom":
            for key in _URL_KEYS:
                if getattr(self, key):
                    raise ValueError(f"{key}: only a custom provider takes it; "
                                     f"{self.provider}'s endpoints are built in")
            return
        for key, what in (("authorize_url", "authorization"), ("token_url", "token")):
            if not getattr(self, key):
                raise ValueError(f"{key}: a custom provider needs its {what} endpoint")
        for key in _URL_KEYS:
            if getattr(self, key):
                _check_url(getattr(self, key), key)

    @property
    def client_secret(self) -> str:
        """The secret in the variable client_secret_env names; "" for a public client. A named
        variable that is not set is an error that says so."""
        from tenshu.config import credential

        if not self.client_secret_env:
            return ""
        secret = credential(self.client_secret_env)
        if not secret:
            raise ValueError(f"integrations.{self.name}.client_secret_env: the variable "
                             f"{self.client_secret_env} is not set; set it to the client secret")
        return secret


@dataclass(frozen=True)
class IntegrationsSettings:
    integrations: tuple[IntegrationSpec, ...] = ()

    def named(self, name: str) -> IntegrationSpec:
        for spec in self.integrations:
            if spec.name == name:
                return spec
        configured = ", ".join(s.name for s in self.integrations) or "none"
        raise ValueError(f"no integration named {name!r} in tenshu.toml ([integrations.{name}]);"
                         f" configured: {configured}")


def parse_integrations(data: dict) -> IntegrationsSettings:
    """[integrations.*] of a read tenshu.toml. Any problem is a ValueError naming the key."""
    from tenshu.config.routing import _build

    tables = data.get("integrations", {})
    if not isinstance(tables, dict):
        raise ValueError("integrations: must be tables, one per integration "
                         "([integrations.NAME])")
    specs = []
    for name, table in tables.items():
        where = f"integrations.{name}"
        if isinstance(table, dict) and "client_secret" in table:
            raise ValueError(f"{where}.client_secret: keep the secret out of tenshu.toml: put it "
                             "in an environment variable and name it with client_secret_env")
        specs.append(_build(IntegrationSpec, table, where, name=name))
    return IntegrationsSettings(tuple(specs))


def load_integrations(file: Path | None = None) -> IntegrationsSettings:
    """[integrations.*] of tenshu.toml (none when there is no file), for the CLI and the
    server alike."""
    from tenshu.config import _read_toml, config_path

    file = file or config_path()
    if not file.exists():
        return IntegrationsSettings()
    try:
        return parse_integrations(_read_toml(file))
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}") from None


def _check_url(url: str, key: str) -> None:
    """https, or http to a loopback address (a server on this machine, as in tests)."""
    from tenshu.config.routing import is_loopback_url

    parts = urlsplit(url)
    if parts.hostname and (parts.scheme == "https"
                           or parts.scheme == "http" and is_loopback_url(url)):
        return
    raise ValueError(f"{key}: {url!r} must be an https URL (http only to a loopback address)")
