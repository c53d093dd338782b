"""The peer side of benchmarks/memory.py: LangChain + Chroma, run inside its own venv
(.venv-langchain, see docs/benchmarks.md), one job per process, its result as JSON on stdout's
last line.

  .venv-langchain/bin/python benchmarks/memory_peer.py ingest JOB.json
  .venv-langchain/bin/python benchmarks/memory_peer.py search JOB.json

ingest: the usual LangChain pipeline over a folder of Markdown files: TextLoader for each file,
RecursiveCharacterTextSplitter counting in the embedding model's own tokenizer (chunk_size and
chunk_overlap in tokens, as tenshu's chunk_tokens and overlap_tokens), HuggingFaceEmbeddings
(sentence-transformers) on the same all-MiniLM-L6-v2 directory as tenshu's, normalized, and a
Chroma collection in a persistent client on disk (Chroma.add_documents). The model is loaded and
warmed up before the clock starts; the clock stops when add_documents returns.

search: hybrid search the way Open WebUI does it (backend/open_webui/retrieval/utils.py,
query_doc_with_hybrid_search): per query, every text and metadata of the collection fetched
from Chroma (collection.get), a BM25 index built over them in memory (langchain_community's
BM25Retriever on rank_bm25), a Chroma vector query, and the two fused by reciprocal rank
(langchain_classic's EnsembleRetriever, weights 0.5 / 0.5, c = 60). Open WebUI's reranking step
(RerankCompressor) is left out: tenshu runs none by default either. The Chroma collection holds
tenshu's chunks with the same vectors, made once from the files JOB names. At 100k chunks
Chroma 1.5.9 refuses to return the whole collection in one get ("too many SQL variables"), so
there it is read in pages of 20,000, which Open WebUI does not do (its search would fail).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHROMA_BATCH = 5000  # under Chroma's max_batch_size
GET_PAGE = 20_000  # documents per collection.get where all at once is refused


def client(path: str):
    import chromadb
    from chromadb.config import Settings

    return chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))


def embeddings(model: str):
    from langchain_huggingface import HuggingFaceEmbeddings

    emb = HuggingFaceEmbeddings(model_name=model, model_kwargs={"device": "cpu"},
                                encode_kwargs={"normalize_embeddings": True})
    emb.embed_query("warm up")
    emb.embed_documents(["warm up the batch path", "twice"])
    return emb


class Stopwatch:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - began
        setattr(owner, name, timed)


def ingest(job: dict) -> dict:
    from langchain_chroma import Chroma
    from langchain_community.document_loaders import TextLoader
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from transformers import AutoTokenizer

    emb = embeddings(job["model"])
    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    watch = Stopwatch()
    watch.wrap(HuggingFaceEmbeddings, "embed_documents", "embed")
    files = sorted(Path(job["folder"]).glob("*.md"))

    began = time.perf_counter()
    docs = [d for f in files for d in TextLoader(str(f), encoding="utf-8").load()]
    loaded = time.perf_counter()
    splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        tokenizer, chunk_size=job["chunk_tokens"], chunk_overlap=job["overlap_tokens"])
    chunks = splitter.split_documents(docs)
    split = time.perf_counter()
    store = Chroma(collection_name="notes", embedding_function=emb,
                   client=client(job["chroma"]), collection_metadata={"hnsw:space": "cosine"})
    store.add_documents(chunks)
    done = time.perf_counter()

    texts = [c.page_content for c in chunks]
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return {"seconds": done - began, "load": loaded - began, "split": split - loaded,
            "embed": watch.seconds["embed"], "write": done - split - watch.seconds["embed"],
            "chunks": len(chunks), "documents": len(files), "tokens": tokens,
            "bytes": sum(f.stat().st_size for f in files),
            "count_in_chroma": store._collection.count()}


def build(job: dict, col) -> float:
    """The collection filled from tenshu's chunks and vectors (once; cached on disk)."""
    import numpy as np

    chunks = json.loads(Path(job["chunks"]).read_text())
    vectors = np.load(job["vectors"])
    began = time.perf_counter()
    for start in range(0, len(chunks), CHROMA_BATCH):
        part = chunks[start:start + CHROMA_BATCH]
        col.add(ids=[str(c["id"]) for c in part], documents=[c["text"] for c in part],
                metadatas=[{"source": c["source"]} for c in part],
                embeddings=vectors[start:start + CHROMA_BATCH])
    return time.perf_counter() - began


