"""A write-ahead journal: records appended to a file before they wait in memory for a batch.

The audit writer keeps records in memory and commits them in batches (store/audit.py); a process
killed in between (kill -9, the OOM killer) would lose the records of requests it had already
answered. Each record is first appended here, one JSON line written straight to the operating
system (no buffering in this process, no fsync: what was written survives the process, not a
power cut). Before a flush takes the queue, `rotate` sets the lines written so far aside in a
file of their own, which the flush deletes once its batches are committed; a flush that fails
leaves that file behind. At start, every file left by an earlier process is read back
(`leftovers`), and what it holds that the database does not is written then.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from pathlib import Path

from tenshu.config import private_file

log = logging.getLogger(__name__)


class Journal:
    """The active file at `path`; rotated files beside it as `path.1`, `path.2`, ..."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.failed = 0  # lines that could not be written (a full disk): logged once
        self._fd: int | None = None
        self._lines = 0  # in the active file
        self._numbers = itertools.count(1)

    def leftovers(self) -> list[Path]:
        """Files a process left behind (it was killed, or a flush failed), oldest first."""
        rotated = sorted(self.path.parent.glob(self.path.name + ".*"),
                         key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
        active = [self.path] if self.path.exists() else []
        return [*rotated, *active]

    @staticmethod
    def read(path: Path) -> list[dict]:
        """The records in one file. A line cut short by a kill is skipped."""
        records = []
        with path.open("rb") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records

    def open(self) -> None:
        """Start a fresh active file (leftovers must have been read back and removed)."""
        private_file(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_TRUNC)
        self._lines = 0

    def append(self, *records: dict) -> None:
        """Append records, a line each, in one write (system calls are not free)."""
        if self._fd is None:
            return
        data = b"".join(json.dumps(r, separators=(",", ":"), default=_iso).encode() + b"\n"
                        for r in records)
        try:
            os.write(self._fd, data)
        except OSError as exc:
            self.failed += len(records)
            if self.failed == len(records):
                log.error("the journal %s cannot be written (%s): records of answered "
                          "requests may be lost if the process is killed", self.path, exc)
            return
        self._lines += len(records)

    def rotate(self) -> Path | None:
        """Set the active file's lines aside for a flush; None when there are none."""
        if self._fd is None or not self._lines:
            return None
        os.close(self._fd)
        while True:
            aside = self.path.with_name(f"{self.path.name}.{next(self._numbers)}")
            if not aside.exists():
                break
        os.replace(self.path, aside)
        self.open()
        return aside

    def close(self) -> None:
        """Close the active file, and remove it when nothing in it is waiting (a record that
        could not be written stays for the next start)."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        if not self._lines:
            self.path.unlink(missing_ok=True)


def _iso(value) -> str:
    """Datetimes as ISO 8601 (the record's time); anything else as its text."""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
