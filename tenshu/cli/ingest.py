"""Put files, folders, web pages or your conversations into a memory collection.

  tenshu ingest ~/notes --collection notes          every readable file under ~/notes
  tenshu ingest report.pdf plan.docx -c work        a few files (made if it does not exist)
  tenshu ingest https://example.org/page -c web     a web page or file, fetched once
  tenshu ingest ~/notes -c notes --watch            again whenever something there changes
  tenshu ingest --conversations -c chats            your recorded conversations (opt-in)

Running it again only reads what changed: unchanged files are skipped by their hash, changed
ones replaced, and files gone from an ingested folder removed. A file that cannot be read (a
damaged PDF, a binary file, one over [memory] max_file_mb) is reported and skipped; the rest go
on. Chat requests use a collection when they name it (header x-tenshu-memory), or their key or
route does: see docs/memory.md.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from tenshu.cli.memory import open_memory, principal_for, print_summary

WATCH_INTERVAL = 2.0  # seconds between looks at a watched tree


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="files, folders, or http(s) URLs")
    parser.add_argument("--collection", "-c", required=True, help="the collection to fill")
    parser.add_argument("--user", help="whose collection (default: the owner)")
    parser.add_argument("--conversations", action="store_true",
                        help="ingest the user's recorded conversations")
    parser.add_argument("--watch", action="store_true",
                        help="keep watching the paths and ingest what changes (Ctrl-C stops)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def main(args) -> int:
    if not args.paths and not args.conversations:
        raise ValueError("name at least one PATH or URL, or --conversations")
    urls = [p for p in args.paths if p.startswith(("http://", "https://"))]
    paths = [Path(p) for p in args.paths if p not in urls]
    if args.watch and (urls or not paths):
        raise ValueError("--watch watches files and folders, not URLs or conversations")
    with open_memory() as memory:
        principal = principal_for(memory.store, args.user)
        failed = 0
        while True:
            summaries = asyncio.run(_ingest(memory, principal, args, paths, urls))
            for summary in summaries:
                if args.json:
                    print(json.dumps(summary.to_json(), ensure_ascii=False))
                else:
                    print_summary(summary)
                failed += len(summary.failed)
            if not args.watch:
                return 1 if failed and all(s.added + s.updated + s.unchanged == 0
                                           for s in summaries) else 0
            print(f"tenshu ingest: watching {', '.join(map(str, paths))} (Ctrl-C stops)",
                  file=sys.stderr)
            _wait_for_change(paths)


async def _ingest(memory, principal, args, paths, urls):
    out = []
    if paths:
        with _progress() as bar:
            out.append(await memory.ingest(principal, args.collection, paths,
                                           progress=bar.update, total=bar.reset))
    for url in urls:
        out.append(await memory.ingest_url(principal, args.collection, url))
    if args.conversations:
        out.append(await memory.ingest_conversations(principal, args.collection))
    return out


def _progress():
    from tqdm import tqdm

    return tqdm(unit="file", file=sys.stderr, disable=not sys.stderr.isatty(),
                desc="ingesting")


def _signature(paths: list[Path]) -> set[tuple[str, int, int]]:
    """What the trees look like (path, size, mtime): a change here is worth an ingest."""
    seen = set()
    for root in paths:
        for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
            try:
                st = path.stat()
            except OSError:
                continue
            seen.add((str(path), st.st_size, st.st_mtime_ns))
    return seen


def _wait_for_change(paths: list[Path]) -> None:
    before = _signature(paths)
    while _signature(paths) == before:
        time.sleep(WATCH_INTERVAL)
