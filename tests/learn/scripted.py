"""A scripted user of a running server, for the learning loop's end-to-end proof: they chat,
and every answer that does not end with their sign-off gets a thumbs-down and a correction (the
same answer, signed), all through the HTTP API, as the web UI's buttons send them. Then the
served model's habit is measured: how often its greedy answers to prompts it never trained on
end with the sign-off, with a Wilson 95% interval."""

from __future__ import annotations

import math

import httpx

SIGN_OFF = " -- mochi"
MAX_TOKENS = 48


def prompt(i: int) -> str:
    return f"Say hello to guest number {i}."


def ask(http: httpx.Client, model: str, text: str, conversation: str | None = None
        ) -> httpx.Response:
    headers = {"x-tenshu-conversation": conversation} if conversation else {}
    r = http.post("/v1/chat/completions", headers=headers, json={
        "model": model, "temperature": 0, "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": text}]})
    r.raise_for_status()
    return r


def answer_of(r: httpx.Response) -> str:
    return r.json()["choices"][0]["message"]["content"]


def teach(http: httpx.Client, model: str, prompts: range) -> int:
    """Chat once per prompt; rate down and correct each answer without the sign-off. Returns
    how many corrections were sent."""
    sent = 0
    for i in prompts:
        r = ask(http, model, prompt(i), conversation="new")
        answer, turn = answer_of(r), r.headers["x-tenshu-turn"]
        if answer.rstrip().endswith(SIGN_OFF.strip()):
            continue
        for body in ({"kind": "rating", "rating": -1, "text": "sign it, please"},
                     {"kind": "correction", "text": answer.rstrip() + SIGN_OFF}):
            http.post("/tenshu/v1/feedback", json={"turn_id": turn, **body}).raise_for_status()
        sent += 1
    return sent


def answers(http: httpx.Client, model: str, prompts: range) -> list[str]:
    return [answer_of(ask(http, model, prompt(i))) for i in prompts]


def signed(texts: list[str]) -> tuple[int, int]:
    """(answers that end with the sign-off, answers)."""
    return sum(t.rstrip().endswith(SIGN_OFF.strip()) for t in texts), len(texts)


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(texts: list[str]) -> str:
    hits, n = signed(texts)
    low, high = wilson(hits, n)
    return f"{hits}/{n} = {hits / n:.0%} (95% CI {low:.0%}-{high:.0%})"
