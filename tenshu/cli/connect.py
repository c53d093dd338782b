"""Point a coding tool at tenshu by writing that tool's own settings (as `ollama launch` does).

  tenshu connect claude-code           ~/.claude/settings.json "env": Claude Code talks to tenshu
                                       (base URL, key, its opus/sonnet/haiku models), and
                                       ~/.claude.json: tenshu's MCP server, in every project
  tenshu connect claude-code --sonnet local-coder --haiku tenshu-tiny
  tenshu connect codex [--default]     ~/.codex/config.toml: a "tenshu" model provider and MCP
                                       server; --default also makes tenshu Codex's own default
  tenshu connect cursor                ~/.cursor/mcp.json: tenshu's MCP server, and how to set
                                       the chat model's base URL in Cursor's settings
  tenshu connect opencode [--default]  ~/.config/opencode/opencode.json: a "tenshu" provider
                                       and MCP server
  tenshu connect env                   shell exports for OpenAI, Anthropic and Ollama clients,
                                       for eval "$(tenshu connect env)"; writes nothing
  tenshu connect codex --dry-run       the change as a diff (the key masked); writes nothing
  tenshu connect codex --undo          put back what connect changed

The server is --url (default: this machine's tenshu, at the port tenshu.toml gives). The key is
--key, else TENSHU_API_KEY, else the one an earlier connect wrote for the same URL, else a new key
named after the tool is made in the local store (as `tenshu keys create` does), and connect says
so. The MCP server at /mcp always needs a key, even on loopback. Models default to --model, whose
default is tenshu.toml's first route, else its first model.

Only user-level files are written, never a project's, since they hold the key: each is written
whole to a temporary file and renamed into place, readable by you alone (0600). Before a file is
first changed, its original is kept beside it (NAME.tenshu-backup), and $TENSHU_HOME/connect/
TOOL.json notes which files connect made and which keys it set. --undo puts each file back byte
for byte, or deletes one connect made; a file the tool has rewritten since (Claude Code keeps its
state in ~/.claude.json) gets only tenshu's keys reverted. Connecting again changes nothing.

Codex reads the provider's key from `experimental_bearer_token`, in the file, rather than from
an `env_key` variable, which its desktop app and IDE extension would not see; its MCP key goes in
`http_headers` (Codex refuses an inline `bearer_token`). CODEX_HOME, CLAUDE_CONFIG_DIR and
XDG_CONFIG_HOME are followed as the tools follow them.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

from tenshu.config import (
    api_key_from_env,
    client_dir_from_env,
    load_server_settings,
    private_dir,
    tenshu_home,
)
from tenshu.config.routing import is_loopback_url

TOOLS = ("claude-code", "codex", "cursor", "opencode", "env")
NAME = "tenshu"  # the entry's name in each tool's providers and MCP servers
BACKUP = ".tenshu-backup"
_NEW_KEY = "tsk-(new-key)-made-when-connect-runs"  # in a dry run's diff, shown as tsk-(new-key)…
KeyPath = tuple[str, ...]

# Where each tool's first settings file holds the key connect wrote, and the text before it.
_KEY_AT = {
    "claude-code": (("env", "ANTHROPIC_AUTH_TOKEN"), ""),
    "codex": (("model_providers", NAME, "experimental_bearer_token"), ""),
    "cursor": (("mcpServers", NAME, "headers", "Authorization"), "Bearer "),
    "opencode": (("provider", NAME, "options", "apiKey"), ""),
}


def add_arguments(parser) -> None:
    parser.add_argument("tool", choices=TOOLS, help="the tool to connect")
    parser.add_argument("--url", help="the tenshu server (default: this machine's, "
                                      "http://127.0.0.1:7311 unless tenshu.toml says otherwise)")
    parser.add_argument("--key", help="the API key the tool sends (default: see above)")
    parser.add_argument("--model", help="the model the tool uses (default: tenshu.toml's first "
                                        "route, else its first model)")
    for alias in ("opus", "sonnet", "haiku"):
        parser.add_argument(f"--{alias}", metavar="MODEL",
                            help=f"claude-code: the model Claude Code's {alias} means "
                                 "(default: --model)")
    parser.add_argument("--default", action="store_true",
                        help="codex, opencode: make tenshu's model the tool's default")
    parser.add_argument("--dry-run", action="store_true",
                        help="show what would change, as a diff; write nothing")
    parser.add_argument("--undo", action="store_true",
                        help="put back the files connect changed; delete those it made")


@dataclass(frozen=True)
class Change:
    """One file's new content (None: delete it), and the note printed once it is written."""

    path: Path
    old: bytes | None
    new: bytes | None
    note: str
    restore: Path | None = None  # undo: rename this backup into place instead of writing


