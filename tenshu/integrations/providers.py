"""The OAuth 2 providers tenshu knows: Google, GitHub and Slack, each a small description, and
`custom` for any server whose endpoints come from tenshu.toml.

A description says where the endpoints are, which scopes are asked for by default, and how the
provider departs from RFC 6749 in its token response; `token_response` converts a response to
the RFC's JSON shape, so nothing after it knows whose server answered. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl


@dataclass(frozen=True)
class Provider:
    name: str
    authorize_url: str
    token_url: str
    revoke_url: str = ""  # RFC 7009 revocation ("": none)
    scopes: tuple[str, ...] = ()  # asked for when the integration names none
    pkce: bool = True  # sends an S256 code challenge (RFC 7636)
    token_auth: str = "client_secret_basic"  # how a client with a secret authenticates
    scope_param: str = "scope"  # the authorization request's parameter for the scopes
    scope_separator: str = " "
    authorize_params: tuple[tuple[str, str], ...] = ()  # added to the authorization request
    revoke: tuple[str, ...] = ("refresh_token", "access_token")  # revoked in this order
    revoke_auth: str = ""  # client authentication at the revocation endpoint ("": token_auth)
    manage_url: str = ""  # where a person sees and removes the grants they gave
    ok_envelope: bool = False  # answers {"ok": ..., "authed_user": {...}} (Slack's Web API)


GOOGLE = Provider(
    name="google",
    authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
    token_url="https://oauth2.googleapis.com/token",
    revoke_url="https://oauth2.googleapis.com/revoke",
    scopes=("openid", "email"),
    token_auth="client_secret_post",
    # a refresh token comes only with offline access, and again only when consent is asked
    authorize_params=(("access_type", "offline"), ("prompt", "consent")),
    manage_url="https://myaccount.google.com/permissions",
)

GITHUB = Provider(
    name="github",
    authorize_url="https://github.com/login/oauth/authorize",
    token_url="https://github.com/login/oauth/access_token",
    scopes=("read:user",),
    token_auth="client_secret_post",
    # no RFC 7009 endpoint: a grant is removed in the person's settings
    manage_url="https://github.com/settings/applications",
)

SLACK = Provider(
    name="slack",
    authorize_url="https://slack.com/oauth/v2/authorize",
    token_url="https://slack.com/api/oauth.v2.access",
    revoke_url="https://slack.com/api/auth.revoke",
    scopes=("users:read",),
    # a person's own token: user scopes (a loopback redirect may not ask for bot scopes)
    scope_param="user_scope",
    scope_separator=",",
    revoke=("access_token",),  # auth.revoke takes the token it revokes, with no client auth
    revoke_auth="none",
    manage_url="https://slack.com/apps/manage",
    ok_envelope=True,
)

BUILT_IN = {p.name: p for p in (GOOGLE, GITHUB, SLACK)}


def provider_for(spec) -> Provider:
    """The provider of a config.integrations.IntegrationSpec: a built-in one, or a custom one
    made of the spec's endpoints (RFC-conformant: PKCE, basic client auth, RFC 7009)."""
    if spec.provider in BUILT_IN:
        return BUILT_IN[spec.provider]
    return Provider(name="custom", authorize_url=spec.authorize_url, token_url=spec.token_url,
                    revoke_url=spec.revoke_url)


def token_response(provider: Provider, status: int, content_type: str, body: bytes) -> dict:
    """A token endpoint's answer as RFC 6749 §5 JSON: {"access_token", "token_type": "Bearer",
    "refresh_token"?, "expires_in"?, "scope"?} or {"error", "error_description"?}.

    GitHub answers form-encoded unless asked for JSON; Slack answers 200 with {"ok": false,
    "error"} on failure, and puts a person's token under "authed_user"."""
    if "application/x-www-form-urlencoded" in content_type or "text/plain" in content_type:
        data: object = dict(parse_qsl(body.decode("utf-8", "replace")))
    else:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            data = None
    if not isinstance(data, dict):
        return {"error": "invalid_response",
                "error_description": f"the token endpoint answered HTTP {status} with no token"}
    if provider.ok_envelope:
        if not data.get("ok"):
            return {"error": str(data.get("error") or "invalid_response")}
        if "access_token" not in data and isinstance(data.get("authed_user"), dict):
            data = data["authed_user"]
    if "error" in data:
        return {k: str(data[k]) for k in ("error", "error_description") if data.get(k)}
    token = {k: data[k] for k in ("access_token", "refresh_token", "scope") if data.get(k)}
    token["token_type"] = "Bearer"  # Slack says "user" or "bot"; both are bearer tokens
    if data.get("expires_in") not in (None, ""):
        token["expires_in"] = int(data["expires_in"])
    return token


def scopes_of(scope: str) -> tuple[str, ...]:
    """A granted "scope" as a tuple: RFC 6749 separates with spaces, GitHub and Slack with
    commas."""
    return tuple(s for s in re.split(r"[\s,]+", scope) if s)
