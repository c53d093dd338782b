"""FolderSource: files that appear or change in a folder, reported once they have settled.

It watches the folder with watchfiles (inotify, FSEvents, ReadDirectoryChangesW) and keeps, in
its cursor, what it last reported of each file (`files`: relative path -> [mtime_ns, size]), so
that after a restart it reports what changed while it was down, once, and nothing it reported
before.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Iterable
from contextlib import aclosing
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

from tenshu.context.events import Cursor, Emit, Event
from tenshu.context.sources.base import ContextSourceError
from tenshu.core.errors import InvalidRequestError

log = logging.getLogger("tenshu.context")

# Names that editors, browsers and downloaders give files while they are still being written
# (and dotfiles, dot-folders such as .git among them). A pattern matches any part of the path.
TEMPORARY = (".*", "*~", "#*#", "*.swp", "*.swx", "*.part", "*.crdownload", "*.download", "*.tmp")

State = tuple[int, int]  # (mtime_ns, size): a file's version


class FolderSource:
    """Reports `file.created` and `file.modified` for the files under `path` whose names match
    one of `patterns` (shell patterns, case-insensitive, matched against the file's name, or its
    relative path when the pattern has a `/`), in subfolders too when `recursive`.

    Settling: a file is reported once its size and modification time have stayed the same for
    `debounce_ms`, so a file being copied or downloaded is reported once, whole, not half-written.
    (A writer that pauses longer than that is seen twice: `file.created`, then `file.modified`.)

    Names in `ignore` (TEMPORARY by default: dotfiles, `~` backups, .swp, .part, .crdownload...)
    are not reported, nor anything under a folder so named; a download that is renamed to its
    final name when complete is reported once, under that name.

    The first time it runs (a cursor that has never held `files`), the files already there are
    taken as seen and not reported: a new watcher on a full folder does not start a run per old
    file. Afterwards, every start compares the folder with the cursor: files new or changed while
    the server was down are reported once.

    Deletions are not reported (a trigger written for "a file arrived" would have nothing to
    read); a deleted file is forgotten, so a file put back is reported again as `file.created`.

    Payload: path (absolute), relative (with `/`), name, suffix, size (bytes), mtime (ISO UTC).
    Key: relative path, mtime_ns and size, so a file rewritten later is a new event."""

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        patterns: Iterable[str] = ("*",),
        recursive: bool = True,
        debounce_ms: int = 2000,
        ignore: Iterable[str] = TEMPORARY,
    ) -> None:
        if debounce_ms < 0:
            raise InvalidRequestError(f"folder source {name!r}: debounce_ms must be 0 or more",
                                      field="debounce_ms")
        self.name = name
        self.path = Path(path).expanduser()
        self.patterns = tuple(p.lower() for p in patterns)
        self.recursive = recursive
        self.debounce_ms = debounce_ms
        self.ignore = tuple(p.lower() for p in ignore)
        # How often a file that is settling is looked at again.
        self.tick_ms = max(10, min(debounce_ms // 4, 250))

    async def scan(self, emit: Emit, cursor: Cursor) -> int:
        """Compare the folder with the cursor and report, once each has settled, the files that
        are new or changed since; returns how many events. Waits for the files it found still
        being written (at least `debounce_ms` when there are any)."""
        tracker = _Tracker(self, cursor)
        await tracker.catch_up()
        count = 0
        while True:
            count += await tracker.report(emit)
            if not tracker.pending:
                return count
            await asyncio.sleep(self.tick_ms / 1000)

    async def run(self, emit: Emit, cursor: Cursor, stop: asyncio.Event) -> None:
        """Watch the folder until `stop` is set. The catch-up scan happens once the watcher is in
        place, so a file that arrives during the scan is not missed. Raises ContextSourceError
        when the folder does not exist or vanishes; the watcher is closed either way."""
        tracker = _Tracker(self, cursor)
        watcher = awatch(
            tracker.root, watch_filter=self._watched, recursive=self.recursive,
            debounce=self.tick_ms, step=min(50, self.tick_ms), rust_timeout=self.tick_ms,
            yield_on_timeout=True, stop_event=_StopView(stop), ignore_permission_denied=True,
        )
        caught_up = False
        try:
            async with aclosing(watcher) as batches:
                async for batch in batches:
                    tracker.check_root()
                    if not caught_up:  # the first yield comes once the watcher is in place
                        await tracker.catch_up()
                        caught_up = True
                    tracker.look(Path(raw) for _, raw in batch)
                    await tracker.report(emit)
        except OSError:  # the watcher's own error when the folder went before it was in place
            tracker.check_root()
            raise

    def root(self) -> Path:
        """The folder, resolved; ContextSourceError when it is missing or not a folder."""
        root = self.path.resolve()
        if not root.exists():
            raise ContextSourceError(
                f"folder source {self.name!r}: {self.path} does not exist (create it, or fix "
                "the path in the source's configuration)")
        if not root.is_dir():
            raise ContextSourceError(f"folder source {self.name!r}: {self.path} is not a folder")
        return root

    def wanted(self, rel: str) -> bool:
        """Whether a file at this relative path (with `/`) is one this source reports."""
        parts = rel.lower().split("/")
        if not self.recursive and len(parts) > 1:
            return False
        return not self._ignored(parts) and any(
            fnmatchcase(rel.lower() if "/" in p else parts[-1], p) for p in self.patterns)

    def files(self, root: Path, top: Path) -> dict[str, State]:
        """The wanted files under `top` (the root, or a folder in it), by relative path."""
        found: dict[str, State] = {}
        for folder, dirnames, filenames in os.walk(top):
            if self.recursive:
                dirnames[:] = [d for d in dirnames if not self._ignored([d.lower()])]
            else:
                dirnames[:] = []
            base = Path(folder).relative_to(root).as_posix()
            for filename in filenames:
                rel = filename if base == "." else f"{base}/{filename}"
                if self.wanted(rel) and (version := _version(root / rel)):
                    found[rel] = version
        return found

    def _ignored(self, parts: list[str]) -> bool:
        return any(fnmatchcase(part, p) for part in parts for p in self.ignore)

    def _watched(self, change: Change, raw: str) -> bool:
        # A first sieve on the name alone; `wanted` judges the whole path of what is still there.
        return not self._ignored([Path(raw).name.lower()])


class _Tracker:
    """One scan's or run's state: the files reported (the cursor's), the files settling."""

    def __init__(self, source: FolderSource, cursor: Cursor) -> None:
        self.source = source
        self.cursor = cursor
        self.root = source.root()
        self.state = cursor.get()
        self.reported: dict[str, list[int]] | None = (
            dict(self.state["files"]) if "files" in self.state else None)
        self.pending: dict[str, tuple[State | None, float]] = {}  # rel -> (version, since)
        self.dirty = False

    def check_root(self) -> None:
        if not self.root.is_dir():
            raise ContextSourceError(
                f"folder source {self.source.name!r}: {self.source.path} vanished; it is no "
                "longer watched (put it back and restart the source)")

    async def catch_up(self) -> None:
        """Set aside what changed since the cursor; on the very first run, take all as seen."""
        # In a thread: a large folder takes a while to walk, and the event loop serves requests.
        current = await asyncio.to_thread(self.source.files, self.root, self.root)
        if self.reported is None:
            self.reported = {rel: list(version) for rel, version in current.items()}
            self.dirty = True
            log.info("folder source %r: first run, %d file(s) already in %s taken as seen",
                     self.source.name, len(current), self.source.path)
            return
        for rel in list(self.reported):
            if rel not in current:
                self._forget(rel)
        for rel, version in current.items():
            if tuple(self.reported.get(rel, ())) != version:
                self.pending.setdefault(rel, (None, 0.0))

    def look(self, paths: Iterable[Path]) -> None:
        """Set aside the files behind paths the watcher says changed."""
        for path in paths:
            if path == self.root or not path.is_relative_to(self.root):
                continue
            rel = path.relative_to(self.root).as_posix()
            if path.is_dir():
                if self.source.recursive:
                    for found in self.source.files(self.root, path):
                        self.pending.setdefault(found, (None, 0.0))
            elif path.exists():
                if self.source.wanted(rel):
                    self.pending.setdefault(rel, (None, 0.0))
            else:
                self.pending.pop(rel, None)
                self._forget(rel)

    async def report(self, emit: Emit) -> int:
        """Emit the files that have settled, then save the cursor if anything changed."""
        now = time.monotonic()
        settled: list[tuple[str, State]] = []
        for rel, (seen, since) in list(self.pending.items()):
            version = _version(self.root / rel)
            if version is None:  # gone, or no longer a plain file
                del self.pending[rel]
                self._forget(rel)
            elif version != seen:
                self.pending[rel] = (version, now)
            elif (now - since) * 1000 >= self.source.debounce_ms:
                del self.pending[rel]
                settled.append((rel, version))
        assert self.reported is not None
        for rel, version in settled:
            kind = "file.modified" if rel in self.reported else "file.created"
            await emit(self._event(rel, version, kind))
            self.reported[rel] = list(version)
        if settled or self.dirty:
            await self.cursor.put({**self.state, "files": dict(self.reported)})
            self.dirty = False
        return len(settled)

    def _forget(self, rel: str) -> None:
        """Drop a file (or everything under a folder) from what was reported."""
        assert self.reported is not None
        for known in [k for k in self.reported if k == rel or k.startswith(rel + "/")]:
            del self.reported[known]
            self.dirty = True

    def _event(self, rel: str, version: State, kind: str) -> Event:
        mtime_ns, size = version
        path = self.root / rel
        payload: dict[str, Any] = {
            "path": str(path), "relative": rel, "name": path.name, "suffix": path.suffix,
            "size": size, "mtime": datetime.fromtimestamp(mtime_ns / 1e9, UTC).isoformat(),
        }
        return Event(self.source.name, f"{rel}:{mtime_ns}:{size}", kind, payload)


def _version(path: Path) -> State | None:
    """(mtime_ns, size) of a plain file (a link is followed); None for anything else."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size) if stat.S_ISREG(st.st_mode) else None


class _StopView:
    """`stop` as watchfiles reads it. watchfiles sets the event it is given when its task is
    cancelled; the caller's event may be shared by every source, so it is only read here."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.cancelled = False

    def is_set(self) -> bool:
        return self.cancelled or self.stop.is_set()

    def set(self) -> None:
        self.cancelled = True