def main(args) -> int:
    if args.tool == "env":
        return _print_env(args)
    if args.default and args.tool not in ("codex", "opencode"):
        raise ValueError("--default is for codex and opencode (connecting claude-code already "
                         "makes tenshu its default; cursor's model is set in its own settings)")
    manifest_file = tenshu_home() / "connect" / f"{args.tool}.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.exists() else None
    if args.undo:
        return _undo(args, manifest, manifest_file)
    url = _url(args.url)
    paths = _paths(args.tool)
    docs = [_load(path)[1] for path in paths]  # a malformed file stops everything here
    key, make_key = _key(args, url, manifest, docs[0])
    model = args.model or _default_model()
    manifest = manifest or {"files": {}}
    # planned with a stand-in key first: a key is made only once the files are known to be good
    changes = _plan(args, url, key or _NEW_KEY, model, paths, manifest)
    if not changes:
        print(f"{args.tool} is already connected to {url}; nothing changed")
        return 0
    if args.dry_run:
        _print_diffs([change for change, _ in changes], key or _NEW_KEY)
        print(f"(dry run: nothing written{'; a key would be made for it' if make_key else ''})")
        return 0
    key_name = first = None
    if make_key:
        key_name, key, first = _create_key(args.tool)
        changes = _plan(args, url, key, model, paths, manifest)
    manifest = {"url": url, "key_name": key_name or manifest.get("key_name"),
                "files": {**manifest["files"], **{str(c.path): e for c, e in changes}}}
    # the manifest first: should a write below fail, --undo still knows what it touched
    _write(manifest_file, json.dumps(manifest, indent=2).encode(), private=True)
    for change, _ in changes:
        backup = _backup_path(change.path)
        if change.old is not None and not backup.exists():
            shutil.copy2(change.path, backup)  # the original, before tenshu: --undo's source
        _write(change.path, change.new)
        kept = f" (original kept in {backup.name})" if change.old is not None else ""
        print(f"  {change.note} {change.path}{kept}")
    print(f"{args.tool} now uses tenshu at {url}")
    if key_name:
        print(f"  made the API key {key_name!r} for it (`tenshu keys revoke {key_name}` "
              "revokes it)")
        if first:
            print("  it is the server's first key: from now on every request needs a key")
    _print_next_steps(args, url, model)
    return 0


def _plan(args, url: str, key: str, model: str, paths: list[Path],
          manifest: dict) -> list[tuple[Change, dict]]:
    """Each file connect would change, and its manifest entry: whether connect made it, the
    keys it set there (over every connect), and a hash of what it wrote."""
    planned = []
    for path, assignments in zip(paths, _assignments(args, url, key, model), strict=True):
        raw, doc = _load(path)
        try:
            if not _apply(doc, assignments):
                continue
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        new = _dump(doc, raw, path)
        entry = manifest["files"].get(str(path)) or {"created": raw is None, "keys": []}
        keys = entry["keys"] + [list(k) for k, _ in assignments if list(k) not in entry["keys"]]
        planned.append((Change(path, raw, new, "made" if raw is None else "changed"),
                        {**entry, "keys": keys, "sha256": _sha(new)}))
    return planned


# -- what each tool reads ---------------------------------------------------------------------


def _paths(tool: str) -> list[Path]:
    home = Path.home()
    if tool == "claude-code":
        folder = _env_dir("CLAUDE_CONFIG_DIR")
        paths = [(folder or home / ".claude") / "settings.json", (folder or home) / ".claude.json"]
    elif tool == "codex":
        paths = [(_env_dir("CODEX_HOME") or home / ".codex") / "config.toml"]
    elif tool == "cursor":
        paths = [home / ".cursor" / "mcp.json"]
    else:
        xdg = client_dir_from_env("XDG_CONFIG_HOME")
        config = xdg if xdg and xdg.is_absolute() else home / ".config"  # as the XDG spec says
        paths = [config / "opencode" / "opencode.json"]
    # a settings file linked from a dotfiles repository is written through its link
    return [p.resolve() if p.is_symlink() else p for p in paths]