def fetch_all(col, paged: bool | None = None) -> tuple[dict, bool]:
    """Every document and metadata of the collection, as Open WebUI's collection.get(); in
    pages where one call fails (Chroma 1.5.9 answers "too many SQL variables" at 100k)."""
    include = ["documents", "metadatas"]
    if not paged:
        try:
            return col.get(include=include), False
        except Exception:
            if paged is False:
                raise
    documents, metadatas = [], []
    for offset in range(0, col.count(), GET_PAGE):
        part = col.get(include=include, limit=GET_PAGE, offset=offset)
        documents += part["documents"]
        metadatas += part["metadatas"]
    return {"documents": documents, "metadatas": metadatas}, True


def search(job: dict) -> dict:
    import numpy as np
    from langchain_classic.retrievers import EnsembleRetriever
    from langchain_community.retrievers import BM25Retriever
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    db = client(job["chroma"])
    col = db.get_or_create_collection("chunks", metadata={"hnsw:space": "cosine"})
    built = build(job, col) if col.count() == 0 else None
    queries = json.loads(Path(job["queries"]).read_text())[:job["n"]]
    given = np.load(job["query_vectors"])
    k, candidates = job["k"], job["candidates"]
    emb = embeddings(job["model"]) if job.get("end_to_end") else None

    class VectorSearch(BaseRetriever):  # as Open WebUI's VectorSearchRetriever
        vector: list | None = None
        top_k: int = 10

        def _get_relevant_documents(self, query, *, run_manager):
            vector = self.vector if self.vector is not None else emb.embed_query(query)
            r = col.query(query_embeddings=[vector], n_results=self.top_k)
            return [Document(page_content=d, metadata=m)
                    for d, m in zip(r["documents"][0], r["metadatas"][0], strict=True)]

    paged = fetch_all(col)[1]

    def hybrid(query: str, vector) -> list:
        result = fetch_all(col, paged)[0]  # what Open WebUI fetches, every query
        bm25 = BM25Retriever.from_texts(texts=result["documents"],
                                        metadatas=result["metadatas"])
        bm25.k = candidates
        ensemble = EnsembleRetriever(retrievers=[bm25, VectorSearch(vector=vector,
                                                                    top_k=candidates)],
                                     weights=[0.5, 0.5])
        return ensemble.invoke(query)[:k]

    hybrid(queries[0], given[0].tolist())  # warm up
    alone, end_to_end, embed = [], [], []
    for i, query in enumerate(queries):
        began = time.perf_counter()
        hybrid(query, given[i].tolist())
        alone.append(time.perf_counter() - began)
        if emb is not None:
            began = time.perf_counter()
            emb.embed_query(query)
            embed.append(time.perf_counter() - began)
            began = time.perf_counter()
            hybrid(query, None)
            end_to_end.append(time.perf_counter() - began)
    parts = {}  # one more query, by part
    began = time.perf_counter()
    result = fetch_all(col, paged)[0]
    parts["get"] = time.perf_counter() - began
    began = time.perf_counter()
    BM25Retriever.from_texts(texts=result["documents"], metadatas=result["metadatas"])
    parts["bm25_build"] = time.perf_counter() - began
    began = time.perf_counter()
    col.query(query_embeddings=[given[0].tolist()], n_results=candidates)
    parts["vector_query"] = time.perf_counter() - began
    return {"chunks": col.count(), "build_seconds": built, "queries": len(queries),
            "retrieval": alone, "end_to_end": end_to_end, "embed": embed, "parts": parts,
            "get_paged": paged,
            "p50_retrieval": statistics.median(alone)}


def main() -> None:
    mode, job = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    result = {"ingest": ingest, "search": search}[mode](job)
    import chromadb
    import langchain_core

    result["versions"] = {"chromadb": chromadb.__version__,
                          "langchain_core": langchain_core.__version__}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
