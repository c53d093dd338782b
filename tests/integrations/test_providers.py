"""Each provider's token answers, converted to RFC 6749's shape."""

from __future__ import annotations

import json

from tenshu.config.integrations import IntegrationSpec
from tenshu.integrations.providers import (
    GITHUB,
    GOOGLE,
    SLACK,
    provider_for,
    scopes_of,
    token_response,
)
from tenshu.integrations.tokens import Token

JSON = "application/json; charset=utf-8"


def answer(provider, body, *, status=200, content_type=JSON):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return token_response(provider, status, content_type, raw)


def test_google_answers_as_the_rfc_says():
    assert answer(GOOGLE, {"access_token": "ya29.a", "expires_in": 3599, "token_type": "Bearer",
                           "scope": "openid email", "refresh_token": "1//r", "id_token": "e.y.j"}) \
        == {"access_token": "ya29.a", "refresh_token": "1//r", "scope": "openid email",
            "token_type": "Bearer", "expires_in": 3599}
    assert answer(GOOGLE, {"error": "invalid_grant", "error_description": "Token has been "
                           "expired or revoked."}, status=400) \
        == {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}


def test_github_may_answer_form_encoded():
    form = "application/x-www-form-urlencoded; charset=utf-8"
    assert answer(GITHUB, b"access_token=gho_a&scope=repo%2Cgist&token_type=bearer",
                  content_type=form) \
        == {"access_token": "gho_a", "scope": "repo,gist", "token_type": "Bearer"}
    assert answer(GITHUB, b"error=bad_verification_code&error_description=The+code+is+wrong",
                  content_type=form) \
        == {"error": "bad_verification_code", "error_description": "The code is wrong"}
    assert answer(GITHUB, {"access_token": "ghu_a", "expires_in": "28800",
                           "refresh_token": "ghr_r", "token_type": "bearer"})["expires_in"] == 28800


def test_slack_answers_ok_with_the_persons_token_nested():
    body = {"ok": True, "app_id": "A1", "team": {"id": "T1"},
            "authed_user": {"id": "U1", "scope": "users:read,chat:write", "token_type": "user",
                            "access_token": "xoxp-1", "refresh_token": "xoxe-1",
                            "expires_in": 43200}}
    assert answer(SLACK, body) == {"access_token": "xoxp-1", "refresh_token": "xoxe-1",
                                   "scope": "users:read,chat:write", "token_type": "Bearer",
                                   "expires_in": 43200}
    assert answer(SLACK, {"ok": False, "error": "invalid_refresh_token"}) \
        == {"error": "invalid_refresh_token"}


def test_an_answer_with_no_token_is_an_error():
    assert answer(GOOGLE, b"<html>502 Bad Gateway</html>", status=502,
                  content_type="text/html")["error"] == "invalid_response"


def test_granted_scopes_are_split_on_spaces_and_commas():
    assert scopes_of("repo,gist") == ("repo", "gist") == scopes_of("repo gist")
    token = Token.from_response({"access_token": "a", "scope": "repo,gist", "expires_in": 10},
                                now=100.0)
    assert (token.scopes, token.expires_at) == (("repo", "gist"), 110.0)
    refreshed = Token.from_response({"access_token": "b"}, previous=token, now=200.0)
    assert (refreshed.refresh_token, refreshed.scopes, refreshed.expires_at) == \
        (token.refresh_token, ("repo", "gist"), None)


def test_a_custom_provider_is_its_endpoints():
    spec = IntegrationSpec("work", "custom", "c", authorize_url="https://a.example/authorize",
                           token_url="https://a.example/token")
    custom = provider_for(spec)
    assert (custom.authorize_url, custom.token_url, custom.revoke_url, custom.pkce) == \
        ("https://a.example/authorize", "https://a.example/token", "", True)
    assert provider_for(IntegrationSpec("g", "github", "c")) is GITHUB
