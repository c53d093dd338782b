"""The vector index options for memory's embedded default, side by side in one run: what
tenshu uses (an exact float32 matrix product in numpy, filtered by a mask), usearch's HNSW, and
sqlite-vec's vec0 table through apsw (a SQLite driver that can load extensions, which the
Python builds tenshu must run on cannot: pyenv's and macOS's system Python).

  python benchmarks/memory_vectors.py                  # 10k and 100k vectors of 384 dimensions
  python benchmarks/memory_vectors.py --sizes 10000 --queries 200

tenshu keeps its rows as float16 and multiplies with torch (tenshu/memory/index.py); the float32
numpy product is shown beside it. Vectors are random unit vectors with some structure
(clustered), queries are perturbed copies of stored vectors; latency does not depend on the values for the exact methods, and recall@10
of the approximate one is measured against the exact answer. Reported per size: build time,
memory, p50/p99 latency of a top-10 query (unfiltered, and with a filter that keeps 10% of the
rows), and recall@10. Needs `pip install usearch sqlite-vec apsw` (the bench-memory extra).
Results print as a markdown table and are saved to benchmarks/results/memory-vectors-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from tenshu.memory.index import cosine_scores

DIM = 384
K = 10


def data(n: int, queries: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(16, n // 500), DIM)).astype(np.float32)
    vectors = centers[rng.integers(0, len(centers), n)] + \
        0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = rng.integers(0, n, queries)
    q = vectors[picks] + 0.1 * rng.standard_normal((queries, DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    groups = rng.integers(0, 10, n)  # a filter keeps group 0: a tenth of the rows
    return vectors, q, groups


def exact(vectors, q, mask=None):
    scores = cosine_scores(vectors, q) if vectors.dtype == np.float16 else vectors @ q
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    top = np.argpartition(-scores, K - 1)[:K]
    return top[np.argsort(-scores[top])]


def timed(fn, queries) -> tuple[list, list[float]]:
    out, took = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        took.append((time.perf_counter() - t) * 1000)
    return out, took


def stats(took: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(took, 50)), 3),
            "p99_ms": round(float(np.percentile(took, 99)), 3)}


def recall(found, truth) -> float:
    return float(np.mean([len(set(map(int, f)) & set(map(int, t))) / K
                          for f, t in zip(found, truth, strict=True)]))


def run(n: int, queries: int) -> list[dict]:
    vectors, q, groups = data(n, queries)
    mask = groups == 0
    rows = []
    truth, took = timed(lambda x: exact(vectors, x), q)
    truth_f, took_f = timed(lambda x: exact(vectors, x, mask), q)
    rows.append({"method": "exact float32 (numpy)", "n": n, "build_s": 0.0,
                 "memory_mb": round(vectors.nbytes / 2**20, 1), **stats(took),
                 "filtered": stats(took_f), "recall@10": 1.0, "filtered_recall@10": 1.0})
    half = vectors.astype(np.float16)
    found, took = timed(lambda x: exact(half, x), q)
    found_f, took_f = timed(lambda x: exact(half, x, mask), q)
    rows.append({"method": "exact float16 (tenshu)", "n": n, "build_s": 0.0,
                 "memory_mb": round(half.nbytes / 2**20, 1), **stats(took),
                 "filtered": stats(took_f), "recall@10": round(recall(found, truth), 4),
                 "filtered_recall@10": round(recall(found_f, truth_f), 4)})

    from usearch.index import Index

    index = Index(ndim=DIM, metric="cos", dtype="f32")
    t = time.perf_counter()
    index.add(np.arange(n), vectors)
    build = time.perf_counter() - t
    found, took = timed(lambda x: index.search(x, K).keys, q)
    allowed = set(np.flatnonzero(mask).tolist())
    # usearch filters by a predicate during the walk; from Python that is a callback per node
    # visited, or (as here) searching deeper and dropping what the filter refuses
    found_f, took_f = timed(lambda x: [k for k in index.search(x, K * 20).keys
                                       if int(k) in allowed][:K], q)
    rows.append({"method": "usearch HNSW", "n": n, "build_s": round(build, 2),
                 "memory_mb": round(index.memory_usage / 2**20, 1), **stats(took),
                 "filtered": stats(took_f), "recall@10": round(recall(found, truth), 4),
                 "filtered_recall@10": round(recall(found_f, truth_f), 4)})

    import apsw
    import sqlite_vec

    db = apsw.Connection(":memory:")
    db.enable_load_extension(True)
    db.load_extension(sqlite_vec.loadable_path())
    db.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{DIM}], grp integer)")
    t = time.perf_counter()
    with db:
        db.executemany("INSERT INTO v(rowid, embedding, grp) VALUES (?, ?, ?)",
                       ((i, vectors[i].tobytes(), int(groups[i])) for i in range(n)))
    build = time.perf_counter() - t
    knn = f"SELECT rowid FROM v WHERE embedding MATCH ? AND k = {K} ORDER BY distance"
    found, took = timed(lambda x: [r[0] for r in db.execute(knn, (x.tobytes(),))], q)
    knn_f = f"SELECT rowid FROM v WHERE embedding MATCH ? AND k = {K} AND grp = 0 " \
        "ORDER BY distance"
    found_f, took_f = timed(lambda x: [r[0] for r in db.execute(knn_f, (x.tobytes(),))], q)
    rows.append({"method": "sqlite-vec vec0 (apsw)", "n": n, "build_s": round(build, 2),
                 "memory_mb": None, **stats(took), "filtered": stats(took_f),
                 "recall@10": round(recall(found, truth), 4),
                 "filtered_recall@10": round(recall(found_f, truth_f), 4)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    rows = [r for n in map(int, args.sizes.split(",")) for r in run(n, args.queries)]
    print("| method | vectors | build s | memory MB | p50 ms | p99 ms | filtered p50 | "
          "filtered p99 | recall@10 | filtered recall@10 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['n']:,} | {r['build_s']} | {r['memory_mb']} | "
              f"{r['p50_ms']} | {r['p99_ms']} | {r['filtered']['p50_ms']} | "
              f"{r['filtered']['p99_ms']} | {r['recall@10']} | {r['filtered_recall@10']} |")
    out = Path(__file__).parent / "results" / f"memory-vectors-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
