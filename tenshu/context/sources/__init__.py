"""Context sources: what notices events in the world. A folder's new files (folder.py), a feed's
new entries (feed.py), an HTTP JSON endpoint's new items or changed answer (http_json.py); the
polled ones share their conditional GET and loop (polling.py). Each runs as
`run(emit, cursor, stop)` (base.py); `from_spec` builds one from its configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tenshu.context.sources.base import ContextSourceError, Source
from tenshu.context.sources.feed import FeedSource
from tenshu.context.sources.folder import FolderSource
from tenshu.context.sources.http_json import HttpJsonSource

if TYPE_CHECKING:
    from tenshu.config.context import SourceSpec

__all__ = ["ContextSourceError", "FeedSource", "FolderSource", "HttpJsonSource", "Source",
           "from_spec"]


def from_spec(spec: SourceSpec) -> FolderSource | FeedSource | HttpJsonSource:
    """The source a [context.sources.NAME] table of type folder, feed or http describes."""
    headers = dict(spec.headers)
    if spec.type == "folder":
        return FolderSource(spec.name, spec.path, spec.patterns, spec.recursive)
    if spec.type == "feed":
        return FeedSource(spec.name, spec.url, spec.poll_seconds, spec.keywords, headers)
    if spec.type == "http":
        return HttpJsonSource(spec.name, spec.url, spec.poll_seconds, headers, spec.items or None,
                              spec.id_field)
    raise ValueError(f"context source {spec.name!r}: no source of type {spec.type!r} here")
