"""The integrations package's public names are few and explicit."""

import tenshu.integrations


def test_public_names():
    assert sorted(tenshu.integrations.__all__) == sorted([
        "BUILT_IN", "Disconnected", "FileTokenStore", "Integration", "KeyringTokenStore",
        "Provider", "Token", "TokenSource", "TokenStore", "connect", "disconnect", "forget_user",
        "open_token_store",
    ])
    for name in tenshu.integrations.__all__:
        assert getattr(tenshu.integrations, name) is not None
    assert sorted(tenshu.integrations.BUILT_IN) == ["github", "google", "slack"]
