"""A real OAuth 2 authorization server and a protected API on loopback, for the integrations'
tests: authlib's AuthorizationServer (the authorization code grant with PKCE required, the
refresh token grant with rotation, RFC 7009 revocation) on a small framework-free WSGI app,
served from threads.

    with AuthServer(expires_in=2) as server:
        server.authorize_url, server.token_url, server.revoke_url, server.api_url
        server.requests["refresh_token"]      # token requests of that grant, refused ones too
        server.kill_access_tokens()           # the API answers 401 to every token issued so far
        server.revoke_grants()                # ... and the token endpoint refuses their refresh

The authorization endpoint approves at once, as a person who clicked "Allow" (or refuses, with
`server.consent = False`). The API, GET /api/me, answers only a valid, unexpired bearer token.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from urllib.parse import parse_qsl, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from authlib.common.security import generate_token
from authlib.oauth2 import AuthorizationServer, OAuth2Error, ResourceProtector
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    ClientMixin,
    OAuth2Request,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge

USER = "ana@example.org"
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    scope: str = "read write"

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        allowed = self.scope.split()
        return " ".join(s for s in (scope or self.scope).split() if s in allowed)

    def check_redirect_uri(self, redirect_uri):
        parts = urlsplit(redirect_uri)  # RFC 8252 §7.3: a loopback redirect, on any port
        return parts.scheme == "http" and parts.hostname == "127.0.0.1" \
            and parts.path == "/callback"

    def check_client_secret(self, client_secret):
        return hmac.compare_digest(client_secret or "", self.client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return method != "none" if self.client_secret else method == "none"

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    code_challenge: str | None
    code_challenge_method: str | None

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope


@dataclass
class Issued(TokenMixin):
    client_id: str
    user: str
    scope: str
    access_token: str
    refresh_token: str | None
    issued_at: float
    expires_in: int
    access_revoked: bool = False
    refresh_revoked: bool = False

    def check_client(self, client):
        return client.client_id == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_in

    def is_expired(self):
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self):
        return self.access_revoked

    def get_user(self):
        return self.user


class WsgiRequest(OAuth2Request):
    def __init__(self, environ):
        query = environ.get("QUERY_STRING", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length).decode() if length else ""
        self._args, self._form = dict(parse_qsl(query)), dict(parse_qsl(body))
        headers = {"Authorization": environ["HTTP_AUTHORIZATION"]} \
            if environ.get("HTTP_AUTHORIZATION") else {}
        uri = f"http://{environ['HTTP_HOST']}{environ['PATH_INFO']}" + (f"?{query}" if query
                                                                         else "")
        super().__init__(environ["REQUEST_METHOD"], uri, headers=headers)
        self.payload = BasicOAuth2Payload({**self._args, **self._form})

    @property
    def args(self):
        return self._args

    @property
    def form(self):
        return self._form


class PkceRequired(CodeChallenge):
    """S256 only, and always: an authorization request without a challenge is refused."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        if not grant.request.payload.data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send a code_challenge")
        super().validate_code_challenge(grant, redirect_uri)


