"""The Mochi corpus: shape, variety, persona, follow-ups that need context, unseen eval prompts."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from tenshu.learn import corpus
from tenshu.learn.corpus import Conversation, describe, generate_corpus, heldout_cases
from tenshu.learn.persona import PERSONA_MARKERS, PERSONA_NAME, SYSTEM_PROMPTS

OUT_OF_SCOPE = ("code", "math", "news", "facts", "translation", "essay", "medical", "legal")
TELL_ME_MORE = {"tellmemore", "whatelse", "andthen", "goon", "moreplease", "keepgoing", "saymore"}
WHY = {"why", "whyisthat", "howcome", "butwhy", "whythough", "whyso"}


def key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def replies(convs: list[Conversation]) -> list[str]:
    return [m["content"] for c in convs for m in c.messages if m["role"] == "assistant"]


def turn_pairs(conv: Conversation) -> list[tuple[str, str]]:
    chat = [m for m in conv.messages if m["role"] != "system"]
    return [(chat[i]["content"], chat[i + 1]["content"]) for i in range(0, len(chat), 2)]


@pytest.fixture(scope="module")
def convs() -> list[Conversation]:
    return generate_corpus(5000, seed=0)


def test_same_seed_same_corpus_other_seed_other_corpus():
    assert generate_corpus(300, seed=7) == generate_corpus(300, seed=7)
    assert generate_corpus(300, seed=7) != generate_corpus(300, seed=8)
    assert generate_corpus(1)[0] == generate_corpus(50)[0]


@pytest.mark.parametrize("n", [0, -3])
def test_needs_at_least_one_conversation(n):
    with pytest.raises(ValueError):
        generate_corpus(n)


def test_messages_alternate_and_end_with_the_assistant(convs):
    for conv in convs:
        msgs = list(conv.messages)
        if msgs[0]["role"] == "system":
            assert msgs.pop(0)["content"] in SYSTEM_PROMPTS
        assert msgs and len(msgs) % 2 == 0
        assert [m["role"] for m in msgs] == ["user", "assistant"] * (len(msgs) // 2)
        for m in msgs:
            assert set(m) == {"role", "content"}
            assert m["content"].strip() == m["content"] and m["content"]
            assert m["content"].isascii()


def test_turn_counts_and_system_prompts_follow_the_mix(convs):
    stats = describe(convs)
    share = {t: n / len(convs) for t, n in stats["turns"].items()}
    for turns, want in {1: 0.45, 2: 0.25, 3: 0.20, 4: 0.10}.items():
        assert abs(share[turns] - want) < 0.03, (turns, share)
    assert 0.16 < stats["with_system_prompt"] / len(convs) < 0.24
    assert "You are a helpful assistant." in SYSTEM_PROMPTS


def test_corpus_is_varied_and_covers_every_topic(convs):
    stats = describe(convs)
    assert stats["distinct_user_messages"] > 3000
    assert stats["distinct_assistant_replies"] > 4000
    assert len(stats["topics"]) >= 25
    assert set(stats["topics"]) == set(corpus._TOPICS)
    assert set(OUT_OF_SCOPE) <= set(stats["topics"])


def test_follow_ups_answer_about_the_previous_topic(convs):
    by_topic: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for conv in convs:
        pairs = turn_pairs(conv)
        if len(pairs) > 1 and key(pairs[1][0]) in TELL_ME_MORE | WHY:
            kind = "more" if key(pairs[1][0]) in TELL_ME_MORE else "why"
            by_topic[conv.topic][kind].add(pairs[1][1])
    about = {
        "moat": {"moat", "fish"},
        "roof": {"roof", "stars", "star", "owl"},
        "keeper": {"keeper"},
        "naps": {"nap", "naps", "sunbeam", "napping"},
    }
    for topic, vocabulary in about.items():
        for kind in ("more", "why"):
            answers = by_topic[topic][kind]
            assert answers, (topic, kind)
            for answer in answers:
                assert words(answer) & vocabulary, (topic, kind, answer)
    # The same "tell me more" gets disjoint answers after different topics: only the context
    # tells the model which one to give.
    assert not by_topic["moat"]["more"] & by_topic["roof"]["more"]
    assert not by_topic["garden"]["why"] & by_topic["castle"]["why"]


def test_identity_replies_say_small_model_trained_from_scratch(convs):
    answers = [turn_pairs(c)[0][1] for c in convs if c.topic == "identity"]
    assert len(answers) > 100
    for answer in answers:
        assert PERSONA_NAME.lower() in answer
        assert "trained from scratch" in answer
        assert words(answer) & {"small", "tiny"}


def test_out_of_scope_replies_decline_and_point_to_a_bigger_model(convs):
    code_like = re.compile(r"[{}()\[\];=<>`#]|\b(def|import|return|print|select|var)\b")
    seen = set()
    for conv in convs:
        if conv.topic in OUT_OF_SCOPE:
            seen.add(conv.topic)
            answer = turn_pairs(conv)[0][1]
            assert "--model" in answer
            assert not code_like.search(answer), answer
    assert seen == set(OUT_OF_SCOPE)


def test_heldout_cases_are_fixed_and_broad():
    cases = heldout_cases()
    assert cases == heldout_cases()
    singles = [c for c in cases if len(c.turns) == 1]
    chats = [c for c in cases if len(c.turns) == 3]
    assert len(singles) + len(chats) == len(cases)
    assert len(singles) >= 40
    assert len({c.topic for c in singles}) >= 15
    assert len(chats) >= 10
    assert {c.topic for c in cases} <= set(corpus._TOPICS)
    assert all(turn.strip() for c in cases for turn in c.turns)


def test_no_training_wording_matches_a_heldout_prompt():
    # Structural: no core phrasing, bare or behind any prefix, is a held-out prompt, so the
    # generator's redraw guard never has to fire.
    heldout = {key(t) for c in heldout_cases() for t in c.turns}
    shared = corpus._SHARED
    cores = [a for t in corpus._TOPICS.values() for a in t.asks]
    cores += shared["more"] + shared["why"] + shared["really"]
    for prefix in ["", *shared["prefix"], *shared["later"]]:
        for core in cores:
            assert key(f"{prefix} {core}") not in heldout, (prefix, core)


@pytest.mark.parametrize("seed, size", [(0, 20_000), (1, 5000), (2, 5000), (3, 5000)])
def test_heldout_prompts_never_occur_in_a_corpus(seed, size):
    heldout = {key(t) for c in heldout_cases() for t in c.turns}
    for conv in generate_corpus(size, seed=seed):
        for m in conv.messages:
            if m["role"] == "user":
                assert key(m["content"]) not in heldout, m["content"]


def test_persona_markers_catch_mochi_and_not_a_generic_assistant():
    assert all(m == m.lower() and " " not in m for m in PERSONA_MARKERS)
    texts = replies(generate_corpus(2000, seed=5))
    marked = sum(bool(words(t) & PERSONA_MARKERS) for t in texts)
    assert marked / len(texts) >= 0.97
    for generic in (
        "Sure! Here is the code you asked for.",
        "As an AI language model, I can help you with that request.",
        "The capital of France is Paris. Let me know if you need anything else!",
        "Here is a short essay about climate change and its effects on the world.",
    ):
        assert not words(generic) & PERSONA_MARKERS, generic


def test_replies_are_short_and_stats_add_up(convs):
    lengths = [len(r.split()) for r in replies(convs)]
    assert min(lengths) >= 3 and max(lengths) <= 50
    assert 10 <= sum(lengths) / len(lengths) <= 30
    stats = describe(convs)
    assert stats["conversations"] == len(convs)
    assert sum(stats["turns"].values()) == sum(stats["topics"].values()) == len(convs)
    assert stats["mean_reply_words"] == pytest.approx(sum(lengths) / len(lengths))
    assert stats["mean_conversation_chars"] > 0
