"""Search and look after your memory collections.

  tenshu memory search "rotate the keys" -c notes        the best chunks, with where they are
  tenshu memory search "..." -c notes -c ana/team --k 5 --json
  tenshu memory list                                      your collections, and those shared
  tenshu memory list notes                                a collection's documents and status
  tenshu memory delete notes                              a collection, with all it holds
  tenshu memory delete notes --document 12                one document
  tenshu memory reindex notes [--embedder DIR]            embed again (a new embedder: built
                                                          beside the old index, then swapped in)
  tenshu memory review notes                              chunks answers keep being rated down for
  tenshu memory share notes ana [--stop]                  let ana read it (or no longer)
  tenshu memory cloud notes on|off                        may its chunks go to cloud models

--user NAME acts on that user's collections (default: the owner). Fill a collection with
`tenshu ingest`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

from tenshu.cli.table import print_table
from tenshu.config import load_memory_settings
from tenshu.store import Principal, open_store


def add_arguments(parser) -> None:
    parser.add_argument("--user", help="whose collections (default: the owner)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    search = actions.add_parser("search", help="hybrid search over collections")
    search.add_argument("query")
    search.add_argument("--collection", "-c", action="append", required=True,
                        help="a collection (repeatable); owner/name for one shared with you")
    search.add_argument("--k", type=int, default=10, help="how many hits (default 10)")
    search.add_argument("--source", help="only documents whose source matches this glob")
    search.add_argument("--json", action="store_true",
                        help="a JSON list of hits, best first")
    listing = actions.add_parser("list", help="collections, or one collection's documents")
    listing.add_argument("collection", nargs="?")
    delete = actions.add_parser("delete", help="delete a collection, or one of its documents")
    delete.add_argument("collection")
    delete.add_argument("--document", type=int, help="only this document (its id)")
    reindex = actions.add_parser("reindex", help="embed a collection's chunks again")
    reindex.add_argument("collection")
    reindex.add_argument("--embedder", help="a new embedder (a sentence-transformers model "
                                            "directory, or the default's name)")
    review = actions.add_parser("review", help="chunks that keep being rated down")
    review.add_argument("collection")
    review.add_argument("--limit", type=int, default=20)
    share = actions.add_parser("share", help="let another user read a collection")
    share.add_argument("collection")
    share.add_argument("other", metavar="USER")
    share.add_argument("--stop", action="store_true", help="no longer share it with them")
    cloud = actions.add_parser("cloud", help="whether its chunks may go to cloud models")
    cloud.add_argument("collection")
    cloud.add_argument("setting", choices=["on", "off"])


@contextlib.contextmanager
def open_memory():
    from tenshu.memory import Memory

    with open_store() as store:
        memory = Memory(store, load_memory_settings())
        try:
            yield memory
        finally:
            memory.close()


def principal_for(store, user: str | None) -> Principal:
    found = store.users.get(user) if user else store.users.owner()
    if found is None:
        raise ValueError(f"no user named {user!r} (`tenshu users list` shows them)")
    return Principal.of(found)


def main(args) -> int:
    with open_memory() as memory:
        me = principal_for(memory.store, args.user)
        collections = memory.store.collections
        if args.action == "search":
            hits = asyncio.run(memory.search(me, args.query, args.collection, k=args.k,
                                             source=args.source))
            if args.json:
                print(json.dumps([h.to_json() for h in hits], ensure_ascii=False, indent=2))
            else:
                _print_hits(hits)
        elif args.action == "list" and args.collection:
            docs = collections.documents(me, args.collection, limit=100_000)
            print_table(("ID", "STATUS", "CHUNKS", "KB", "SOURCE", "ERROR"),
                        [(str(d.id), d.status, str(d.chunks), f"{d.bytes / 1024:.0f}",
                          d.source, d.error or "") for d in docs])
        elif args.action == "list":
            found = collections.list(me)
            if not found:
                print("no collections yet: tenshu ingest PATH --collection NAME")
            print_table(("NAME", "DOCUMENTS", "CHUNKS", "EMBEDDER", "CLOUD", "DESCRIPTION"),
                        [(c.name, str(c.documents), str(c.chunks), c.embedder or "-",
                          "yes" if c.cloud else "no", c.description) for c in found])
        elif args.action == "delete" and args.document is not None:
            gone = collections.delete_document(me, args.collection, args.document)
            print(f"deleted document {args.document} ({gone} chunks)")
        elif args.action == "delete":
            gone = collections.delete(me, args.collection)
            print(f"deleted {args.collection}: {gone['documents']} documents, "
                  f"{gone['chunks']} chunks")
        elif args.action == "reindex":
            done = asyncio.run(memory.reindex(me, args.collection, args.embedder))
            print(f"reindexed {done['collection']}: {done['chunks']} chunks with "
                  f"{done['embedder']}")
        elif args.action == "review":
            _print_review(memory.review(me, args.collection, args.limit))
        elif args.action == "share":
            collections.share(me, args.collection, args.other, shared=not args.stop)
            verb = "no longer shared with" if args.stop else "shared (read-only) with"
            print(f"{args.collection} is {verb} {args.other}")
        elif args.action == "cloud":
            collections.update(me, args.collection, cloud=args.setting == "on")
            print(f"{args.collection}: its chunks {'may' if args.setting == 'on' else 'may not'}"
                  " be sent to cloud models")
    return 0


def print_summary(summary) -> None:
    print(f"{summary.collection}: {summary.added} added, {summary.updated} updated, "
          f"{summary.unchanged} unchanged, {summary.removed} removed; {summary.chunks} chunks, "
          f"{summary.bytes / 2**20:.1f} MB in {summary.seconds:.1f} s")
    for failure in summary.failed:
        print(f"  failed: {failure.error}", file=sys.stderr)


def _print_hits(hits) -> None:
    if not hits:
        print("nothing found")
    for i, hit in enumerate(hits, start=1):
        where = hit.source + (f" § {hit.section}" if hit.section else "") + \
            (f" (page {hit.page})" if hit.page is not None else "")
        text = " ".join(hit.text.split())
        print(f"{i:>2}. {where}  [{hit.score:.4f}, chunk {hit.chunk_id}]")
        print(f"    {text[:300]}{'…' if len(text) > 300 else ''}")


def _print_review(rows) -> None:
    if not rows:
        print("no chunk has been rated down more than up")
        return
    print_table(("CHUNK", "DOWN", "UP", "SOURCE", "TEXT"),
                [(str(r["chunk_id"]), str(r["down"]), str(r["up"]),
                  r["source"] + (f" § {r['section']}" if r["section"] else ""),
                  " ".join(r["text"].split())[:80]) for r in rows])
