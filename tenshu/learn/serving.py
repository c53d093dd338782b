"""Adapters in service: LoRA adapters served as models, loaded and unloaded without a restart.

    the registry's adapters ──sync──▶ AdapterService ──▶ router.deployments[name] = LoRABackend
    POST /v1/load_lora_adapter ──────┘        │              (the base engine, with the adapter)
                                              └──▶ engine.add_lora / remove_lora

Each adapter is a model named as the adapter (vLLM's convention), listed with its `parent`,
chosen by that name in every protocol. Two sources:

- the registry (learn/registry.py): every adapter with a version in service is served under its
  name, on the embedded model it was trained on. `sync` brings the server in line with the
  registry — at start, after a nightly run, and whenever an alias file changes (`watch`: a
  promotion or rollback from the command line reaches the server within a few seconds);
- a folder named in `POST /v1/load_lora_adapter` (an admin's), left alone by `sync`; its
  version is shown as NAME@ and the start of its weights' sha256.

A new version is hot-loaded beside the old one (read and fused in a worker thread, so the step
loop does not wait), then swapped in: requests that started on the old version finish on it,
and the old one is given up when its last request ends. Unloading takes the name out of service
at once and returns when its last request has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from tenshu.backends.embedded import EmbeddedBackend
from tenshu.backends.lora import LoRABackend
from tenshu.config.routing import ModelSpec
from tenshu.core.errors import (
    ConflictError,
    InvalidRequestError,
    ModelLoadError,
    ModelLoadingError,
    NotFoundError,
)
from tenshu.engine import LoRARequest
from tenshu.engine.lora import LoRAError
from tenshu.learn.registry import _NAME, Registry
from tenshu.router.health import Deployment
from tenshu.router.router import Router

log = logging.getLogger("tenshu.adapters")

WATCH_SECONDS = 2.0


@dataclass
class Served:
    name: str
    base: str  # the embedded model it adapts
    backend: LoRABackend
    version: str | None  # the registry's version in service; None for a folder loaded by path

    def to_json(self) -> dict:
        return {"id": self.name, "object": "model", "parent": self.base,
                "root": self.backend.lora.lora_path, "version": self.version,
                "adapter": self.backend.label}


class AdapterService:
    def __init__(self, router: Router, registry: Registry | None, *, max_loras: int = 4,
                 watch_seconds: float = WATCH_SECONDS) -> None:
        self.router = router
        self.registry = registry
        self.max_loras = max_loras
        self.watch_seconds = watch_seconds
        self.served: dict[str, Served] = {}
        self._ids = itertools.count(1)  # lora_int_id: a new one for every version loaded
        self._lock = asyncio.Lock()  # one load, unload or sync at a time
        self._retiring: set[asyncio.Task] = set()
        self._watcher: asyncio.Task | None = None
        self._seen: dict[str, int] = {}  # alias file -> its mtime at the last sync
        self.started = False  # the first sync is done (start)

    # -- what is served -------------------------------------------------------------------------

    def bases(self) -> dict[str, EmbeddedBackend]:
        """The embedded models, which adapters can be loaded on."""
        return {name: group[0].backend for name, group in self.router.deployments.items()
                if isinstance(group[0].backend, EmbeddedBackend)}

    def list(self) -> list[Served]:
        return [self.served[name] for name in sorted(self.served)]

    # -- load and unload ------------------------------------------------------------------------

    async def load(self, name: str, path: str | Path | None = None, *, base: str | None = None,
                   replace: bool = False) -> Served:
        """Serve the adapter in `path` (None: the registry's version in service) as `name`.
        With `replace`, a name already served gets the new adapter (hot-swap); without, that
        is a 400, as in vLLM (a name that is a model's or a route's is a 409)."""
        async with self._lock:
            return await self._load(name, path, base, replace)

    async def _load(self, name, path, base, replace) -> Served:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidRequestError(
                "lora_name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
                f"digit, not {str(name)[:70]!r}", field="lora_name")
        current = self.served.get(name)
        if current is None and (name in self.router.deployments
                                or self.router.route_for(name) is not None):
            raise ConflictError(f"{name!r} is the name of a model or route this server has "
                                "already: give the adapter another name", field="lora_name")
        if current is not None and not replace:
            raise InvalidRequestError(f"the LoRA adapter {name!r} has already been loaded (load "
                                      "it with load_inplace: true to replace it)",
                                      field="lora_name")
        if current is None and len(self.served) >= self.max_loras:
            raise InvalidRequestError(
                f"{len(self.served)} adapters are served already, the limit (server.max_loras "
                f"{self.max_loras}): unload one first", field="lora_name")
        if current is not None and base is not None and base != current.base:
            raise InvalidRequestError(
                f"{name!r} is served on {current.base}: unload it before loading it on {base}",
                field="base_model_name")
        # the registry's and the folder's files are read off the event loop
        folder, version = await asyncio.to_thread(self._source, name, path)
        base_name = current.base if current is not None and base is None else \
            await asyncio.to_thread(self._base_for, base, folder)
        backend = self.bases()[base_name]
        lora = LoRARequest(name, next(self._ids), str(folder))
        try:
            digest = await backend.add_lora(lora)  # waits for the engine while it loads
        except LoRAError as exc:
            raise InvalidRequestError(f"{name}: {exc}", field="lora_path") from None
        # a registry version by its number; one loaded by path by its weights (no path shown)
        label = f"{name}@{version or digest[:12]}"
        if current is not None:
            old = current.backend.swap(lora, label)
            current.version = version
            self._retire(current.backend, old)
            log.info("%s: now serving %s (was %s)", name, label, old.lora_path)
            return current
        served = Served(name, base_name, LoRABackend(name, backend, lora, label), version)
        limit = self.router.deployments[base_name][0]
        spec = ModelSpec(name, path=str(folder))
        self.router.deployments[name] = [Deployment(
            name, spec, served.backend, limit=limit.limit, limit_source=limit.limit_source)]
        self.served[name] = served
        log.info("%s: serving %s on %s", name, label, base_name)
        return served

    async def unload(self, name: str) -> None:
        """Take `name` out of service now; return once its last request has finished."""
        async with self._lock:
            served = self.served.pop(name, None)
            if served is None:
                raise NotFoundError(f"the LoRA adapter {name!r} cannot be found (loaded: "
                                    f"{', '.join(self.served) or 'none'})")
            del self.router.deployments[name]
        await self._give_up(served.backend, served.backend.lora)
        log.info("%s: no longer served", name)

    def _source(self, name: str, path) -> tuple[Path, str | None, str]:
        """The folder to load, and the registry's version (None for a path)."""
        if path is not None and str(path).strip():
            folder = Path(path).expanduser()
            if not folder.is_dir():
                raise InvalidRequestError(f"lora_path: {path} is not a folder",
                                          field="lora_path")
            return folder.resolve(), None
        if self.registry is None:
            raise InvalidRequestError("lora_path is required: this server has no adapter "
                                      "registry", field="lora_path")
        try:
            version = self.registry.get(name)
        except ValueError as exc:
            raise NotFoundError(f"{exc}; give a lora_path, or promote a version "
                                f"(`tenshu adapters promote {name}`)") from None
        return version.adapter, version.version

    def _base_for(self, wanted: str | None, folder: Path) -> str:
        bases = self.bases()
        if wanted is not None:
            if wanted not in bases:
                raise InvalidRequestError(
                    f"base_model_name: {wanted!r} is not an embedded model here (adapters can "
                    f"be loaded on {', '.join(bases) or 'none'})", field="base_model_name")
            return wanted
        trained_on = _manifest_base(folder)
        for name, backend in bases.items():
            if trained_on and Path(backend.config.model).resolve() == Path(trained_on):
                return name
        if len(bases) == 1:
            return next(iter(bases))  # the engine checks the adapter's shapes against it
        raise InvalidRequestError(
            f"which model does the adapter adapt? name one in base_model_name "
            f"({', '.join(bases) or 'no embedded model is served'})", field="base_model_name")

    def _retire(self, backend: LoRABackend, old: LoRARequest) -> None:
        task = asyncio.create_task(self._give_up(backend, old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _give_up(self, backend: LoRABackend, lora: LoRARequest) -> None:
        await backend.drained(lora)
        # A request a client abandoned has left the backend, but the engine lets go of it at
        # its next step boundary: until then the adapter is still in use there.
        while True:
            try:
                backend.base.remove_lora(lora.lora_int_id)
                return
            except LoRAError:
                await asyncio.sleep(0.02)

    # -- the registry ---------------------------------------------------------------------------

    async def sync(self) -> list[str]:
        """Serve what the registry has in service: load new names, hot-swap changed versions,
        unload names whose alias no longer points anywhere. Returns what changed, in words.
        A version that cannot be loaded is logged and left out; the rest go on."""
        if self.registry is None:
            return []
        changes = []
        async with self._lock:
            self._seen = await asyncio.to_thread(self._aliases)
            wanted = await asyncio.to_thread(
                lambda: {name: self.registry.serving(name) for name in self.registry.names()})
            for name, version in wanted.items():
                current = self.served.get(name)
                if version is None or (current is not None and current.version == version):
                    continue
                if current is not None and current.version is None:
                    continue  # loaded by path, by an admin: theirs to change
                try:
                    await self._load(name, None, None, replace=current is not None)
                except (InvalidRequestError, NotFoundError, ModelLoadError,
                        ModelLoadingError) as exc:
                    log.warning("adapter %s %s is not served: %s", name, version, exc)
                    continue
                changes.append(f"{name}: {version} in service")
            gone = [s for s in self.served.values()
                    if s.version is not None and wanted.get(s.name) is None]
            for served in gone:
                del self.served[served.name]
                del self.router.deployments[served.name]
                self._retire(served.backend, served.backend.lora)
                changes.append(f"{served.name}: no version in service")
        return changes

    async def start(self) -> None:
        """Serve the registry's adapters, then watch it for promotions and rollbacks. In the
        background: adding an adapter waits for its base model to load, and the server answers
        meanwhile (`started` turns true once the first sync is done; /ready waits for it)."""
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._start_and_watch(),
                                                name="tenshu-adapter-watch")

    async def _start_and_watch(self) -> None:
        try:
            for change in await self.sync():
                log.info("%s", change)
        except Exception:
            log.exception("could not serve the registry's adapters")
        finally:
            self.started = True
        if self.registry is not None:
            await self._watch()

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for task in list(self._retiring):
            task.cancel()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.watch_seconds)
            try:
                if await asyncio.to_thread(self._aliases) != self._seen:
                    for change in await self.sync():
                        log.info("%s", change)
            except Exception:  # a bad alias file must not stop the watch
                log.exception("could not bring the adapters in line with the registry")

    def _aliases(self) -> dict[str, int]:
        """Each alias file's modification time (a promotion or rollback rewrites it)."""
        if self.registry is None or not self.registry.root.is_dir():
            return {}
        return {str(p): p.stat().st_mtime_ns for p in self.registry.root.glob("*/alias.json")}


def _manifest_base(adapter: Path) -> str | None:
    """The base model a registry version was trained on (its manifest beside the adapter)."""
    try:
        manifest = json.loads((adapter.parent / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest.get("base") if isinstance(manifest, dict) else None
