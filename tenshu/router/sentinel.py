"""Sentinels: how complex is a request? A score in [0, 1], higher meaning more complex.

The router asks a sentinel when a route lets it choose the tier: a score at or above the
route's threshold (calibrate.py picks one) goes to the strong tier, a lower one stays on the
small model. Two kinds:

    EmbeddingSentinel  the semantic router: how close the request sits to built-in examples of
                       simple and complex work, in the embedder's space (MiniLM by default)
    ModelSentinel      a small local model asked for a grammar-constrained verdict, scored by
                       the probability it gave each verdict

Both judge `sentinel_text`: the last thing the user wrote, not the whole conversation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from tenshu.backends.base import Backend, Embedder
from tenshu.core.errors import TenshuError
from tenshu.core.events import BlockDelta, BlockStart, TokenLogprob
from tenshu.core.messages import Message, TextBlock
from tenshu.core.request import ChatRequest


class Sentinel(Protocol):
    name: str

    async def score(self, request: ChatRequest) -> float:
        """0..1: higher = more complex."""
        ...


def sentinel_text(request: ChatRequest, limit: int = 2000) -> str:
    """What a sentinel judges: the last user message that has text (an agent's latest turn is
    often only tool results; the task is in the turn before), or a completion's prompt. Past
    `limit` characters, its head and tail are kept: the ask tends to sit at one end of a paste."""
    if request.is_completion:
        text = request.prompt if isinstance(request.prompt, str) else ""
    else:
        users = (m.text for m in reversed(request.messages) if m.role == "user")
        text = next((t for t in users if t.strip()), "")
    text = text.strip()
    if len(text) <= limit:
        return text
    gap = " … "
    if limit <= len(gap):
        return text[:limit]
    tail = (limit - len(gap)) // 2
    return text[: limit - len(gap) - tail] + gap + text[len(text) - tail:]


# -- the semantic router ----------------------------------------------------------------------

SIMPLE_EXAMPLES: tuple[str, ...] = (
    "hi there",
    "Good morning! How are you doing?",
    "thanks, that's all I needed",
    "What is the capital of Japan?",
    "How many ounces are in a pound?",
    "Who wrote Pride and Prejudice?",
    "What's 15% of 80?",
    "Translate 'good night' into Spanish.",
    "Fix the spelling: I recieved the pakage yesterday.",
    "Rephrase this to sound more polite: send me the report now.",
    "Give me a synonym for 'happy'.",
    "What time zone is Chicago in?",
    "Convert 30 degrees Celsius to Fahrenheit.",
    "What does the acronym HTTP stand for?",
    "Write a one-line birthday wish for my coworker.",
    "Is a tomato a fruit or a vegetable?",
    "How do I append an item to a list in Python?",
    "What's the git command to show the current branch?",
    "Summarize in one sentence: the meeting moved to Thursday at 3pm.",
    "Make this title shorter: A Comprehensive Guide to Growing Tomatoes at Home",
    "Tell me a short joke about cats.",
    "What year did the Berlin Wall fall?",
    "How do you spell 'necessary'?",
    "Which is bigger, a kilobyte or a megabyte?",
    "Sort these words alphabetically: pear, apple, fig.",
)

COMPLEX_EXAMPLES: tuple[str, ...] = (
    "Design the database schema and API for a multi-tenant invoicing service, including "
    "migrations and tenant isolation.",
    "My Python service slowly leaks memory under load; walk me through finding the cause and "
    "fixing it.",
    "Prove that there are infinitely many primes, then show how the argument extends to primes "
    "of the form 4k+3.",
    "Refactor this 400-line class into smaller components with dependency injection and write "
    "tests for each part.",
    "Compare event sourcing with a CRUD model for order management, weighing consistency, "
    "auditing and scaling.",
    "Write a detailed analysis of the causes of the 2008 financial crisis and the regulatory "
    "changes that followed.",
    "Debug this race condition: two goroutines sometimes write the same map and the program "
    "panics, only in production.",
    "Plan the migration of our monolith to microservices over six months, with risks, "
    "milestones and a rollback strategy.",
    "Implement a lock-free concurrent queue in C++ and argue why it is correct under the memory "
    "model.",
    "Derive the backpropagation equations for a two-layer network with a softmax output and "
    "cross-entropy loss.",
    "Our Kubernetes pods are OOM-killed since the last deploy; here are the logs and manifests, "
    "find what changed and propose a fix.",
    "Explain step by step how a compiler turns source into machine code: parsing, type checking, "
    "optimization, register allocation.",
    "Write a 2,000-word essay on how remote work reshapes city economies, with arguments on both "
    "sides.",
    "Review this pull request for security holes, performance regressions and API design "
    "problems, and suggest concrete changes.",
    "Build a command-line tool that syncs two directories incrementally, resolves conflicts and "
    "resumes after an interruption.",
    "Given this customer churn dataset, choose features, train a model, evaluate it properly and "
    "explain the results to executives.",
    "Solve this constrained optimization problem with Lagrange multipliers and check the "
    "second-order conditions.",
    "Analyse the time and space complexity of this dynamic programming solution and find a "
    "faster algorithm.",
    "Why does my React app re-render the whole list on every keystroke, and how should I "
    "restructure the state?",
    "Design a caching layer for a read-heavy API with strict consistency needs and go through "
    "the invalidation edge cases.",
    "Port this legacy COBOL batch job to modern Python while preserving its exact rounding "
    "behaviour.",
    "Draft a threat model for a mobile banking app: assets, attackers, attack surfaces and "
    "mitigations.",
    "Work through the proof that the halting problem is undecidable and relate it to Rice's "
    "theorem.",
    "Here is a slow SQL query and its execution plan: explain the bottleneck and rewrite it with "
    "the right indexes.",
    "Write a research plan comparing three approaches to long-context retrieval, with "
    "experiments and metrics.",
)

EMBED_LIMIT = 1000  # MiniLM reads 256 word pieces, about this many characters of English
TOP_K = 3
# Mean top-k similarities to the two sets differ by a few hundredths to a few tenths; this
# scale spreads that gap over most of (0, 1): a gap of 0.1 scores 0.82, of -0.1 scores 0.18.
SCALE = 15.0


def _unit_rows(vectors) -> np.ndarray:
    m = np.asarray(vectors, dtype=np.float32)  # [N, D]
    return m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-12)


class EmbeddingSentinel:
    """score = logistic(SCALE * (mean of the top-k cosine similarities to the complex examples
    - the same for the simple ones)). Examples of your own replace the built-in ones."""

    def __init__(self, embedder: Embedder, simple: Sequence[str] | None = None,
                 complex: Sequence[str] | None = None):
        self.embedder = embedder
        self.name = embedder.info.name
        self.simple = tuple(SIMPLE_EXAMPLES if simple is None else simple)
        self.complex = tuple(COMPLEX_EXAMPLES if complex is None else complex)
        if not self.simple or not self.complex:
            raise ValueError("the embedding sentinel needs at least one simple and one complex "
                             "example")
        self._examples: tuple[np.ndarray, np.ndarray] | None = None

    async def _example_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        # Embedded on first use. Two first calls at once both embed them, which costs a little
        # once; a lock would tie the sentinel to one event loop.
        if self._examples is None:
            vectors, _ = await self.embedder.embed([*self.simple, *self.complex])
            m = _unit_rows(vectors)
            self._examples = m[: len(self.simple)], m[len(self.simple):]
        return self._examples

    async def score(self, request: ChatRequest) -> float:
        text = sentinel_text(request, EMBED_LIMIT)
        if not text:
            return 0.0  # nothing to judge (a prompt of token ids): nothing calls for more
        simple, complex_ = await self._example_vectors()
        vectors, _ = await self.embedder.embed([text])
        query = _unit_rows(vectors)[0]  # [D]
        gap = _top_mean(complex_ @ query) - _top_mean(simple @ query)
        return 1.0 / (1.0 + math.exp(-SCALE * gap))


def _top_mean(similarities: np.ndarray) -> float:
    k = min(TOP_K, len(similarities))
    return float(np.sort(similarities)[-k:].mean())


# -- a small model's verdict ------------------------------------------------------------------

# Closed and fully typed, so that upstreams with a strict mode (OpenAI's) accept it too.
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["simple", "complex"]}},
    "required": ["verdict"],
    "additionalProperties": False,
}

INSTRUCTION = (
    "You sort requests for a router that has a small fast model and a large capable one. Do not "
    "answer the request; judge it. It is simple when a small model can answer it well in a few "
    "sentences: greetings, quick facts, short rewrites or translations, one-line code answers. "
    "It is complex when it needs several steps of reasoning, design, debugging, a proof, "
    "long-form writing or substantial code. Reply with the JSON verdict only."
)

# `{"verdict":"complex"}` is 6-8 tokens on real vocabularies; a small test vocabulary may spell
# it in one token per character. The grammar ends the reply, so the cap costs nothing.
VERDICT_MAX_TOKENS = 24

_VALUE = re.compile(r'"verdict"\s*:\s*"')


class ModelSentinel:
    """Asks `backend` (a small local model) for {"verdict": "simple" | "complex"} under a JSON
    grammar, greedily, and scores p(complex) / (p(simple) + p(complex)) at the token where
    the two verdicts part."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.name = backend.info.name

    def verdict_request(self, text: str) -> ChatRequest:
        return ChatRequest(
            model=self.backend.info.name,
            messages=[Message.of("system", INSTRUCTION),
                      Message.of("user", f"The request to judge:\n\n{text}")],
            response_format={"type": "json_schema", "json_schema": {
                "name": "verdict", "schema": VERDICT_SCHEMA, "strict": True}},
            temperature=0.0,
            max_tokens=VERDICT_MAX_TOKENS,
            logprobs=True,
            top_logprobs=5,
        )

    async def score(self, request: ChatRequest) -> float:
        text = sentinel_text(request)
        if not text:
            return 0.0
        texts: set[int] = set()  # indexes of text blocks (a reasoning upstream may think first)
        reply: list[str] = []
        tokens: list[TokenLogprob] = []
        async for event in self.backend.chat(self.verdict_request(text)):
            if isinstance(event, BlockStart) and event.choice == 0:
                if isinstance(event.block, TextBlock):
                    texts.add(event.index)
            elif isinstance(event, BlockDelta) and event.choice == 0 and event.index in texts:
                reply.append(event.text)
                tokens.extend(event.logprobs or ())
        score = verdict_score("".join(reply), tokens)
        if score is None:
            raise TenshuError(f"the sentinel {self.name} gave no verdict: {''.join(reply)[:80]!r}")
        return score


