"""API keys: `Authorization: Bearer KEY` or `x-api-key: KEY`, checked the same way.

Both header forms go through one function, so no path can accept a key the other refuses. Keys
are required when the settings say so, or (automatically) as soon as one key exists. When both
headers are sent they must agree. Keys never appear in logs or error messages.

Where keys are not required, a valid key that is sent anyway still counts: the request is its
key's (in the audit log, and for a private key, kept on the machine); anything else that is
sent (a client's placeholder) is ignored.
"""

from __future__ import annotations

from fastapi import Request

from tenshu.core.errors import AuthenticationError
from tenshu.store import KeyRecord

OPEN_PATHS = frozenset({"/health", "/ready", "/", "/api/version"})


class Authenticator:
    def __init__(self, keys, required: bool | None):
        self.keys = keys  # a store.KeyStore, or None when there is no state database
        self.required = required

    def is_required(self, *, cached_only: bool = False) -> bool:
        if self.required is not None:
            return self.required
        return self.keys is not None and self.keys.any_active(cached_only=cached_only)

    def check(self, request: Request, *, cached_only: bool = False) -> KeyRecord | None:
        """The key's record, None for an anonymous request that is allowed; raises otherwise.
        With `cached_only`, raises store.CacheMiss where the answer needs the database."""
        if request.scope["path"] in OPEN_PATHS:
            return None
        if not self.is_required(cached_only=cached_only):
            return self._optional(request, cached_only)
        presented = _presented_keys(request)
        if not presented:
            raise AuthenticationError(
                "missing API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>` "
                "(create one with `tenshu keys create --name NAME`)")
        if len(set(presented)) > 1:
            raise AuthenticationError("Authorization and x-api-key carry different keys")
        record = (self.keys.verify(presented[0], cached_only=cached_only)
                  if self.keys is not None else None)
        if record is None:
            raise AuthenticationError("invalid API key (unknown or revoked)")
        return record

    def _optional(self, request: Request, cached_only: bool) -> KeyRecord | None:
        if self.keys is None or not self.keys.any_active(cached_only=cached_only):
            return None
        try:
            presented = set(_presented_keys(request))
        except AuthenticationError:
            return None
        if len(presented) != 1:
            return None
        return self.keys.verify(presented.pop(), cached_only=cached_only)


def _presented_keys(request: Request) -> list[str]:
    keys = []
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationError("the Authorization header must be `Bearer <key>`")
        keys.append(value.strip())
    if (x_key := request.headers.get("x-api-key")) is not None:
        keys.append(x_key.strip())
    return [k for k in keys if k]
