"""The tiny model's behavioural evaluation: does it hold a conversation it has never seen?

The held-out cases (corpus.heldout_cases) are paraphrases that never occur in the training corpus,
single questions and three-turn conversations. They are played through tenshu's own engine, the
way `tenshu chat` and the server will run the model, and every reply is checked:

* ends its turn: generation stopped on the end-of-turn token, not at the token limit;
* stays in persona: the reply contains at least one of the persona's marker words
  (persona.PERSONA_MARKERS, whole words, any case);
* no degenerate repetition: the reply is not empty and no three-word sequence occurs three or
  more times in it.

A reply passes when all three hold; a three-turn conversation passes when all its replies do.

Reported beside the pass rate, not part of it: whether a reply is on topic, i.e. made of the
sentences of the topic asked about (corpus.reply_topic; a follow-up belongs to the topic before
it, a closing turn may be thanked or farewelled, and any decline answers any out-of-scope
request). A model this small keeps its voice far better than it understands new wordings, and
the figure says how much.
"""

from __future__ import annotations

import re
from collections import Counter

from tenshu.engine import LLM, SamplingParams
from tenshu.learn import corpus, persona

MAX_REPLY_TOKENS = 96
_WORD = re.compile(r"[a-z']+")


def check_reply(text: str, finish_reason: str | None) -> dict[str, bool]:
    words = _WORD.findall(text.lower())
    trigrams = Counter(zip(words, words[1:], words[2:], strict=False))
    checks = {
        "ends_turn": finish_reason == "stop",
        "in_persona": any(w in persona.PERSONA_MARKERS for w in words),
        "no_repetition": bool(words) and max(trigrams.values(), default=0) < 3,
    }
    checks["passed"] = all(checks.values())
    return checks


def on_topic(text: str, topic: str, turn: int) -> bool:
    """Turns 0 and 1 of a held-out case are about its topic; turn 2 closes the chat."""
    got = corpus.reply_topic(text)
    if turn >= 2:
        return got in ("thanks", "farewell")
    return got == topic or (got is not None and corpus.out_of_scope(got)
                            and corpus.out_of_scope(topic))


def evaluate_chat(llm: LLM, temperature: float = 0.0, seed: int = 0) -> dict:
    """Play every held-out case through the engine; return pass rates and the transcripts."""
    cases = corpus.heldout_cases()
    conversations: list[list[dict]] = [[] for _ in cases]
    checks: list[list[dict]] = [[] for _ in cases]
    context = llm.engine.max_model_len
    for turn in range(max(len(c.turns) for c in cases)):
        active = [i for i, c in enumerate(cases) if turn < len(c.turns)]
        for i in active:
            conversations[i].append({"role": "user", "content": cases[i].turns[turn]})
        # A reply may use what the context has left; a conversation that outgrew the context
        # (long rambling replies) fails its remaining turns instead of stopping the evaluation.
        prompts = {i: llm.engine.apply_chat_template(conversations[i]) for i in active}
        room = {i: context - len(prompts[i]) for i in active}
        fits = [i for i in active if room[i] > 0]
        params = [
            SamplingParams(temperature=temperature, seed=seed * 10_000 + i * 10 + turn,
                           max_tokens=min(MAX_REPLY_TOKENS, room[i]))
            for i in fits
        ]
        # the prompts are templated once, above, and generated from their token ids
        outputs = llm.generate([{"prompt_token_ids": prompts[i]} for i in fits], params) if fits else []
        replies = {i: (o.outputs[0].text, o.outputs[0].finish_reason)
                   for i, o in zip(fits, outputs, strict=True)}
        for i in active:
            text, finish = replies.get(i, ("", "context"))
            conversations[i].append({"role": "assistant", "content": text})
            check = check_reply(text, finish)
            check["on_topic"] = on_topic(text, cases[i].topic, turn)
            checks[i].append(check)

    def rate(items: list[dict], key: str) -> float:
        return round(sum(c[key] for c in items) / max(len(items), 1), 4)

    single = [c[0] for c, case in zip(checks, cases, strict=True) if len(case.turns) == 1]
    multi = [c for c, case in zip(checks, cases, strict=True) if len(case.turns) > 1]
    replies = [c for per_case in checks for c in per_case]
    return {
        "temperature": temperature,
        "cases": len(cases),
        "replies": len(replies),
        "single_turn_pass": rate(single, "passed"),
        "multi_turn_pass": round(sum(all(c["passed"] for c in m) for m in multi) / max(len(multi), 1), 4),
        **{key: rate(replies, key)
           for key in ("ends_turn", "in_persona", "no_repetition", "passed", "on_topic")},
        "transcripts": [
            {"topic": case.topic, "messages": conv, "checks": chk}
            for case, conv, chk in zip(cases, conversations, checks, strict=True)
        ],
    }


def corpus_on_topic(llm: LLM, seed: int, count: int = 100) -> float:
    """On-topic rate for single-turn chats drawn fresh from the corpus generator (another seed:
    the training wordings, in combinations mostly unseen). Against the held-out paraphrases'
    rate it separates "did not learn the topics" from "does not understand new words"."""
    chats = [c for c in corpus.generate_corpus(count * 4, seed=seed + 7919)
             if len(c.messages) == 2][:count]
    outputs = llm.chat([[c.messages[0]] for c in chats],
                        SamplingParams(temperature=0, max_tokens=MAX_REPLY_TOKENS))
    hits = [on_topic(o.outputs[0].text, c.topic, 0) for o, c in zip(outputs, chats, strict=True)]
    return round(sum(hits) / max(len(hits), 1), 4)
