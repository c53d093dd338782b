"""A connected integration's token: what the token store keeps for one (user, integration).

Only what tenshu needs is kept (no id_token, no provider extras), which also keeps an entry
small enough for every keychain. Its repr shows no secret, so a token that reaches a log line
or a traceback by mistake does not leak.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from tenshu.integrations.providers import scopes_of


@dataclass(frozen=True)
class Token:
    access_token: str = field(repr=False)
    refresh_token: str = field(default="", repr=False)
    token_type: str = "Bearer"
    expires_at: float | None = None  # seconds since the epoch; None: the provider gave no expiry
    scopes: tuple[str, ...] = ()  # as granted (the provider's answer), else as asked
    obtained_at: float = 0.0

    @classmethod
    def from_response(cls, data: dict, *, asked: tuple[str, ...] = (), previous: Token | None = None,
                      now: float | None = None) -> Token:
        """From a token endpoint's answer (providers.token_response). A refresh answer without
        a new refresh token keeps the previous one (RFC 6749 §6), and without a scope keeps
        the previous scopes."""
        now = time.time() if now is None else now
        expires_in = data.get("expires_in")
        scopes = scopes_of(data.get("scope", "")) or (previous.scopes if previous else asked)
        return cls(
            access_token=data["access_token"],
            refresh_token=data.get("refresh_token") or (previous.refresh_token if previous
                                                        else ""),
            token_type=data.get("token_type", "Bearer"),
            expires_at=now + expires_in if expires_in is not None else None,
            scopes=tuple(scopes),
            obtained_at=now,
        )

    def expires_within(self, seconds: float, now: float | None = None) -> bool:
        """Whether it expires in `seconds` or less (never, without an expiry)."""
        if self.expires_at is None:
            return False
        return self.expires_at - (time.time() if now is None else now) <= seconds

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Token:
        data = json.loads(text)
        data["scopes"] = tuple(data.get("scopes", ()))
        return cls(**data)
