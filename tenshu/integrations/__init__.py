"""The integrations hub: a person connects tenshu to their services (Google, GitHub, Slack, or
any OAuth 2 server) and tenshu keeps the tokens fresh and safe.

    integration = Integration.from_spec(load_integrations().named("gmail"))
    store = open_token_store(tenshu_home())                 # the OS keychain, or encrypted files
    await connect(integration, store, user, open_url=webbrowser.open)   # PKCE, loopback redirect
    source = TokenSource([integration], store)
    response = await source.authorized_request(user, "gmail", "GET", url)
    await disconnect(integration, store, user)              # revoked at the provider, removed

providers.py describes the providers; oauth.py makes the OAuth 2 calls (authlib); flow.py
connects and disconnects; token_store.py keeps the tokens; token_source.py refreshes them.
"""

from tenshu.integrations.flow import Disconnected, connect, disconnect, forget_user
from tenshu.integrations.oauth import Integration
from tenshu.integrations.providers import BUILT_IN, Provider
from tenshu.integrations.token_source import TokenSource
from tenshu.integrations.token_store import (
    FileTokenStore,
    KeyringTokenStore,
    TokenStore,
    open_token_store,
)
from tenshu.integrations.tokens import Token

__all__ = [
    "BUILT_IN",
    "Disconnected",
    "FileTokenStore",
    "Integration",
    "KeyringTokenStore",
    "Provider",
    "Token",
    "TokenSource",
    "TokenStore",
    "connect",
    "disconnect",
    "forget_user",
    "open_token_store",
]
