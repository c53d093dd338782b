"""The synthetic chat corpus behind `tenshu train tiny`.

`tenshu train tiny` trains a ~3M-parameter language model from scratch on the user's machine,
and tenshu ships that model as its offline default chat model. This module writes everything the
model will ever read: short conversations with Mochi, the castle cat whose words are tables in
persona.py. It parses those tables and composes conversations from them, so the text is regular
enough for a tiny model to learn in minutes, yet varied enough that it has to learn the intent
behind a message rather than memorise strings. dataset.py renders and tokenizes them;
evaluate.py plays `heldout_cases()`, whose wordings never occur in any generated corpus, and
checks replies with `reply_topic()` and `out_of_scope()`.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

from tenshu.learn.persona import HELDOUT_CHATS, SYSTEM_PROMPTS, TABLES


def _rows(text: str) -> list[str]:
    """Logical lines of a table: indented continuation lines joined onto the line above."""
    lines: list[str] = []
    for line in text.strip().splitlines():
        if line.startswith("  "):
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return lines


def _sections(text: str) -> dict[str, tuple[frozenset[str], dict[str, list[str]]]]:
    """Section name -> (flags, rows by key); persona.py describes the table format."""
    sections: dict[str, tuple[frozenset[str], dict[str, list[str]]]] = {}
    for line in _rows(text):
        if line.startswith("# "):
            name, *flags = line[2:].split()
            rows: dict[str, list[str]] = {}
            sections[name] = (frozenset(flags), rows)
        else:
            key, _, items = line.partition(" ")
            rows.setdefault(key, []).extend(i.strip() for i in items.split("|") if i.strip())
    return sections


@dataclass(frozen=True)
class _Topic:
    name: str
    flags: frozenset[str]
    asks: tuple[str, ...]
    first: tuple[str, ...]
    second: tuple[str, ...]
    more: tuple[str, ...]
    why: tuple[str, ...]
    heldout: tuple[str, ...]


_SECTIONS = _sections(TABLES)
_SHARED = _SECTIONS.pop("shared")[1]
_SLOTS = _SECTIONS.pop("slots")[1]


def _topic(name: str, flags: frozenset[str], rows: dict[str, list[str]]) -> _Topic:
    def get(key: str, shared: str = "") -> tuple[str, ...]:
        extra = _SHARED[shared] if shared and "oos" in flags else []
        return tuple(rows.get(key, []) + extra)

    return _Topic(
        name, flags, get("U"), get("A"), get("B", "suggest"), get("M", "oosmore"),
        get("W", "ooswhy"), get("H"),
    )  # fmt: skip


_TOPICS = {name: _topic(name, *section) for name, section in _SECTIONS.items()}
_CLOSING = (_TOPICS["thanks"], _TOPICS["farewell"])


def _weight(topic: _Topic) -> float:
    # Who-are-you and hello are what a person trying the model types first, so they come up
    # more; a chat can open with a bare "thanks"/"bye" now and then, but rarely.
    special = {"identity": 3.0, "greeting": 2.0, "farewell": 0.5, "thanks": 0.5}
    return special.get(topic.name, 0.6 if "oos" in topic.flags else 1.0)


_OPENING = list(_TOPICS.values())  # for one-turn chats
_CONTENT = [t for t in _OPENING if "closing" not in t.flags]  # for chats that go on
_LATER = [t for t in _CONTENT if t.name != "greeting"]  # nobody says hello mid-chat
_OPENING_W, _CONTENT_W = [_weight(t) for t in _OPENING], [_weight(t) for t in _CONTENT]
_TURNS, _TURNS_CUM = (1, 2, 3, 4), (45, 70, 90, 100)  # 45% / 25% / 20% / 10%
_FOLLOW_KINDS, _FOLLOW_W = ("more", "why", "really"), (5, 3, 2)


@dataclass(frozen=True)
class Conversation:
    messages: tuple[dict[str, str], ...]  # optional system, then user/assistant pairs
    topic: str  # topic of the first user turn


@dataclass(frozen=True)
class EvalCase:
    turns: tuple[str, ...]  # user messages, played one at a time
    topic: str


def heldout_cases() -> list[EvalCase]:
    """Fixed evaluation prompts: single turns, then three-turn chats. None is ever generated."""
    cases = [EvalCase((text,), t.name) for t in _TOPICS.values() for text in t.heldout]
    for line in _rows(HELDOUT_CHATS):
        name, _, turns = line.partition(":")
        cases.append(EvalCase(tuple(p.strip() for p in turns.split("|")), name.strip()))
    return cases


_OWN_SENTENCES = {t.name: t.first + t.second + t.more + t.why for t in _TOPICS.values()}


def reply_topic(text: str) -> str | None:
    """The topic whose own sentences make up most of a reply, or None when no topic's sentence
    occurs in it. The evaluation uses it to tell an answer to the question from a fluent reply
    about something else."""
    matched = {name: sum(len(s) for s in own if s in text) for name, own in _OWN_SENTENCES.items()}
    best = max(matched, key=matched.__getitem__)
    return best if matched[best] else None


def out_of_scope(topic: str) -> bool:
    """Whether Mochi declines this topic (code, maths, news...) and points to a real model."""
    return "oos" in _TOPICS[topic].flags


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


_HELDOUT_KEYS = frozenset(_key(turn) for case in heldout_cases() for turn in case.turns)
_SLOT = re.compile(r"\{(\w+)\}")


def _fill(rng: random.Random, name: str) -> str:
    if name in ("n", "m"):
        return str(rng.randint(2, 99))
    if name == "gib":  # keyboard mash; the syllables lack x and y, which held-out mash uses
        count = rng.randint(1, 3)
        return " ".join(
            "".join(rng.choices(_SLOTS["gib"], k=rng.randint(1, 3))) for _ in range(count)
        )
    return rng.choice(_SLOTS[name])


def _vary(rng: random.Random, text: str) -> str:
    """Punctuation and capitalisation the way people actually type."""
    r = rng.random()
    if r < 0.25:
        text = text.rstrip("?!.") or text
    elif r < 0.35:
        text += "?" if text.endswith("?") else "!"
    r = rng.random()
    if r < 0.55:
        text = re.sub(r"\bi\b", "I", text).replace("mochi", "Mochi")
        text = text[0].upper() + text[1:]
    elif r < 0.6 and len(text) < 30:
        text = text.upper()
    return text


def _user(rng: random.Random, core: str, prefixes: list[str] | None = None) -> str:
    for _ in range(50):
        text = core
        if prefixes and rng.random() < 0.5:
            text = rng.choice(prefixes) + " " + text
        if "{" in text:
            text = _SLOT.sub(lambda m: _fill(rng, m[1]), text)
        text = _vary(rng, text)
        # Held-out prompts must stay unseen. The tables never produce one on purpose (the tests
        # check), so this only guards against accidents; drawing again is enough.
        if _key(text) not in _HELDOUT_KEYS:
            return text
    raise RuntimeError(f"user phrasing {core!r} keeps colliding with a held-out prompt")


def _join(rng: random.Random, opener: str, parts: list[str], closer_p: float) -> str:
    closer = rng.choice(_SHARED["closer"]) if rng.random() < closer_p else ""
    return " ".join(p for p in (opener, *parts, closer) if p)


def _maybe(rng: random.Random, pool: list[str], p: float) -> str:
    return rng.choice(pool) if rng.random() < p else ""


def _answer(rng: random.Random, topic: _Topic) -> str:
    parts = [rng.choice(topic.first)]
    if topic.second:
        parts.append(rng.choice(topic.second))
    elif "one" not in topic.flags and rng.random() < 0.4:
        other = rng.choice(topic.first)
        if other != parts[0]:
            parts.append(other)
    # Openers and closers stay occasional so the content sentence is the main signal.
    return _join(rng, _maybe(rng, _SHARED["opener"], 0.45), parts, 0.3)


def _follow_answer(rng: random.Random, topic: _Topic, kind: str, said: set[str]) -> str:
    """A reply to "tell me more"/"why?"/"really?" drawn only from the previous topic's pools
    (the model must look back to answer), preferring sentences not yet said in this chat."""
    if kind == "more":
        pool, opener = topic.more, _maybe(rng, _SHARED["moreopener"], 0.5)
    elif kind == "why":
        pool, opener = topic.why, _maybe(rng, _SHARED["whyopener"], 0.5)
    else:
        pool, opener = topic.why + topic.more, rng.choice(_SHARED["affirm"])
    fresh = [s for s in pool if s not in said] or list(pool)
    count = 2 if kind == "more" and len(fresh) > 1 and rng.random() < 0.3 else 1
    parts = rng.sample(fresh, count)
    said.update(parts)
    return _join(rng, opener, parts, 0.2)


def _next_turn(rng: random.Random, current: _Topic | None, last: bool) -> tuple[_Topic, str]:
    """The topic and kind ("new", "more", "why", "really") of a turn after the first."""
    r = rng.random()
    if last and r < 0.25:
        return rng.choices(_CLOSING, (0.4, 0.6))[0], "new"
    if not last and r < 0.1:
        return _CLOSING[0], "new"  # a mid-chat thank-you; the chat goes on
    if current is not None and r < (0.7 if last else 0.65):
        return current, rng.choices(_FOLLOW_KINDS, _FOLLOW_W)[0]
    choices = [t for t in _LATER if t is not current]
    return rng.choices(choices, [_weight(t) for t in choices])[0], "new"


def _conversation(rng: random.Random) -> Conversation:
    turns = rng.choices(_TURNS, cum_weights=_TURNS_CUM)[0]
    messages = []
    if rng.random() < 0.2:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    if turns == 1:
        first = rng.choices(_OPENING, _OPENING_W)[0]
    else:
        first = rng.choices(_CONTENT, _CONTENT_W)[0]
    current: _Topic | None = None  # what a follow-up refers to; thanks does not change it
    said: set[str] = set()
    for i in range(turns):
        topic, kind = (first, "new") if i == 0 else _next_turn(rng, current, i == turns - 1)
        if kind == "new":
            prefixes = (
                None if "noprefix" in topic.flags else _SHARED["prefix" if i == 0 else "later"]
            )
            user = _user(rng, rng.choice(topic.asks), prefixes)
            reply = _answer(rng, topic)
            if "closing" not in topic.flags:
                current = None if "nofollow" in topic.flags else topic
        else:
            user = _user(rng, rng.choice(_SHARED[kind]))
            reply = _follow_answer(rng, topic, kind, said)
        messages += ({"role": "user", "content": user}, {"role": "assistant", "content": reply})
    return Conversation(tuple(messages), first.name)


def generate_corpus(num_conversations: int, seed: int = 0) -> list[Conversation]:
    """`num_conversations` chats with Mochi; the same (count, seed) always gives the same list."""
    if num_conversations < 1:
        raise ValueError(f"num_conversations must be >= 1, got {num_conversations}")
    rng = random.Random(seed)
    return [_conversation(rng) for _ in range(num_conversations)]


def describe(conversations: list[Conversation]) -> dict:
    """Summary numbers for the training log and the run record."""
    users = [m["content"] for c in conversations for m in c.messages if m["role"] == "user"]
    replies = [m["content"] for c in conversations for m in c.messages if m["role"] == "assistant"]
    chars = sum(len(m["content"]) for c in conversations for m in c.messages)
    return {
        "conversations": len(conversations),
        "turns": dict(sorted(Counter(len(c.messages) // 2 for c in conversations).items())),
        "topics": dict(Counter(c.topic for c in conversations).most_common()),
        "with_system_prompt": sum(c.messages[0]["role"] == "system" for c in conversations),
        "distinct_user_messages": len(set(users)),
        "distinct_assistant_replies": len(set(replies)),
        "mean_reply_words": sum(len(r.split()) for r in replies) / max(1, len(replies)),
        "mean_conversation_chars": chars / max(1, len(conversations)),
    }
