"""The OAuth 2 client steps, over authlib: the authorization request (with PKCE), the code
exchange, the refresh and the revocation. Each speaks to one integration's provider and returns
a Token, or raises a core error that says what the person can do.

    request = authorization_request(integration, "http://127.0.0.1:PORT/callback")
    token = await exchange(integration, request, code)
    token = await refresh(integration, token)
    revoked = await revoke(integration, token)

authlib 1.9 speaks httpx2 (the httpx fork the MCP SDK already brings); the token endpoint's
answer is converted by providers.token_response before authlib reads it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import httpx2

from tenshu.config.integrations import IntegrationSpec
from tenshu.core.errors import IntegrationError, ReconnectRequiredError
from tenshu.integrations.providers import Provider, provider_for, token_response
from tenshu.integrations.tokens import Token

TIMEOUT_S = 30.0
# the token endpoint's answers that mean the grant is gone (RFC 6749's, GitHub's, Slack's)
DEAD_GRANT = frozenset({"invalid_grant", "bad_refresh_token", "invalid_refresh_token",
                        "token_revoked", "token_expired"})


@dataclass(frozen=True)
class Integration:
    """One configured integration, ready to use: its provider, its client and its scopes."""

    name: str
    provider: Provider
    client_id: str
    scopes: tuple[str, ...]
    spec: IntegrationSpec = field(repr=False)

    @classmethod
    def from_spec(cls, spec: IntegrationSpec) -> Integration:
        provider = provider_for(spec)
        scopes = provider.scopes if spec.scopes is None else spec.scopes
        return cls(spec.name, provider, spec.client_id, tuple(scopes), spec)

    def client_secret(self) -> str:
        try:
            return self.spec.client_secret
        except ValueError as exc:
            raise IntegrationError(str(exc)) from None

    def reconnect(self, why: str, *, again: bool = True) -> ReconnectRequiredError:
        return ReconnectRequiredError(f"integration {self.name!r}: {why}; "
                                      f"connect{' again' if again else ''}: "
                                      f"tenshu integrations connect {self.name}")


@dataclass(frozen=True)
class AuthorizationRequest:
    """What the browser is sent to, and what must come back with the code."""

    url: str
    redirect_uri: str
    state: str = field(repr=False)
    code_verifier: str = field(repr=False)


def authorization_request(integration: Integration, redirect_uri: str) -> AuthorizationRequest:
    """The authorization URL (RFC 6749 §4.1.1) with a fresh state and, where the provider
    takes it, an S256 code challenge (RFC 7636)."""
    provider = integration.provider
    verifier = secrets.token_urlsafe(64)  # 86 characters of the RFC's unreserved set
    params = dict(provider.authorize_params)
    if integration.scopes:
        params[provider.scope_param] = provider.scope_separator.join(integration.scopes)
    from authlib.oauth2.client import OAuth2Client  # no HTTP here: only the URL is made

    client = OAuth2Client(None, client_id=integration.client_id, redirect_uri=redirect_uri,
                          code_challenge_method="S256")
    url, state = client.create_authorization_url(
        provider.authorize_url, state=secrets.token_urlsafe(32),
        code_verifier=verifier if provider.pkce else None, **params)
    return AuthorizationRequest(url, redirect_uri, state, verifier if provider.pkce else "")


async def exchange(integration: Integration, request: AuthorizationRequest, code: str) -> Token:
    """The code, with its verifier, for a token (RFC 6749 §4.1.3)."""
    extra = {"code_verifier": request.code_verifier} if request.code_verifier else {}
    async with _client(integration, redirect_uri=request.redirect_uri) as client:
        try:
            data = await _token_call(integration, "exchange the code for a token",
                                     client.fetch_token(integration.provider.token_url,
                                                        code=code, **extra,
                                                        grant_type="authorization_code"))
        except _Refused as refused:
            raise IntegrationError(f"integration {integration.name!r}: the provider refused "
                                   f"the authorization code ({refused.detail})") from None
    return Token.from_response(data, asked=integration.scopes)


async def refresh(integration: Integration, token: Token, now: float | None = None) -> Token:
    """A new access token for the refresh token (RFC 6749 §6), obtained at `now` (None: the
    time now). A grant the provider no longer honours is ReconnectRequiredError."""
    if not token.refresh_token:
        raise integration.reconnect("the access token has expired and the provider gave no "
                                    "refresh token")
    async with _client(integration) as client:
        try:
            data = await _token_call(integration, "refresh the token",
                                     client.refresh_token(integration.provider.token_url,
                                                          refresh_token=token.refresh_token))
        except _Refused as refused:
            if refused.error in DEAD_GRANT:
                raise integration.reconnect(f"the provider refused the refresh token "
                                            f"({refused.detail}): the grant was revoked or has "
                                            "expired") from None
            raise IntegrationError(f"integration {integration.name!r}: the provider refused "
                                   f"to refresh the token ({refused.detail})") from None
    return Token.from_response(data, previous=token, now=now)


async def revoke(integration: Integration, token: Token) -> bool:
    """Revoke the grant at the provider (RFC 7009): the refresh token, which ends the grant's
    access tokens too, then the access token. False where the provider has no revocation
    endpoint; IntegrationError where it refused."""
    provider = integration.provider
    if not provider.revoke_url:
        return False
    async with _client(integration) as client:
        for kind in provider.revoke:
            value = getattr(token, kind)
            if not value:
                continue
            try:
                response = await client.revoke_token(provider.revoke_url, token=value,
                                                     token_type_hint=kind)
            except httpx2.HTTPError as exc:
                raise IntegrationError(f"integration {integration.name!r}: the revocation "
                                       f"endpoint could not be reached ({exc})") from None
            if response.status_code != 200 or (provider.ok_envelope
                                               and not _ok(response)):
                raise IntegrationError(f"integration {integration.name!r}: the revocation "
                                       f"endpoint answered HTTP {response.status_code} "
                                       f"{response.text[:200]!r}")
    return True


class _Refused(Exception):
    def __init__(self, error: str, description: str):
        super().__init__(error)
        self.error = error
        self.detail = f"{error}: {description}" if description else error


def _client(integration: Integration, redirect_uri: str | None = None):
    from authlib.integrations.httpx_client import AsyncOAuth2Client

    provider = integration.provider
    secret = integration.client_secret()
    auth = provider.token_auth if secret else "none"
    client = AsyncOAuth2Client(
        client_id=integration.client_id, client_secret=secret or None,
        token_endpoint_auth_method=auth,
        revocation_endpoint_auth_method=provider.revoke_auth or auth,
        redirect_uri=redirect_uri, code_challenge_method="S256" if provider.pkce else None,
        timeout=TIMEOUT_S)

    def convert(response):
        data = token_response(provider, response.status_code,
                              response.headers.get("content-type", ""), response.content)
        status = response.status_code if response.status_code >= 500 else (
            400 if "error" in data else 200)
        return type(response)(status, json=data, request=response.request)

    client.register_compliance_hook("access_token_response", convert)
    client.register_compliance_hook("refresh_token_response", convert)
    return client


async def _token_call(integration: Integration, what: str, call) -> dict:
    """Await one token endpoint call; its OAuth error is _Refused, a transport failure or a
    5xx is IntegrationError."""
    from authlib.integrations.base_client import OAuthError

    try:
        return dict(await call)
    except OAuthError as exc:
        raise _Refused(exc.error or "error", exc.description or "") from None
    except httpx2.HTTPError as exc:  # no connection, a timeout, a 5xx
        raise IntegrationError(f"integration {integration.name!r}: could not {what}: the "
                               f"token endpoint failed ({type(exc).__name__}: {exc})") from None


def _ok(response) -> bool:
    try:
        return bool(response.json().get("ok"))
    except ValueError:
        return False
