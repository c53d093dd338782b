"""Where connected integrations' tokens are kept: one entry per (tenshu user, integration),
never in the state database.

    store = open_token_store(tenshu_home())
    store.put(user, "gmail", token); store.get(user, "gmail"); store.delete(user, "gmail")

The OS keychain, through `keyring` (macOS Keychain, Windows Credential Locker, the Secret
Service on a Linux desktop), when it has a usable backend. Where it has none (keyring's fail
or null backend: a headless server), files in $TENSHU_HOME/private/integrations/, each
encrypted with Fernet (AES-128-CBC and HMAC-SHA256) under a key kept in
$TENSHU_HOME/private/integrations.key; the folder is 0700 and every file 0600.

What the file store protects against: another user of the machine (the permissions), a copy of
the tokens' folder without the key (a sync, a backup that leaves out the key, a folder attached
to a bug report), and a token file changed on disk (it is refused, not trusted). What it does
not: anyone or anything that can read your files as you (or as root) reads the key beside the
tokens; a backup of the whole home holds both. docs/integrations.md says so.
"""

from __future__ import annotations

import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from tenshu.core.errors import IntegrationError, ReconnectRequiredError
from tenshu.integrations.tokens import Token

_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class TokenStore(Protocol):
    where: str  # said to the person: where their tokens are

    def get(self, user: str, name: str) -> Token | None: ...

    def put(self, user: str, name: str, token: Token) -> None: ...

    def delete(self, user: str, name: str) -> bool: ...


def open_token_store(home: Path) -> TokenStore:
    """The keychain where keyring has a usable backend, else the encrypted files in
    home/private. keyring's own settings choose its backend (PYTHON_KEYRING_BACKEND, or
    keyringrc.cfg); `keyring.backends.null.Keyring` there forces the files."""
    import keyring

    backend = keyring.get_keyring()
    if usable(backend):
        return KeyringTokenStore(backend, service=f"tenshu {home}")
    return FileTokenStore(home / "private")


def usable(backend) -> bool:
    """Whether a keyring backend can keep secrets: not the fail or null one, nor a chain of
    none."""
    from keyring.backends import chainer, fail, null

    if isinstance(backend, fail.Keyring | null.Keyring):
        return False
    return not isinstance(backend, chainer.ChainerBackend) or bool(backend.backends)


def _entry(user: str, name: str) -> str:
    for part in (user, name):
        if not _PART.match(part):
            raise ValueError(f"{part!r}: a token store entry is named with letters, digits, "
                             "- and _")
    return f"{user}.{name}"


class KeyringTokenStore:
    """One keychain item per (user, integration): service "tenshu <home>", account
    "<user>.<name>", the token as JSON. A keychain that refuses (locked, or its service gone)
    is IntegrationError."""

    def __init__(self, backend, service: str):
        self._backend = backend
        self._service = service
        self.where = f"the OS keychain ({type(backend).__module__}.{type(backend).__name__})"

    def get(self, user: str, name: str) -> Token | None:
        with self._refusal():
            text = self._backend.get_password(self._service, _entry(user, name))
        return Token.from_json(text) if text else None

    def put(self, user: str, name: str, token: Token) -> None:
        with self._refusal():
            self._backend.set_password(self._service, _entry(user, name), token.to_json())

    def delete(self, user: str, name: str) -> bool:
        from keyring.errors import PasswordDeleteError

        try:
            with self._refusal():
                self._backend.delete_password(self._service, _entry(user, name))
        except PasswordDeleteError:
            return False
        return True

    @contextmanager
    def _refusal(self):
        from keyring.errors import KeyringError, PasswordDeleteError

        try:
            yield
        except PasswordDeleteError:
            raise
        except KeyringError as exc:
            raise IntegrationError(f"{self.where} refused: {exc or type(exc).__name__}") \
                from None


class FileTokenStore:
    """One Fernet-encrypted file per (user, integration) in `private`/integrations/, under the
    key in `private`/integrations.key (made on first use)."""

    def __init__(self, private: Path):
        self._private = private
        self._folder = private / "integrations"
        self.where = f"encrypted files in {self._folder} (no usable OS keychain)"

    def get(self, user: str, name: str) -> Token | None:
        from cryptography.fernet import InvalidToken

        path = self._folder / f"{_entry(user, name)}.token"
        try:
            sealed = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return Token.from_json(self._fernet().decrypt(sealed).decode())
        except InvalidToken:
            raise ReconnectRequiredError(
                f"the stored token of {name!r} cannot be read with the key in "
                f"{self._private / 'integrations.key'} (the file or the key was changed); "
                f"connect again: tenshu integrations connect {name}") from None

    def put(self, user: str, name: str, token: Token) -> None:
        self._write(self._folder / f"{_entry(user, name)}.token",
                    self._fernet().encrypt(token.to_json().encode()))

    def delete(self, user: str, name: str) -> bool:
        try:
            (self._folder / f"{_entry(user, name)}.token").unlink()
        except FileNotFoundError:
            return False
        return True

    def forget(self, user: str) -> int:
        """Delete every token of `user`, configured integration or not; how many there were."""
        _entry(user, "any")
        gone = 0
        for path in self._folder.glob(f"{user}.*.token"):
            path.unlink(missing_ok=True)
            gone += 1
        return gone

    def _fernet(self):
        from cryptography.fernet import Fernet

        from tenshu.config import private_dir

        private_dir(self._private)
        private_dir(self._folder)
        path = self._private / "integrations.key"
        if not path.exists():
            # written whole beside it, then linked into place: of two processes making the key
            # at once, one link wins and both read that key
            temporary = self._write(path, Fernet.generate_key(), replace=False)
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
        return Fernet(path.read_bytes())

    def _write(self, path: Path, data: bytes, *, replace: bool = True) -> Path:
        """`data` in a new 0600 file beside `path`, renamed over `path` (whole or not at all);
        with replace=False, left beside it, and its path returned."""
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            if replace:
                os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return temporary
