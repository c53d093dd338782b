"""Retrieval quality of tenshu's memory on a corpus nobody here wrote: Debian's man pages.

  python benchmarks/memory_quality.py                 # 1,000 pages, BM25 / vectors / hybrid
  python benchmarks/memory_quality.py --quick         # 200 pages
  python benchmarks/memory_quality.py --weights 1:0.5,0.5:1,1:2   # hybrid at other weights

Each page of /usr/share/man/man1 in a seeded random sample (symbolic links, `.so` includes,
pages under 600 characters, and pages whose NAME description or opening text repeats one taken
already are skipped) is rendered with groff and written as Markdown: the command's name as the
H1 (the document's title), each man section an H2, its NAME section left out. The query is the
NAME line's description without the command's name ("ls - list directory contents" asks "list
directory contents"), and its one relevant document is its own page. The corpus is ingested
once with tenshu's defaults (all-MiniLM-L6-v2, 200-token chunks, 32 overlap) into a store
cached in benchmarks/.cache/memory/, and every query runs against that one index in three
configurations: BM25 alone (vector_weight 0), vectors alone (keyword_weight 0), and hybrid (the
defaults: both weights 1, RRF k 60, 50 candidates a leg). A query asks for 50 chunks; the ranking
of documents is the order in which their chunks first appear, cut at 10. Reported: nDCG@10,
recall@10 and MRR@10, beside BEIR's published BM25 and all-MiniLM-L6-v2 figures on SciFact and
FiQA for scale (other corpora, other queries: context, not a comparison). Results print as a
markdown table and are saved to benchmarks/results/memory-quality-<time>.json.

The man-page corpus (sampling, rendering, parsing) lives here; benchmarks/memory.py uses it too.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache" / "memory"
MAN = Path("/usr/share/man/man1")
GROFF = ["groff", "-k", "-t", "-mandoc", "-Tutf8", "-P-cbou", "-rHY=0"]  # no hyphenation
MIN_BODY = 600  # characters: shorter pages say too little to be found by their description
MIN_WORDS = 3  # words in a description, to be a query
DEPTH = 10  # nDCG@10, recall@10, MRR@10
CHUNKS_ASKED = 50  # chunks per query, enough for 10 distinct documents
# BEIR (Thakur et al. 2021, and the sentence-transformers model card), nDCG@10
BEIR = {"SciFact": {"bm25": 0.679, "vectors": 0.645}, "FiQA": {"bm25": 0.236, "vectors": 0.369}}
CONFIGS = {"bm25": (1.0, 0.0), "vectors": (0.0, 1.0), "hybrid": (1.0, 1.0)}


# -- the corpus: man pages ----------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    file: str  # its file in /usr/share/man/man1
    name: str  # the command, the document's title
    query: str  # the NAME line's description
    text: str  # the page as Markdown, without its NAME section


def render(file: str) -> str:
    """A man page as groff renders it for a terminal, cached; "" for an include or a failure."""
    cached = CACHE / "man1" / (file + ".txt")
    if cached.exists():
        return cached.read_text()
    path = MAN / file
    raw = path.read_bytes()
    if file.endswith(".gz"):
        raw = gzip.decompress(raw)
    text = ""
    if not raw.lstrip().startswith(b".so "):
        try:
            out = subprocess.run(GROFF, input=raw, capture_output=True, timeout=60)
            text = out.stdout.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            text = ""
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(text)
    return text


_HEADING = re.compile(r"[A-Z][A-Z0-9 ,/&()'._-]*")
_SUBHEADING = re.compile(r" {2,4}\S.*")
_DASH = re.compile(r"\s+(?:\\-|[-‐‑–—−])\s+")
_SPACES = re.compile(r"(?<=\S) {2,}")


def command_name(file: str) -> str:
    stem = file[:-3] if file.endswith(".gz") else file
    return re.sub(r"\.1[A-Za-z0-9_+-]*$", "", stem)


def parse(file: str, rendered: str) -> Page | None:
    """The page's description and its Markdown, or None where it has no usable NAME line."""
    lines = rendered.rstrip().split("\n")
    if len(lines) < 4:
        return None
    lines = lines[1:-1]  # groff's header and footer lines
    sections: list[tuple[str, list[str]]] = []
    for line in lines:
        if line and not line[0].isspace() and _HEADING.fullmatch(line.rstrip()):
            sections.append((line.strip(), []))
        elif sections:
            sections[-1][1].append(line.rstrip())
    if not sections or sections[0][0] != "NAME":
        return None
    name_text = " ".join(" ".join(sections[0][1]).split())
    parts = _DASH.split(name_text, maxsplit=1)
    if len(parts) != 2:
        return None
    query = parts[1].strip()
    if len(query.split()) < MIN_WORDS:
        return None
    body_lines = [line for _, lines_ in sections[1:] for line in lines_ if line.strip()]
    indents = Counter(len(x) - len(x.lstrip()) for x in body_lines)
    indent = indents.most_common(1)[0][0] if indents else 0  # the body's (7, or mdoc's 5)
    out = [f"# {command_name(file)}", ""]
    for heading, section in sections[1:]:
        out += [f"## {heading.title() if heading.isupper() else heading}", ""]
        for line in section:
            if _SUBHEADING.fullmatch(line) and len(line) - len(line.lstrip()) < indent \
                    and len(line) < 60:
                out.append(f"### {line.strip()}")
            else:
                out.append(_SPACES.sub(" ", line[indent:] if line[:indent].isspace() else
                                       line.lstrip()))
        out.append("")
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"
    if len(text) < MIN_BODY:
        return None
    return Page(file, command_name(file), query, text)


