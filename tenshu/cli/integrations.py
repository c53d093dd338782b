"""Connect tenshu to your services with OAuth 2 (Google, GitHub, Slack, or any OAuth 2 server),
see what is connected, and revoke it.

  tenshu integrations list                each integration of tenshu.toml: connected or not, its
                                          scopes, when its token expires (never the token)
  tenshu integrations connect gmail       opens your browser at the provider's sign-in; once you
                                          consent, the browser comes back to tenshu on
                                          http://127.0.0.1:PORT/callback and the token is kept
  tenshu integrations connect gmail --no-browser
                                          prints the URL instead: open it in a browser on this
                                          machine (the answer comes back to 127.0.0.1)
  tenshu integrations revoke gmail        revokes the grant at the provider where it has a
                                          revocation endpoint, and deletes the token either way

--user NAME acts for another tenshu user (default: the owner). Integrations are configured in
tenshu.toml, [integrations.NAME] (docs/integrations.md). Tokens are kept in the OS keychain, or,
where there is none, encrypted in $TENSHU_HOME/private; never in the state database or a log.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import webbrowser

from tenshu.cli.table import print_table
from tenshu.config import tenshu_home
from tenshu.config.integrations import load_integrations
from tenshu.core.errors import NotFoundError, ReconnectRequiredError
from tenshu.integrations import Integration, connect, disconnect, open_token_store
from tenshu.integrations.flow import TIMEOUT_S
from tenshu.store import open_store


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="each integration: connected or not, scopes, "
                                              "expiry")
    connecting = actions.add_parser("connect", help="sign in at the provider and keep the token")
    connecting.add_argument("name", help="the integration ([integrations.NAME] in tenshu.toml)")
    connecting.add_argument("--no-browser", action="store_true",
                            help="print the URL instead of opening a browser")
    connecting.add_argument("--timeout", type=float, default=TIMEOUT_S, metavar="SECONDS",
                            help=f"how long to wait for the browser (default {TIMEOUT_S:g})")
    revoking = actions.add_parser("revoke", help="revoke the grant and delete the token")
    revoking.add_argument("name", help="the integration")
    for sub in (listing, connecting, revoking):
        sub.add_argument("--user", help="whose integrations (default: the owner)")


def main(args) -> int:
    settings = load_integrations()
    user = _user_id(args.user)
    store = open_token_store(tenshu_home())
    if args.action == "list":
        _list([Integration.from_spec(s) for s in settings.integrations], store, user)
        return 0
    integration = Integration.from_spec(settings.named(args.name))
    if args.action == "connect":
        token = asyncio.run(connect(integration, store, user, timeout=args.timeout,
                                    open_url=_opener(args.no_browser)))
        print(f"connected {integration.name} ({integration.provider.name}); scopes: "
              f"{' '.join(token.scopes) or '-'}; expires: {_expiry(token)}; "
              f"kept in {store.where}")
        return 0
    outcome = asyncio.run(disconnect(integration, store, user))
    print(_disconnected(integration, outcome))
    # 1: a grant that may still be alive at a provider that could have revoked it
    return 1 if outcome.removed and not outcome.revoked and integration.provider.revoke_url else 0


def _user_id(name: str | None) -> str:
    """The tenshu user's id, the key of their tokens (a name can be given to another user)."""
    with open_store() as store:
        user = store.users.get(name) if name else store.users.owner()
    if user is None:
        raise NotFoundError(f"no user named {name!r}")
    return str(user.id)


def _opener(no_browser: bool):
    def show(url: str) -> None:
        print(url, flush=True)
        print("tenshu integrations: open this URL in a browser on this machine; waiting for "
              "its answer...", file=sys.stderr, flush=True)

    def open_browser(url: str) -> None:
        print(f"tenshu integrations: opening your browser; if it does not open, visit:\n  {url}",
              file=sys.stderr, flush=True)
        # in a thread: a browser started by $BROWSER may hold webbrowser.open until it exits,
        # and the redirect must be answered meanwhile
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()

    return show if no_browser else open_browser


def _list(integrations: list[Integration], store, user: str) -> None:
    if not integrations:
        print("no integrations in tenshu.toml: add [integrations.NAME] (docs/integrations.md)")
        return
    rows = []
    for integration in integrations:
        try:
            token = store.get(user, integration.name)
        except ReconnectRequiredError:  # a token file that cannot be decrypted
            token, status = None, "unreadable: connect again"
        else:
            status = "connected" if token else "not connected"
        scopes = token.scopes if token else integration.scopes
        rows.append((integration.name, integration.provider.name, status,
                     " ".join(scopes) or "-", _expiry(token) if token else "-"))
    print_table(("NAME", "PROVIDER", "STATUS", "SCOPES", "EXPIRES"), rows)
    print(f"tokens are kept in {store.where}")


def _expiry(token) -> str:
    if token.expires_at is None:
        return "no expiry"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(token.expires_at))
    if token.expires_at > time.time():
        return when
    return f"{when} (expired; {'refreshed when used' if token.refresh_token else 'connect again'})"


def _disconnected(integration: Integration, outcome) -> str:
    name, provider = integration.name, integration.provider
    where = f"; remove the grant at {provider.manage_url}" if provider.manage_url else ""
    if not outcome.removed:
        return f"{name} was not connected: nothing to revoke"
    if outcome.revoked:
        return f"revoked {name} at {provider.name} and deleted its token"
    return f"deleted the token of {name} here; not revoked at {provider.name}: " \
           f"{outcome.problem}{where}"