def verdict_score(reply: str, tokens: Sequence[TokenLogprob]) -> float | None:
    """The complexity score of a verdict reply, from its tokens' logprobs where they show both
    verdicts, else 1.0 or 0.0 from the verdict itself; None when the reply holds no verdict."""
    found = _VALUE.search(reply)
    first = reply[found.end(): found.end() + 1] if found else ""
    if first not in ("s", "c"):
        return None
    fallback = 1.0 if first == "c" else 0.0
    spelled = "".join(t.token for t in tokens)
    found = _VALUE.search(spelled)
    if found is None:
        return fallback
    start = found.end()  # where the value begins
    offset = 0
    for token in tokens:  # the token that writes the value's first character
        if offset + len(token.token) > start:
            break
        offset += len(token.token)
    else:
        return fallback
    before = spelled[:offset]
    options = {t.token: t.logprob for t in token.top}
    options.setdefault(token.token, token.logprob)  # under the grammar it may be outside the top
    mass = {"simple": 0.0, "complex": 0.0}
    for text, logprob in options.items():
        written = before + text
        if len(written) <= start:
            continue  # stops short of the value: it decides nothing
        for verdict in mass:
            full = spelled[:start] + verdict
            if written.startswith(full) or full.startswith(written):
                mass[verdict] += math.exp(logprob)
    if not (mass["simple"] > 0 and mass["complex"] > 0):
        return fallback
    return mass["complex"] / (mass["simple"] + mass["complex"])