def candidates(seed: int) -> list[str]:
    """The man1 pages that are files (not links), in a seeded random order: first the pages of
    Debian's packages, then Google Cloud CLI's (16,631 of the 17,847 files here are
    gcloud_*: its generally available commands only, as its alpha and beta pages repeat them
    almost word for word)."""
    files = sorted(e.name for e in os.scandir(MAN) if e.is_file(follow_symlinks=False)
                   and not e.name.startswith("."))
    debian = [f for f in files if not f.startswith("gcloud")]
    gcloud = [f for f in files if f.startswith("gcloud")
              and not f.startswith(("gcloud_alpha", "gcloud_beta"))]
    rng = random.Random(seed)
    rng.shuffle(debian)
    rng.shuffle(gcloud)
    return debian + gcloud


def sample(n: int, seed: int = 0, *, skip: int = 0) -> list[Page]:
    """n pages, after the first `skip` accepted ones, in the seeded order: each with a
    description and an opening not seen before, and a file name of its own."""
    pages: list[Page] = []
    seen_query, seen_body, seen_name = set(), set(), set()
    files = candidates(seed)
    with ProcessPoolExecutor(2) as pool:
        for start in range(0, len(files), 128):
            block = files[start:start + 128]
            for file, rendered in zip(block, pool.map(render, block), strict=True):
                page = parse(file, rendered)
                if page is None:
                    continue
                query = " ".join(page.query.lower().split())
                body = hashlib.sha1(" ".join(page.text.split("\n", 2)[-1].split())[:1500]
                                    .encode()).hexdigest()
                if query in seen_query or body in seen_body or page.name in seen_name:
                    continue
                seen_query.add(query)
                seen_body.add(body)
                seen_name.add(page.name)
                if skip:
                    skip -= 1
                    continue
                pages.append(page)
                if len(pages) == n:
                    return pages
    return pages