def _env_dir(name: str) -> Path | None:
    folder = client_dir_from_env(name)
    if folder is not None and not folder.is_absolute():
        raise ValueError(f"{name}={folder} is relative: give an absolute path, so that the key "
                         "cannot land in the current project's folder")
    return folder


def _assignments(args, url: str, key: str, model: str) -> list[tuple[tuple[KeyPath, object], ...]]:
    """Per file of _paths(tool): each key path connect sets and its value, whole."""
    bearer = {"Authorization": f"Bearer {key}"}
    mcp = f"{url}/mcp"
    if args.tool == "claude-code":
        haiku = args.haiku or model
        env = {
            "ANTHROPIC_BASE_URL": url,
            "ANTHROPIC_AUTH_TOKEN": key,
            "ANTHROPIC_API_KEY": "",  # emptied: a real Anthropic key in the shell would win
            "ANTHROPIC_DEFAULT_OPUS_MODEL": args.opus or model,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": args.sonnet or model,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": haiku,
            "ANTHROPIC_SMALL_FAST_MODEL": haiku,  # what older Claude Code calls the haiku model
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        return [tuple((("env", k), v) for k, v in env.items()),
                ((("mcpServers", NAME), {"type": "http", "url": mcp, "headers": bearer}),)]
    if args.tool == "codex":
        provider = {"name": NAME, "base_url": f"{url}/v1", "wire_api": "responses",
                    "experimental_bearer_token": key}
        chosen = ((("model_provider",), NAME), (("model",), model)) if args.default else ()
        return [((("model_providers", NAME), provider),
                 (("mcp_servers", NAME), {"url": mcp, "http_headers": bearer}), *chosen)]
    if args.tool == "cursor":
        return [((("mcpServers", NAME), {"url": mcp, "headers": bearer}),)]
    provider = {"npm": "@ai-sdk/openai-compatible", "name": NAME,
                "options": {"baseURL": f"{url}/v1", "apiKey": key}, "models": {model: {}}}
    chosen = ((("model",), f"{NAME}/{model}"),) if args.default else ()
    return [((("provider", NAME), provider),
             (("mcp", NAME), {"type": "remote", "url": mcp, "headers": bearer}), *chosen)]


def _print_next_steps(args, url: str, model: str) -> None:
    if args.tool == "codex" and not args.default:
        print(f"  use it with `codex -c model_provider={NAME} -m {model}`, or connect again "
              "with --default to make it Codex's default")
    elif args.tool == "opencode" and not args.default:
        print(f"  choose it with /models in opencode, or `opencode -m {NAME}/{model}`")
    elif args.tool == "cursor":
        print("  Cursor keeps its chat models' endpoint in its settings, not in a file; in "
              "Cursor Settings > Models:\n"
              f"    OpenAI API key: the key in {_paths('cursor')[0]}\n"
              f"    Override OpenAI Base URL: {url}/v1\n"
              f"    add the model {model}\n"
              "  Cursor calls that URL from its own servers, so it must be reachable from the "
              "internet (its MCP server is called from this machine)")

def _print_env(args) -> int:
    url = _url(args.url)
    key = args.key or api_key_from_env()
    exports = {"OPENAI_BASE_URL": f"{url}/v1", "OPENAI_API_KEY": key,
               "ANTHROPIC_BASE_URL": url, "ANTHROPIC_AUTH_TOKEN": key, "OLLAMA_HOST": url}
    for name, value in exports.items():
        if value:
            print(f"export {name}={shlex.quote(value)}")
    if not key:
        print("tenshu connect: no key given (--key or TENSHU_API_KEY), so none is exported; a "
              "server with keys needs one (`tenshu keys create --name shell`)", file=sys.stderr)
    return 0


# -- the server, the key, the model -----------------------------------------------------------


def _url(given: str | None) -> str:
    if given is None:
        settings = load_server_settings()
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"
    url = given.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--url {given!r}: give the server's address, e.g. http://127.0.0.1:7311")
    if url.endswith("/v1"):
        raise ValueError(f"--url {given!r}: give the server's root, without /v1 (each tool's "
                         "path is added for it)")
    return url


def _key(args, url: str, manifest: dict | None, doc: MutableMapping) -> tuple[str | None, bool]:
    """The key to write, and whether one must be made (None until it is)."""
    if key := args.key or api_key_from_env():
        return key, False
    path, before = _KEY_AT[args.tool]
    if manifest and manifest.get("url") == url:  # the key an earlier connect wrote, kept
        value = _get(doc, path)
        if isinstance(value, str) and value.startswith(before) and value[len(before):]:
            return value[len(before):], False
    if not is_loopback_url(url):
        raise ValueError(f"{url} is another machine's server: give one of its keys with --key "
                         "(`tenshu keys create` there makes one)")
    return None, True


def _create_key(tool: str) -> tuple[str, str, bool]:
    """A new key in the local store, named after the tool (tool-2, ... if that name is taken):
    its name, the key, and whether it is the store's first active key."""
    from tenshu.store import open_store

    with open_store() as store:
        taken = {r.name for r in store.keys.list() if r.active}
        name = next(n for n in (tool, *(f"{tool}-{i}" for i in range(2, 10_000)))
                    if n not in taken)
        record, key = store.keys.create(name)
    return record.name, key, not taken


def _default_model() -> str:
    settings = load_server_settings()
    return settings.routes[0].name if settings.routes else settings.served_models()[0].name


# -- the files: read, change, write -----------------------------------------------------------


def _load(path: Path, like: Path | None = None) -> tuple[bytes | None, MutableMapping]:
    """A settings file's bytes (None if missing) and its parsed content, read as `like` is (a
    backup as its file); a malformed file is an error naming it and the line, before anything
    is written."""
    like = like or path
    if not path.exists():
        return None, _empty(like)
    raw = path.read_bytes()
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc}); nothing was written") from None
    if like.suffix == ".toml":
        import tomlkit

        try:
            return raw, tomlkit.parse(text)
        except tomlkit.exceptions.ParseError as exc:
            raise ValueError(f"{path}, line {exc.line}: not valid TOML ({exc}); fix it, "
                             "nothing was written") from None
    if not text.strip():
        return raw, {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg}); fix it, "
                         "nothing was written") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: holds a JSON {type(doc).__name__}, not an object; "
                         "nothing was written")
    return raw, doc


