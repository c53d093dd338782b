"""Memory: the one object the gateway, the API and the CLI use to search and fill a person's
collections.

    memory = Memory(store, settings)                      # embedders load on first use
    hits = await memory.search(principal, "how do I rotate keys", ["notes"], k=5)
    summary = await memory.ingest(principal, "notes", [Path("~/notes")])

Which collections a caller reaches is the store's to decide (store/collections.resolve); this
object runs the legs (memory/index.py), fuses and ranks (memory/retrieval.py), and ingests
(memory/ingest.py). Database work runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from tenshu.backends.base import Embedder
from tenshu.config.memory import MemorySettings
from tenshu.core.errors import InvalidRequestError
from tenshu.memory.embedders import MemoryEmbedder, local_embedder
from tenshu.memory.feedback import (
    correction_targets,
    correction_text,
    review,
    write_correction,
)
from tenshu.memory.index import Scope, legs_for
from tenshu.memory.ingest import Failure, Ingester, Summary, content_hash
from tenshu.memory.readers import ReadError
from tenshu.memory.reindex import fail_unfinished, rebuild
from tenshu.memory.retrieval import Hit, fuse, rank
from tenshu.memory.sources import conversation_markdown, fetch
from tenshu.store import Store
from tenshu.store.collections import (
    CONVERSATION_SOURCE,
    Collection,
    DocumentRow,
    reading,
    resolve,
    split_name,
)
from tenshu.store.conversations import history
from tenshu.store.feedback import Feedback
from tenshu.store.people import Principal

MAX_QUERY_CHARS = 4000  # the part of a query that is searched
MAX_K = 100


class Memory:
    def __init__(self, store: Store, settings: MemorySettings | None = None, *,
                 embedders: dict[str, Embedder] | None = None) -> None:
        self.store = store
        self.settings = settings or MemorySettings()
        self.keywords, self.vectors = legs_for(store.engine)
        self._served = embedders or {}  # the gateway's, by name
        self._embedders: dict[str, MemoryEmbedder] = {}
        self._reranker = None
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task] = set()  # uploads being indexed

    # -- embedders ------------------------------------------------------------------------------

    def embedder(self, name: str | None = None) -> MemoryEmbedder:
        """The embedder `name` (default: [memory] embedder): one the gateway serves, else one
        loaded here."""
        name = name or self.settings.embedder
        with self._lock:
            found = self._embedders.get(name)
            if found is None:
                served = self._served.get(name)
                found = MemoryEmbedder(name, served) if served is not None \
                    else local_embedder(name)
                self._embedders[name] = found
            return found

    def close(self) -> None:
        for embedder in self._embedders.values():
            if embedder.embedder not in self._served.values():
                embedder.embedder.close()

    # -- search ---------------------------------------------------------------------------------

    async def search(self, principal: Principal, query: str, collections: Sequence[str], *,
                     k: int | None = None, source: str | None = None,
                     since: datetime | None = None, until: datetime | None = None) -> list[Hit]:
        """The k best chunks for `query` across `collections` (names as the caller gives
        them); NotFoundError for a collection the principal may not read."""
        query = query.strip()[:MAX_QUERY_CHARS]
        if not query:
            raise InvalidRequestError("the query is empty", field="query")
        if not collections:
            raise InvalidRequestError("name at least one collection", field="collection")
        k = k or self.settings.k
        if not 1 <= k <= MAX_K:
            raise InvalidRequestError(f"k must be within 1..{MAX_K}", field="k")
        found = await asyncio.to_thread(self.resolve, principal, collections)
        groups: dict[str, list[Collection]] = {}
        for c in found:
            groups.setdefault(c.embedder or self.settings.embedder, []).append(c)
        vectors = {name: (await self.embedder(name).embed([query]))[0] for name in groups} \
            if self.settings.vector_weight else {}
        return await asyncio.to_thread(self._search, query, found, groups, vectors, k,
                                       source, since, until)

    def resolve(self, principal: Principal, names: Sequence[str]) -> list[Collection]:
        found: dict[int, Collection] = {}
        for name in dict.fromkeys(names):
            with reading(self.store.engine, principal, name) as conn:
                c = resolve(conn, principal, name)
            found[c.id] = c
        return list(found.values())

    def _search(self, query, found, groups, vectors, k, source, since, until) -> list[Hit]:
        s = self.settings
        n = max(s.candidates, k)
        scope = Scope(tuple(c.id for c in found), tuple(c.index_id for c in found if c.index_id),
                      source, since, until)
        with self.store.engine.connect() as conn:
            legs = []
            if s.keyword_weight:
                legs.append((self.keywords.search(conn, scope, query, n), s.keyword_weight))
            if s.vector_weight:
                for name, members in groups.items():
                    part = Scope(tuple(c.id for c in members),
                                 tuple(c.index_id for c in members if c.index_id),
                                 source, since, until)
                    legs.append((self.vectors.search(conn, part, vectors[name], n),
                                 s.vector_weight))
            names = {c.id: c.name for c in found}
            return rank(conn, scope, names, fuse(legs, s.rrf_k), k, self.reranker(), query,
                        s.rerank_top)

    def reranker(self):
        """The cross-encoder's scoring function ([memory] rerank), or None."""
        if not self.settings.rerank:
            return None
        with self._lock:
            if self._reranker is None:
                from sentence_transformers import CrossEncoder

                model = CrossEncoder(self.settings.rerank, device="cpu", local_files_only=True)
                self._reranker = lambda q, texts: model.predict([(q, t) for t in texts])
            return self._reranker

    # -- filling --------------------------------------------------------------------------------

    def ingester(self, principal: Principal, name: str, *, create: bool = True) -> Ingester:
        """An ingester into the principal's collection `name` (made if missing and `create`;
        another user's is never made: it is found, or answers as missing or read-only)."""
        if create and split_name(name)[0] in (None, principal.name):
            self.store.collections.create(principal, name, embedder=self.settings.embedder,
                                          exist_ok=True)
        with self.store.engine.connect() as conn:
            collection = resolve(conn, principal, name, write=True)
        s = self.settings
        return Ingester(self.store.engine, collection, self.embedder(collection.embedder),
                        self.vectors, chunk_tokens=s.chunk_tokens,
                        overlap_tokens=s.overlap_tokens, max_bytes=s.max_file_bytes)

    async def ingest(self, principal: Principal, name: str, paths: Sequence[Path], *,
                     progress=None, total=None) -> Summary:
        """Ingest files and folders into the collection (made if missing)."""
        ingester = await asyncio.to_thread(self.ingester, principal, name)
        return await ingester.ingest_paths(paths, progress=progress, total=total)

    async def ingest_url(self, principal: Principal, name: str, url: str) -> Summary:
        """Fetch a web page or file and ingest it (its source is the URL)."""
        ingester = await asyncio.to_thread(self.ingester, principal, name)
        began = time.perf_counter()
        summary = Summary(ingester.collection.name)
        try:
            data, content_type = await fetch(url, timeout=self.settings.fetch_timeout,
                                             max_bytes=self.settings.max_file_bytes)
        except ReadError as exc:
            summary.failed.append(Failure(url, str(exc)))
        else:
            await self._ingest_one(ingester, data, url, content_type, summary)
        summary.seconds = time.perf_counter() - began
        return summary

    async def ingest_text(self, principal: Principal, name: str, text: str, source: str,
                          content_type: str = "text/markdown") -> Summary:
        """One text as a document `source` of the collection `name` (made if missing); the
        same source again replaces it (an agent's note, a tool's write)."""
        ingester = await asyncio.to_thread(self.ingester, principal, name)
        began = time.perf_counter()
        summary = Summary(ingester.collection.name)
        await self._ingest_one(ingester, text.encode(), source, content_type, summary)
        summary.seconds = time.perf_counter() - began
        return summary

    async def ingest_conversations(self, principal: Principal, name: str) -> Summary:
        """The principal's recorded conversations, each a document (`conversation:<id>`),
        into their collection `name`: opt-in, by the person, per collection."""
        ingester = await asyncio.to_thread(self.ingester, principal, name)
        began = time.perf_counter()
        summary = Summary(ingester.collection.name)
        for conversation, text in await asyncio.to_thread(self._conversations, principal):
            await self._ingest_one(ingester, text.encode(),
                                   CONVERSATION_SOURCE + conversation, "text/markdown", summary)
        summary.seconds = time.perf_counter() - began
        return summary

    def _conversations(self, principal: Principal) -> list[tuple[str, str]]:
        found, after, more = [], None, True
        while more:
            page, more = self.store.conversations.list(principal, limit=100, after=after)
            for c in page:
                turns = self.store.conversations.turns(principal, c.id) or []
                found.append((c.id, conversation_markdown(c.title, history(turns))))
            after = page[-1].id if page else None
        return found

    async def upload(self, principal: Principal, name: str, data: bytes, filename: str,
                     content_type: str | None = None, *, wait: bool = False) -> DocumentRow:
        """An uploaded file into the collection: its document, pending, indexed in the
        background (or, with `wait`, indexed before this returns)."""
        ingester = await asyncio.to_thread(self.ingester, principal, name)
        source = Path(filename).name or "upload"
        doc_id = await asyncio.to_thread(ingester.pending, source)
        task = asyncio.create_task(self._ingest_one(ingester, data, source, content_type,
                                                    Summary(name)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if wait:
            await asyncio.shield(task)
        return await asyncio.to_thread(self.store.collections.document, principal, name, doc_id)

    async def _ingest_one(self, ingester: Ingester, data: bytes, source: str,
                          content_type: str | None, summary: Summary) -> None:
        known = await asyncio.to_thread(ingester.indexed)
        mark = known.get(source)
        digest = content_hash(data)
        if mark is not None and mark[1] == digest and mark[2] == "ready":
            summary.unchanged += 1
            return
        try:
            await asyncio.to_thread(ingester.set_status, source, "indexing")
            parsed = await asyncio.to_thread(ingester.parse, data, source, digest, content_type)
            if isinstance(parsed, ReadError):
                raise parsed
            await ingester.index([parsed], {s: v for s, v in known.items()
                                            if v[1] is not None}, summary)
        except ReadError as exc:
            summary.failed.append(Failure(source, str(exc)))
            await asyncio.to_thread(ingester.fail, source, str(exc))
        except Exception as exc:  # an embedder that failed: the document says so
            summary.failed.append(Failure(source, f"{source}: indexing failed: {exc}"))
            await asyncio.to_thread(ingester.fail, source, f"indexing failed: {exc}")
            raise

    def recover(self) -> int:
        """Documents left pending or indexing by a server that stopped: failed, to upload
        again. Run at start."""
        return fail_unfinished(self.store.engine)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.close()

    # -- upkeep ---------------------------------------------------------------------------------

    async def reindex(self, principal: Principal, name: str, embedder: str | None = None,
                      *, progress=None) -> dict:
        """Embed the collection's chunks again, with `embedder` (default: its own) into a new
        index built beside the live one, and swap it in when it is whole."""
        with self.store.engine.connect() as conn:
            collection = resolve(conn, principal, name, write=True)
        chosen = self.embedder(embedder or collection.embedder)
        return await rebuild(self.store.engine, collection, chosen, self.vectors,
                             progress=progress)

    async def absorb(self, principal: Principal, item: Feedback) -> list[int]:
        """A correction of an answer that drew on memory becomes a memory item (memory/
        feedback.py); the ids of the chunks it made (none for other feedback)."""
        if item.kind != "correction" or not item.text:
            return []
        targets = await asyncio.to_thread(correction_targets, self.store.engine, principal,
                                          item.turn_id)
        if not targets:
            return []
        rows = []
        for target in targets:
            vector = await self.embedder(target[4]).embed([correction_text(target[3],
                                                                           item.text)])
            rows.append(vector[0])
        return await asyncio.to_thread(write_correction, self.store.engine, self.vectors,
                                       principal, item, targets, rows)

    def review(self, principal: Principal, name: str, limit: int = 20) -> list[dict]:
        with reading(self.store.engine, principal, name) as conn:
            collection = resolve(conn, principal, name)
        return review(self.store.engine, collection, limit)