def serve_wsgi(app) -> tuple[WSGIServer, str]:
    """`app` served on loopback from threads, quietly; the server (to shut down) and its URL."""
    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    class Threading(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    http = make_server("127.0.0.1", 0, app, server_class=Threading, handler_class=Quiet)
    threading.Thread(target=http.serve_forever, args=(0.05,), daemon=True).start()
    return http, f"http://127.0.0.1:{http.server_port}"


class AuthServer(AuthorizationServer):
    def __init__(self, *, expires_in: int = 3600, client_id: str = "tenshu-test",
                 client_secret: str = "test-secret"):
        super().__init__()
        self.client = Client(client_id, client_secret)
        self.expires_in = expires_in
        self.consent = True
        self.token_delay = 0.0  # seconds each token request takes (to widen races)
        self.codes: dict[str, Code] = {}
        self.tokens: list[Issued] = []
        self.requests: Counter[str] = Counter()  # grant types at /token, "revoke", "api"
        self.revoked: list[str] = []  # the token_type_hint of each revocation
        self.challenges: list[str] = []  # the code_challenge_method of each code issued
        self._lock = threading.Lock()
        server = self

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

            def save_authorization_code(self, code, request):
                data = request.payload.data
                server.challenges.append(data.get("code_challenge_method"))
                server.codes[code] = Code(code, request.client.client_id,
                                          request.payload.redirect_uri, request.scope or "",
                                          request.user, data.get("code_challenge"),
                                          data.get("code_challenge_method"))

            def query_authorization_code(self, code, client):
                found = server.codes.get(code)
                return found if found and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code):
                server.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code):
                return authorization_code.user

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
            INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: a refresh token is honoured once

            def authenticate_refresh_token(self, refresh_token):
                return next((t for t in server.tokens if t.refresh_token == refresh_token
                             and not t.refresh_revoked), None)

            def authenticate_user(self, refresh_token):
                return refresh_token.user

            def revoke_old_credential(self, refresh_token):
                refresh_token.refresh_revoked = True

        class Revocation(RevocationEndpoint):
            CLIENT_AUTH_METHODS = AUTH_METHODS

            def query_token(self, token_string, token_type_hint):
                return next((t for t in server.tokens
                             if token_string in (t.access_token, t.refresh_token)), None)

            def revoke_token(self, token, request):
                server.revoked.append(request.form.get("token_type_hint", ""))
                token.access_revoked = True
                if request.form.get("token_type_hint") != "access_token":
                    token.refresh_revoked = True

        class Validator(BearerTokenValidator):
            def authenticate_token(self, token_string):
                return next((t for t in server.tokens if t.access_token == token_string), None)

        self.register_token_generator("default", BearerTokenGenerator(
            lambda **_: "at-" + generate_token(40), lambda **_: "rt-" + generate_token(40),
            lambda client, grant_type: self.expires_in))
        self.register_grant(CodeGrant, [PkceRequired(required=True)])
        self.register_grant(RefreshGrant)
        self.register_endpoint(Revocation)
        self.protector = ResourceProtector()
        self.protector.register_token_validator(Validator())

    # -- what the tests use ---------------------------------------------------------------

    def __enter__(self) -> AuthServer:
        self._http, self.base = serve_wsgi(self._app)
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()

    authorize_url = property(lambda self: f"{self.base}/authorize")
    token_url = property(lambda self: f"{self.base}/token")
    revoke_url = property(lambda self: f"{self.base}/revoke")
    api_url = property(lambda self: f"{self.base}/api/me")

    def kill_access_tokens(self) -> None:
        with self._lock:
            for token in self.tokens:
                token.access_revoked = True

    def revoke_grants(self) -> None:
        with self._lock:
            for token in self.tokens:
                token.access_revoked = token.refresh_revoked = True

    def secrets(self) -> list[str]:
        """Every access and refresh token issued."""
        return [s for t in self.tokens for s in (t.access_token, t.refresh_token) if s]

    def valid(self, access_token: str) -> bool:
        token = next((t for t in self.tokens if t.access_token == access_token), None)
        return bool(token and not token.is_expired() and not token.is_revoked())

    # -- authlib's framework hooks --------------------------------------------------------

    def query_client(self, client_id):
        return self.client if client_id == self.client.client_id else None

    def save_token(self, token, request):
        self.tokens.append(Issued(request.client.client_id, request.user, token.get("scope", ""),
                                  token["access_token"], token.get("refresh_token"),
                                  time.time(), token["expires_in"]))

    def create_oauth2_request(self, request):
        return request

    def handle_response(self, status, body, headers):
        payload = json.dumps(body) if isinstance(body, dict) else (body or "")
        return status, list(headers), payload.encode()

    def send_signal(self, name, *args, **kwargs):
        pass

    # -- the WSGI app ----------------------------------------------------------------------

    def _app(self, environ, start_response):
        request = WsgiRequest(environ)
        path = environ["PATH_INFO"]
        if path == "/token":
            self.requests[request.form.get("grant_type", "")] += 1
            time.sleep(self.token_delay)
        elif path in ("/revoke", "/api/me"):
            self.requests[path.rsplit("/", 1)[-1].replace("me", "api")] += 1
        with self._lock:
            status, headers, body = self._route(path, request)
        start_response(f"{status} {'OK' if status < 400 else 'Error'}", headers)
        return [body]

    def _route(self, path, request):
        if path == "/authorize":
            try:
                grant = self.get_consent_grant(request, end_user=USER)
            except OAuth2Error as error:
                return self.handle_response(*error())
            return self.create_authorization_response(
                request, grant_user=USER if self.consent else None, grant=grant)
        if path == "/token":
            return self.create_token_response(request)
        if path == "/revoke":
            return self.create_endpoint_response("revocation", request)
        if path == "/api/me":
            try:
                token = self.protector.validate_request(None, request)
            except OAuth2Error as error:
                return self.handle_response(*error())
            return self.handle_response(200, {"user": token.user, "scope": token.scope},
                                        [("Content-Type", "application/json")])
        return 404, [("Content-Type", "text/plain")], b"not found"