def write_corpus(pages: list[Page], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for page in pages:
        path = folder / f"{page.name}.md"
        if not path.exists() or path.read_text() != page.text:
            path.write_text(page.text)


# -- the index ----------------------------------------------------------------------------------


async def build_index(pages: list[Page], workdir: Path):
    """The corpus ingested with tenshu's defaults into workdir/state.db (kept between runs:
    only what changed is embedded again). Returns (store, owner, corpus folder, summary)."""
    from tenshu.memory import Memory
    from tenshu.store import open_store
    from tenshu.store.people import Principal

    corpus = workdir / "corpus"
    write_corpus(pages, corpus)
    store = open_store(workdir / "state.db")
    owner = Principal.of(store.users.owner())
    memory = Memory(store)
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        if done % 100 < n:
            print(f"  ingested {done}/{len(pages)} pages", file=sys.stderr, flush=True)

    summary = await memory.ingest(owner, "man", [corpus], progress=progress)
    return store, owner, corpus, summary, memory


# -- evaluation ---------------------------------------------------------------------------------


def metrics(ranks: list[int | None]) -> dict:
    """nDCG@10, recall@10 and MRR@10 with one relevant document per query (rank 1-based, None
    when it is not in the first 10)."""
    n = len(ranks)
    found = [r for r in ranks if r is not None and r <= DEPTH]
    return {"ndcg@10": sum(1 / math.log2(r + 1) for r in found) / n,
            "recall@10": len(found) / n,
            "mrr@10": sum(1 / r for r in found) / n,
            "queries": n}


async def evaluate(memory, owner, pages: list[Page], corpus: Path) -> tuple[dict, list]:
    """Each page's query against the index: the rank of its page among documents."""
    ranks: list[int | None] = []
    per_query: list[int | None] = []
    began = time.perf_counter()
    for page in pages:
        hits = await memory.search(owner, page.query, ["man"], k=CHUNKS_ASKED)
        docs = list(dict.fromkeys(Path(h.source).name for h in hits))[:DEPTH]
        want = f"{page.name}.md"
        rank = docs.index(want) + 1 if want in docs else None
        ranks.append(rank)
        per_query.append(rank)
    result = metrics(ranks)
    result["seconds"] = round(time.perf_counter() - began, 1)
    return result, per_query


def memory_with(base, keyword: float, vector: float):
    """A Memory over base's store with other fusion weights, sharing base's loaded embedder."""
    from dataclasses import replace

    from tenshu.memory import Memory

    settings = replace(base.settings, keyword_weight=keyword, vector_weight=vector)
    memory = Memory(base.store, settings)
    memory._embedders[settings.embedder] = base.embedder()
    return memory


def parse_weights(text: str) -> list[tuple[float, float]]:
    out = []
    for item in text.split(","):
        keyword, _, vector = item.partition(":")
        out.append((float(keyword), float(vector)))
    return out


def by_source(names: list[str], ranks: dict[str, list]) -> dict[str, dict[str, dict]]:
    """The metrics of each configuration on Debian's pages and on Google Cloud CLI's apart."""
    out: dict[str, dict[str, dict]] = {}
    for label, found in ranks.items():
        for part, keep in (("Debian's packages", False), ("Google Cloud CLI", True)):
            picked = [r for n, r in zip(names, found, strict=True)
                      if n.startswith("gcloud") == keep]
            if picked:
                out.setdefault(part, {})[label] = metrics(picked)
    return out


def table(rows: dict[str, dict], parts: dict | None = None) -> str:
    lines = ["| retrieval | nDCG@10 | recall@10 | MRR@10 | queries |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['ndcg@10']:.3f} | {r['recall@10']:.3f} | "
                     f"{r['mrr@10']:.3f} | {r['queries']} |")
    for part, part_rows in (parts or {}).items():
        for name, r in part_rows.items():
            lines.append(f"| {part} only: {name} | {r['ndcg@10']:.3f} | {r['recall@10']:.3f} | "
                         f"{r['mrr@10']:.3f} | {r['queries']} |")
    for corpus, figures in BEIR.items():
        lines.append(f"| BEIR {corpus} (published): BM25 / all-MiniLM-L6-v2 | "
                     f"{figures['bm25']:.3f} / {figures['vectors']:.3f} | | | |")
    return "\n".join(lines)


async def run(args) -> dict:
    from tenshu.memory.embedders import local_embedder

    n = 200 if args.quick else args.pages
    print(f"sampling and rendering {n} man pages (seed {args.seed})...", file=sys.stderr)
    pages = sample(n, args.seed)
    workdir = CACHE / f"quality-{len(pages)}-seed{args.seed}"
    if args.fresh and workdir.exists():
        import shutil

        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"ingesting into {workdir} (cached between runs)...", file=sys.stderr)
    store, owner, corpus, summary, base = await build_index(pages, workdir)
    warm = local_embedder(base.settings.embedder)
    await warm.embed(["warm up"])
    base._embedders[base.settings.embedder] = warm
    stats = store.engine.connect().exec_driver_sql(
        "SELECT count(*), avg(length(text)) FROM chunks").one()
    print(f"index: {len(pages)} pages, {stats[0]} chunks (mean {stats[1]:.0f} characters); "
          f"this run ingested {summary.added + summary.updated} pages in "
          f"{summary.seconds:.0f} s", file=sys.stderr)
    rows, details = {}, {}
    configs = {f"{name} (keyword {k:g}, vector {v:g})": (k, v) for name, (k, v) in CONFIGS.items()}
    for k, v in parse_weights(args.weights) if args.weights else []:
        configs[f"hybrid, keyword {k:g}, vector {v:g}"] = (k, v)
    for label, (k, v) in configs.items():
        memory = memory_with(base, k, v)
        rows[label], details[label] = await evaluate(memory, owner, pages, corpus)
        r = rows[label]
        print(f"  {label}: nDCG@10 {r['ndcg@10']:.3f}, recall@10 {r['recall@10']:.3f}, "
              f"MRR@10 {r['mrr@10']:.3f} ({r['seconds']} s)", file=sys.stderr)
    return {"pages": len(pages), "seed": args.seed, "chunks": stats[0],
            "queries": [[p.name, p.query] for p in pages],
            "mean_chunk_chars": round(stats[1]), "corpus_bytes": sum(len(p.text.encode())
                                                                      for p in pages),
            "settings": {"chunk_tokens": base.settings.chunk_tokens,
                         "overlap_tokens": base.settings.overlap_tokens,
                         "rrf_k": base.settings.rrf_k, "candidates": base.settings.candidates},
            "results": rows, "by_source": by_source([p.name for p in pages], {
                k: v for k, v in details.items() if k in list(details)[:len(CONFIGS)]}),
            "beir_published_ndcg@10": BEIR,
            "ranks": details}  # per configuration, each query's rank of its page (None: > 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=1000, help="pages in the corpus (and "
                        "queries: one each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="200 pages")
    parser.add_argument("--weights", help="more hybrid rows, KEYWORD:VECTOR weights, comma "
                        "separated, e.g. 1:0.5,0.5:1")
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached index")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(table(result["results"], result["by_source"]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"memory-quality-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"\nsaved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
