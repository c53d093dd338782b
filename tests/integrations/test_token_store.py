"""Where tokens are kept: the OS keychain through keyring (here an in-process keyring backend,
registered the way keyring documents for any backend), else encrypted files."""

from __future__ import annotations

import stat

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from keyring.errors import KeyringLocked, PasswordDeleteError

from tenshu.core.errors import IntegrationError, ReconnectRequiredError
from tenshu.integrations import (
    FileTokenStore,
    KeyringTokenStore,
    Token,
    connect,
    open_token_store,
)
from tests.integrations.conftest import USER

TOKEN = Token("at-secret-access", "rt-secret-refresh", expires_at=2e9, scopes=("read",),
              obtained_at=1.9e9)


class MemoryKeyring(KeyringBackend):
    """A keychain that lives in this process: a real keyring backend, for the tests."""

    priority = 1

    def __init__(self):
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.items.get((service, username))

    def set_password(self, service, username, password):
        self.items[(service, username)] = password

    def delete_password(self, service, username):
        if self.items.pop((service, username), None) is None:
            raise PasswordDeleteError(username)


@pytest.fixture
def use_keyring():
    """keyring.set_keyring(backend) for one test, then the backend there was before."""
    before = keyring.get_keyring()
    yield keyring.set_keyring
    keyring.set_keyring(before)


def test_files_are_encrypted_and_private(tmp_path):
    store = FileTokenStore(tmp_path / "private")
    store.put(USER, "work", TOKEN)

    assert store.get(USER, "work") == TOKEN
    sealed = tmp_path / "private" / "integrations" / "1.work.token"
    assert b"secret" not in sealed.read_bytes()
    for path, mode in ((tmp_path / "private", 0o700), (sealed.parent, 0o700), (sealed, 0o600),
                       (tmp_path / "private" / "integrations.key", 0o600)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert [p.name for p in sealed.parent.iterdir()] == ["1.work.token"]  # no leftovers
    assert store.delete(USER, "work") and not store.delete(USER, "work")
    assert store.get(USER, "work") is None


def test_a_changed_file_or_key_is_refused(tmp_path):
    store = FileTokenStore(tmp_path / "private")
    store.put(USER, "work", TOKEN)
    sealed = tmp_path / "private" / "integrations" / "1.work.token"
    sealed.write_bytes(sealed.read_bytes()[:-8] + b"AAAAAAAA")

    with pytest.raises(ReconnectRequiredError, match="cannot be read.*connect again"):
        store.get(USER, "work")
    store.put(USER, "work", TOKEN)
    (tmp_path / "private" / "integrations.key").unlink()  # a new key is made: the old file is
    with pytest.raises(ReconnectRequiredError):           # unreadable, not silently wrong
        store.get(USER, "work")


def test_a_name_cannot_lead_out_of_the_folder(tmp_path):
    with pytest.raises(ValueError, match="letters, digits"):
        FileTokenStore(tmp_path).put(USER, "../x", TOKEN)


def test_without_a_usable_keyring_the_files_are_used(tmp_path, use_keyring):
    use_keyring(fail.Keyring())
    store = open_token_store(tmp_path)
    assert isinstance(store, FileTokenStore) and "no usable OS keychain" in store.where


async def test_with_a_keyring_the_token_goes_to_the_keychain(tmp_path, use_keyring, integration,
                                                             browser):
    backend = MemoryKeyring()
    use_keyring(backend)
    store = open_token_store(tmp_path)
    assert isinstance(store, KeyringTokenStore) and "MemoryKeyring" in store.where

    token = await connect(integration, store, USER, open_url=browser.open, timeout=10)

    assert list(backend.items) == [(f"tenshu {tmp_path}", "1.work")]
    assert store.get(USER, "work") == token
    assert not (tmp_path / "private").exists()
    assert store.delete(USER, "work") and backend.items == {}
    assert not store.delete(USER, "work")


def test_a_token_shows_no_secret():
    assert "secret" not in repr(TOKEN) and "secret" not in str(TOKEN)


def test_a_locked_keychain_is_said_plainly(tmp_path, use_keyring):
    class Locked(MemoryKeyring):
        def get_password(self, service, username):
            raise KeyringLocked("the login keychain is locked")

    use_keyring(Locked())
    with pytest.raises(IntegrationError, match="the OS keychain .*Locked.* refused: the login "
                                               "keychain is locked"):
        open_token_store(tmp_path).get(USER, "work")
