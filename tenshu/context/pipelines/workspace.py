"""Where pipelines write: the owner's own workspace folder, never anywhere else.

    $TENSHU_HOME/workspaces/<user_id>/pipelines/reports/2026-12-06-sales.md
    $TENSHU_HOME/workspaces/<user_id>/pipelines/drafts/2026-12-06-why-sqlite-is-enough.md

The agents' workspaces are their siblings (workspaces/<user_id>/<agent>; agents/service.py),
so an agent named `pipelines` works in this very folder. A file's name is made from a title
only through `slug`, and every path is resolved and checked to stay inside the folder
(agents/builtins.py `inside`), so neither `..` nor a symlink leads out. Files are written whole
and then moved into place, so a reader never sees half a report. Disk I/O: not for the event
loop.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from tenshu.agents.builtins import inside
from tenshu.store.people import Principal

FOLDER = "pipelines"
MAX_SLUG = 60
_NOT_WORD = re.compile(r"[\W_]+")


def workspace(home: Path, principal: Principal) -> Path:
    """The owner's pipelines folder (not made here)."""
    return home / "workspaces" / str(principal.user_id) / FOLDER


def slug(title: str) -> str:
    """A file name's part from a title: words (any script) in lower case joined by '-';
    'untitled' when nothing is left. '../../etc/passwd' -> 'etc-passwd'."""
    words = _NOT_WORD.sub("-", title.lower()).strip("-")
    return words[:MAX_SLUG].rstrip("-") or "untitled"


def write(folder: Path, relative: str, data: bytes | str) -> Path:
    """`data` written to `relative` under `folder` (made with its parents); the path written.
    ValueError for a name that leaves the folder."""
    path = inside(folder, relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def free_name(folder: Path, stem: str, suffix: str) -> str:
    """`stem + suffix`, or `stem-2 + suffix` (3, ...) when that file is already there."""
    name, n = stem + suffix, 1
    while (folder / name).exists():
        n += 1
        name = f"{stem}-{n}{suffix}"
    return name
