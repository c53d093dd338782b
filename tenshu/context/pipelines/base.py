"""What every pipeline hands back to the context engine: a PipelineResult when it wrote its
files, a PipelineError when it could not.

A PipelineError's message names what failed and why (the URL and the server's answer, the file
and the missing column), since the engine records it as the delivery's error for its owner to
read. `final` marks one that no retry can mend (an event that has no link to draft from): the
engine then gives the delivery up at once rather than after max_attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PipelineResult:
    """title and body: the notification; files: what was written, in the owner's workspace."""

    title: str
    body: str
    files: tuple[Path, ...]


class PipelineError(Exception):
    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final