def _empty(path: Path) -> MutableMapping:
    if path.suffix == ".toml":
        import tomlkit

        return tomlkit.document()
    return {}


def _apply(doc: MutableMapping, assignments) -> bool:
    """Set each key path to its value, making the objects (tables) above it; True if anything
    changed. A value already equal is left alone, so its file keeps its exact bytes."""
    changed = False
    for keys, value in assignments:
        parent = _parent(doc, keys, create=True)
        if _plain(parent.get(keys[-1])) != value:
            parent[keys[-1]] = _toml_item(value) if _is_toml(doc) else value
            changed = True
    return changed


def _parent(doc: MutableMapping, keys: KeyPath, create: bool) -> MutableMapping | None:
    node = doc
    for depth, name in enumerate(keys[:-1]):
        if name not in node:
            if not create:
                return None
            node[name] = _new_table(doc)
        node = node[name]
        if not isinstance(node, MutableMapping):
            raise ValueError(f"{'.'.join(keys[:depth + 1])} is not an object or table in the "
                             "file; fix or remove it first, nothing was written")
    return node


def _get(doc: MutableMapping, keys: KeyPath):
    parent = _parent(doc, keys, create=False)
    return _plain(parent.get(keys[-1])) if parent is not None else None


def _plain(value):
    return value.unwrap() if hasattr(value, "unwrap") else value


def _is_toml(doc) -> bool:
    return hasattr(doc, "as_string")


def _new_table(doc):
    if not _is_toml(doc):
        return {}
    import tomlkit

    return tomlkit.table(is_super_table=True)  # [a.b] without an empty [a] above it


def _toml_item(value):
    """A whole entry as a [table] of its own, with any object inside it written inline."""
    import tomlkit

    if not isinstance(value, dict):
        return value
    table = tomlkit.table()
    for name, inner in value.items():
        if isinstance(inner, dict):
            inline = tomlkit.inline_table()
            inline.update(inner)
            inner = inline
        table[name] = inner
    return table


