"""The adapter registry: immutable versions of each named adapter, and which one is in service.

    $TENSHU_HOME/adapters/NAME/vN/         a version, as training wrote it (never written over):
                                           adapter/ (PEFT), manifest.json, loss.png
    $TENSHU_HOME/adapters/NAME/alias.json  {"serving": "v3", "history": ["v1", "v3"], "last": 4}:
                                           the moving alias, the versions it pointed at before,
                                           and the highest version removed (never numbered again)

`promote` points the alias at a version (the gate does it when a candidate wins; a person can);
`rollback` points it back at the one before; `remove` deletes a version that is not in service.
The alias file is replaced whole (write, then rename), so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_VERSION = re.compile(r"v[1-9][0-9]*")


@dataclass(frozen=True, slots=True)
class Version:
    name: str
    version: str
    path: Path  # the version's folder
    manifest: dict  # what training (and the gate) wrote; {} if missing
    serving: bool

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    def to_json(self) -> dict:
        metrics = self.manifest.get("metrics", {})
        return {"object": "adapter.version", "name": self.name, "version": self.version,
                "serving": self.serving, "method": self.manifest.get("method"),
                "base": self.manifest.get("base"), "data": self.manifest.get("data"),
                "loss": metrics.get("loss"), "verdict": self.manifest.get("verdict")}


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))

    def versions(self, name: str) -> list[Version]:
        """The versions of `name`, oldest first."""
        folder = self._folder(name)
        serving = self.serving(name)
        found = [p for p in folder.glob("v*") if p.is_dir() and _VERSION.fullmatch(p.name)] \
            if folder.is_dir() else []
        return [Version(name, p.name, p, _manifest(p), p.name == serving)
                for p in sorted(found, key=lambda p: int(p.name[1:]))]

    def next_version(self, name: str) -> Path:
        """The folder the next version of `name` is written into."""
        taken = [int(v.version[1:]) for v in self.versions(name)]
        last = max([*taken, self._alias(name).get("last", 0)], default=0)
        return self._folder(name) / f"v{last + 1}"  # a removed version's number is not reused

    def serving(self, name: str) -> str | None:
        return self._alias(name).get("serving")

    def get(self, name: str, version: str | None = None) -> Version:
        """A version (the one in service when `version` is None); ValueError when missing."""
        version = version or self.serving(name)
        for found in self.versions(name):
            if found.version == version:
                return found
        if version is None:
            raise ValueError(f"adapter {name!r} has no version in service")
        raise ValueError(f"adapter {name!r} has no version {version!r}")

    def promote(self, name: str, version: str | None = None) -> Version:
        """Put a version (default: the newest) in service."""
        if version is None:
            versions = self.versions(name)
            if not versions:
                raise ValueError(f"no adapter named {name!r}")
            version = versions[-1].version
        found = self.get(name, version)
        config = found.adapter / "adapter_config.json"
        if not config.exists() or not (found.adapter / "adapter_model.safetensors").exists():
            raise ValueError(f"{name} {version} has no PEFT adapter in {found.adapter}")
        alias = self._alias(name)
        history = [v for v in alias.get("history", []) if v != version] + [version]
        self._write_alias(name, {**alias, "serving": version, "history": history})
        return self.get(name, version)

    def rollback(self, name: str) -> str | None:
        """Put the version served before the current one back in service; which one (None: no
        version is in service any more)."""
        alias = self._alias(name)
        history = list(alias.get("history", []))
        if not history:
            raise ValueError(f"adapter {name!r} has no version in service to roll back")
        history.pop()
        existing = {v.version for v in self.versions(name)}
        history = [v for v in history if v in existing]
        self._write_alias(name, {**alias, "serving": history[-1] if history else None,
                                 "history": history})
        return history[-1] if history else None

    def remove(self, name: str, version: str) -> None:
        """Delete a version; the one in service cannot be (roll back or promote another first)."""
        found = self.get(name, version)
        if found.serving:
            raise ValueError(f"{name} {version} is in service: promote another version or roll "
                             "back first")
        shutil.rmtree(found.path)
        alias = self._alias(name)
        self._write_alias(name, {
            **alias, "history": [v for v in alias.get("history", []) if v != version],
            "last": max(alias.get("last", 0), int(version[1:]))})

    def folder(self, name: str) -> Path:
        """The folder of an adapter's versions (its name checked: it cannot leave the root)."""
        return self._folder(name)

    def _folder(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"an adapter's name is 1-64 letters, digits, '.', '_' or '-', "
                             f"starting with a letter or digit, not {str(name)[:70]!r}")
        return self.root / name

    def _alias(self, name: str) -> dict:
        path = self._folder(name) / "alias.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def _write_alias(self, name: str, alias: dict) -> None:
        path = self._folder(name) / "alias.json"
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(alias, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)


def _manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