def _dump(doc: MutableMapping, raw: bytes | None, path: Path) -> bytes:
    if _is_toml(doc):
        return doc.as_string().encode()
    old = raw.decode() if raw else ""
    found = re.search(r"^[{\[][ \t]*\r?\n([ \t]+)\S", old)
    indent = found.group(1) if found else None if old.strip() and "\n" not in old.strip() else 2
    text = json.dumps(doc, indent=indent, ensure_ascii=False)
    return (text + ("\n" if not old or old.endswith("\n") else "")).encode()


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write the whole file to a temporary one beside it, then rename it into place, so a
    reader never sees half a file; owner-only (0600) since it holds a key."""
    if private:
        private_dir(path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP)


def _sha(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


# -- undo ---------------------------------------------------------------------------------------


def _undo(args, manifest: dict | None, manifest_file: Path) -> int:
    if not manifest:
        print(f"{args.tool} was not connected by tenshu (no {manifest_file}); nothing to undo")
        return 0
    changes = [c for c in (_undo_change(Path(p), e) for p, e in manifest["files"].items()) if c]
    if args.dry_run:
        _print_diffs(changes, None)
        print("(dry run: nothing written)")
        return 0
    for change in changes:
        if change.restore is not None:
            os.replace(change.restore, change.path)
        elif change.new is None:
            change.path.unlink(missing_ok=True)
        else:
            _write(change.path, change.new)
        _backup_path(change.path).unlink(missing_ok=True)
        print(f"  {change.note} {change.path}")
    manifest_file.unlink()
    print(f"{args.tool} no longer uses tenshu")
    if name := manifest.get("key_name"):
        print(f"  the key {name!r} connect made is still active: `tenshu keys revoke {name}` "
              "revokes it")
    return 0


def _undo_change(path: Path, entry: dict) -> Change | None:
    backup = _backup_path(path)
    original = backup.read_bytes() if backup.exists() else None
    current = path.read_bytes() if path.exists() else None
    if current is None:
        return Change(path, None, original, "restored", backup) if original is not None else None
    if _sha(current) == entry.get("sha256"):  # as connect left it: back to the original bytes
        if entry["created"]:
            return Change(path, current, None, "removed (connect made it)")
        if original is not None:
            return Change(path, current, original, "restored", backup)
    # changed since (the tool keeps its own state here): revert only the keys connect set
    _, doc = _load(path)
    before = _load(backup, like=path)[1] if original is not None else _empty(path)
    for keys in map(tuple, entry["keys"]):
        _revert(doc, before, keys)
    if entry["created"] and not doc:
        return Change(path, current, None, "removed (connect made it)")
    return Change(path, current, _dump(doc, current, path), "reverted tenshu's entries in")


def _revert(doc: MutableMapping, before: MutableMapping, keys: KeyPath) -> None:
    """Give `keys` the value it had in `before`; if it had none, remove it, then each object
    above it that is left empty and was not there before."""
    if _has(before, keys):
        value = _plain(_parent(before, keys, create=False)[keys[-1]])
        _parent(doc, keys, create=True)[keys[-1]] = _toml_item(value) if _is_toml(doc) else value
        return
    for depth in range(len(keys), 0, -1):
        path = keys[:depth]
        if not _has(doc, path):
            continue
        parent = _parent(doc, path, create=False)
        if depth < len(keys) and (parent[path[-1]] or _has(before, path)):
            return
        del parent[path[-1]]


def _has(doc: MutableMapping, keys: KeyPath) -> bool:
    parent = _parent(doc, keys, create=False)
    return parent is not None and keys[-1] in parent


# -- dry run --------------------------------------------------------------------------------------

_SECRET = re.compile(r"key|token|secret|authorization|password", re.IGNORECASE)
_STRING_SETTING = re.compile(r'(?P<name>"?[\w.$-]+"?)(?P<sep>\s*[:=]\s*)"(?P<value>[^"]+)"')


def _print_diffs(changes: list[Change], key: str | None) -> None:
    for change in changes:
        old = (change.old or b"").decode().splitlines(keepends=True)
        new = (change.new or b"").decode().splitlines(keepends=True)
        lines = difflib.unified_diff(old, new, f"{change.path} (now)",
                                     f"{change.path} (after)")
        print(_mask("".join(line if line.endswith("\n") else line + "\n" for line in lines),
                    key), end="")


def _mask(text: str, key: str | None) -> str:
    """The diff with tenshu's key cut to its public prefix, and any other secret-looking
    setting's value hidden, so a dry run can be pasted into an issue."""
    if key:
        text = text.replace(key, key[:12 if key.startswith("tsk-") else 4] + "…")

    def hide(found: re.Match) -> str:
        if not _SECRET.search(found["name"]) or found["value"].endswith("…"):
            return found[0]
        return f'{found["name"]}{found["sep"]}"****"'

    return _STRING_SETTING.sub(hide, text)

