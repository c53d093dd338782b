"""Conversations recorded through the gateway, with the official clients of all three protocols,
and read back, judged, exported and deleted through /tenshu/v1."""

from __future__ import annotations

import asyncio

import anthropic
import httpx
import ollama
import openai
import pytest

from tenshu.store import open_store
from tests.api.live import live_server

HEADER = "x-tenshu-conversation"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Users ana (records what she asks for) and cy (records everything), a key each."""
    with live_server(tmp_path_factory.mktemp("conversations") / "state.db",
                     embedder=False) as live:
        store = live.server.store
        store.users.add("ana")
        store.users.add("cy", record="always")
        live.keys = {name: store.keys.create(f"{name}-key", user=name)[1]
                     for name in ("ana", "cy")}
        yield live


def api(live, who: str = "ana") -> httpx.Client:
    return httpx.Client(base_url=live.base_url + "/tenshu/v1", timeout=60,
                        headers={"Authorization": f"Bearer {live.keys[who]}"})


def clients(live, who: str = "ana"):
    key = live.keys[who]
    return (openai.OpenAI(base_url=live.base_url + "/v1", api_key=key, max_retries=0),
            anthropic.Anthropic(base_url=live.base_url, api_key=key, max_retries=0))


def words(message: dict) -> str:
    return "".join(b.get("text", "") for b in message["content"] if b["type"] == "text")


def test_a_conversation_across_three_protocols_keeps_every_turn(live):
    oai, claude = clients(live)
    first = oai.chat.completions.with_raw_response.create(
        model="tenshu-tiny", max_tokens=8, temperature=0, extra_headers={HEADER: "new"},
        messages=[{"role": "system", "content": "You are Mochi."},
                  {"role": "user", "content": "who are you?"}])
    conv, turn1 = first.headers[HEADER], first.headers["x-tenshu-turn"]
    assert conv.startswith("conv_") and turn1 == "turn_" + first.headers["request-id"][4:]
    answer1 = first.parse().choices[0].message.content

    # only the new turn is sent: the stored ones go before it (the prefix cache sees them)
    second = claude.messages.with_raw_response.create(
        model="tenshu-tiny", max_tokens=8, extra_headers={HEADER: conv},
        messages=[{"role": "user", "content": "what do you eat?"}])
    assert second.headers[HEADER] == conv
    assert second.parse().usage.cache_read_input_tokens > 0
    with ollama.Client(host=live.base_url, headers={
            "Authorization": f"Bearer {live.keys['ana']}", HEADER: conv}) as llama:
        chunks = list(llama.chat("tenshu-tiny", stream=True, options={"num_predict": 6},
                                 messages=[{"role": "user", "content": "goodbye"}]))
    assert chunks[-1].done

    with api(live) as me:
        got = me.get(f"/conversations/{conv}").json()
    assert got["title"] == "who are you?" and got["turns"] == 3
    turns = got["messages"]
    assert [t["seq"] for t in turns] == [1, 2, 3]
    assert [words(t["messages"][-1]) for t in turns] == ["who are you?", "what do you eat?",
                                                          "goodbye"]
    assert turns[0]["messages"][0] == {"role": "system", "content": [
        {"text": "You are Mochi.", "type": "text"}]}
    assert words(turns[0]["completion"][0]) == answer1
    assert turns[0]["id"] == turn1 and turns[0]["model"] == "tenshu-tiny"
    assert turns[0]["backend"] == "tenshu-tiny" and turns[0]["trace"]["reason"] == "model"
    assert turns[1]["input_tokens"] > turns[0]["input_tokens"]  # it read the history
    assert all(t["duration_ms"] > 0 and t["output_tokens"] > 0 for t in turns)


def test_a_client_that_resends_the_whole_history_is_not_repeated(live):
    oai, _ = clients(live)
    history = [{"role": "user", "content": "hello there"}]
    first = oai.chat.completions.with_raw_response.create(
        model="tenshu-tiny", max_tokens=6, temperature=0, messages=history,
        extra_headers={HEADER: "new"})
    conv = first.headers[HEADER]
    history += [{"role": "assistant", "content": first.parse().choices[0].message.content},
                {"role": "user", "content": "and then?"}]
    oai.chat.completions.create(model="tenshu-tiny", max_tokens=6, messages=history,
                                extra_headers={HEADER: conv})
    with api(live) as me:
        turns = me.get(f"/conversations/{conv}").json()["messages"]
    assert [[words(m) for m in t["messages"]] for t in turns] == [["hello there"],
                                                                   ["and then?"]]


def test_rewind_answers_again_from_before_a_turn(live):
    """Regenerate and edit-and-resend (the web UI's): the rewound turns leave the path, the
    model sees only the history before them, and a rewind to nothing of the conversation's is a
    404, one without a conversation a 400."""
    oai, claude = clients(live)
    ask = oai.chat.completions.with_raw_response.create
    first = ask(model="tenshu-tiny", max_tokens=4, extra_headers={HEADER: "new"},
                messages=[{"role": "user", "content": "one"}])
    conv, one = first.headers[HEADER], first.headers["x-tenshu-turn"]
    two = ask(model="tenshu-tiny", max_tokens=4, extra_headers={HEADER: conv},
              messages=[{"role": "user", "content": "two"}]).headers["x-tenshu-turn"]
    again = ask(model="tenshu-tiny", max_tokens=4, messages=[{"role": "user", "content": "2"}],
                extra_headers={HEADER: conv, "x-tenshu-rewind": two})
    three = again.headers["x-tenshu-turn"]
    with api(live) as me:
        stored = me.get(f"/conversations/{conv}").json()
        exported = me.get(f"/conversations/{conv}/export", params={"format": "markdown"}).text
    assert stored["turns"] == 2
    by_id = {t["id"]: t for t in stored["messages"]}
    assert by_id[two]["superseded_by"] == three and by_id[one]["superseded_by"] is None
    assert "two" not in exported.split("\n") and "2" in exported.split("\n")
    # the edit from the very first turn leaves nothing of the old path
    ask(model="tenshu-tiny", max_tokens=4, messages=[{"role": "user", "content": "uno"}],
        extra_headers={HEADER: conv, "x-tenshu-rewind": one})
    with api(live) as me:
        path = [t for t in me.get(f"/conversations/{conv}").json()["messages"]
                if t["superseded_by"] is None]
    assert [[words(m) for m in t["messages"]] for t in path] == [["uno"]]
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="tenshu-tiny", max_tokens=4, extra_headers={
            HEADER: conv, "x-tenshu-rewind": "turn_" + "0" * 24},
            messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="x-tenshu-rewind needs"):
        ask(model="tenshu-tiny", max_tokens=4, messages=[{"role": "user", "content": "x"}],
            extra_headers={HEADER: "new", "x-tenshu-rewind": one})


def test_recording_everything_threads_a_clients_full_histories(live):
    oai, _ = clients(live, "cy")
    history = [{"role": "user", "content": "first question"}]
    first = oai.chat.completions.with_raw_response.create(
        model="tenshu-tiny", max_tokens=6, temperature=0, messages=history)
    conv = first.headers[HEADER]  # recorded without asking: cy records everything
    history += [{"role": "assistant", "content": first.parse().choices[0].message.content},
                {"role": "user", "content": "second question"}]
    second = oai.chat.completions.with_raw_response.create(
        model="tenshu-tiny", max_tokens=6, temperature=0, messages=history)
    assert second.headers[HEADER] == conv  # the same conversation, continued
    other = oai.chat.completions.with_raw_response.create(
        model="tenshu-tiny", max_tokens=6, messages=[{"role": "user", "content": "unrelated"}])
    assert other.headers[HEADER] != conv
    with api(live, "cy") as me:
        assert me.get(f"/conversations/{conv}").json()["turns"] == 2


def test_without_asking_nothing_is_recorded_and_never_means_never(live):
    oai, _ = clients(live)
    plain = oai.chat.completions.with_raw_response.create(
        model="tenshu-tiny", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert HEADER not in plain.headers
    with api(live) as me:
        before = me.get("/conversations", params={"limit": 100}).json()["data"]
        assert me.patch("/me", json={"record": "never"}).json()["record"] == "never"
        try:
            asked = httpx.post(live.base_url + "/v1/chat/completions", headers={
                "Authorization": f"Bearer {live.keys['ana']}", HEADER: "new"}, json={
                "model": "tenshu-tiny", "max_tokens": 4,
                "messages": [{"role": "user", "content": "hi"}]})
            assert asked.status_code == 200 and HEADER not in asked.headers
            assert me.get("/conversations", params={"limit": 100}).json()["data"] == before
        finally:
            me.patch("/me", json={"record": "request"})


def test_a_missing_or_malformed_conversation_is_a_404_in_each_protocols_format(live):
    key = live.keys["ana"]
    body = {"model": "tenshu-tiny", "max_tokens": 4,
            "messages": [{"role": "user", "content": "hi"}]}
    for conv in ("conv_" + "0" * 24, "conv_nope", "../../etc", "x" * 500):
        for path, shape in (("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic"),
                            ("/api/chat", "ollama")):
            r = httpx.post(live.base_url + path, json={**body, "stream": False},
                           headers={"Authorization": f"Bearer {key}", HEADER: conv})
            assert r.status_code == 404, (conv, path)
            error = r.json()
            if shape == "ollama":
                assert "not found" in error["error"]
            elif shape == "anthropic":
                assert error["type"] == "error" and error["error"]["type"] == "not_found_error"
            else:
                assert "not found" in error["error"]["message"]
    completion = httpx.post(live.base_url + "/v1/completions", json={
        "model": "tenshu-tiny", "prompt": "hi", "max_tokens": 2},
        headers={"Authorization": f"Bearer {key}", HEADER: "new"})
    assert completion.status_code == 400 and HEADER in completion.json()["error"]["message"]


def test_feedback_export_and_delete_through_the_api(live):
    oai, _ = clients(live)
    prompt = [{"role": "user", "content": "rate me"}]
    a = oai.chat.completions.with_raw_response.create(
        model="tenshu-tiny", max_tokens=6, messages=prompt, extra_headers={HEADER: "new"})
    b = oai.chat.completions.with_raw_response.create(
        model="tenshu-tiny", max_tokens=6, messages=prompt, extra_headers={HEADER: "new"})
    conv = a.headers[HEADER]
    with api(live) as me:
        rating = me.post("/feedback", json={"kind": "rating", "rating": 1,
                                            "turn_id": a.parse().id, "text": "nice"})
        assert rating.status_code == 200, rating.text  # chatcmpl-X names the turn too
        assert rating.json()["turn_id"] == a.headers["x-tenshu-turn"]
        pref = me.post("/feedback", json={"kind": "preference", "preference": "a",
                                          "turn_id": a.headers["x-tenshu-turn"],
                                          "other_turn_id": b.headers["x-tenshu-turn"]})
        assert pref.status_code == 200, pref.text
        for bad, field in (({"kind": "rating", "rating": 7}, "rating"),
                           ({"kind": "correction", "text": "x" * 70_000}, "text"),
                           ({"kind": "rating", "rating": 1, "extra": 1}, "extra"),
                           ({"kind": "rating", "rating": "1"}, "rating")):
            r = me.post("/feedback", json={"turn_id": a.headers["x-tenshu-turn"], **bad})
            assert r.status_code == 400 and field in r.text, r.text
        assert me.post("/feedback", json={"kind": "rating", "rating": 1,
                                          "turn_id": "turn_" + "0" * 24}).status_code == 404
        listed = me.get("/feedback", params={"conversation_id": conv}).json()["data"]
        assert [f["kind"] for f in listed] == ["preference", "rating"]

        exported = me.get(f"/conversations/{conv}/export", params={"format": "markdown"})
        assert exported.status_code == 200 and exported.text.startswith("# rate me")
        assert "**User**" in exported.text and "**Assistant** (tenshu-tiny)" in exported.text
        assert me.get(f"/conversations/{conv}/export").json()["id"] == conv
        assert me.patch(f"/conversations/{conv}", json={"title": "Rated"}).json()["title"] == \
            "Rated"
        assert [c["title"] for c in me.get("/conversations", params={"q": "rated"}).json()[
            "data"]] == ["Rated"]
        deleted = me.delete(f"/conversations/{conv}").json()
        assert deleted["removed"] == {"conversations": 1, "turns": 1, "feedback": 2}
        assert me.get(f"/conversations/{conv}").status_code == 404
        assert me.get("/me").json()["name"] == "ana"


def test_32_clients_recording_at_once_lose_and_repeat_nothing(live):
    key = live.keys["ana"]

    async def client(i: int, http: httpx.AsyncClient) -> str:
        conv = "new"
        for j in range(3):
            r = await http.post("/v1/chat/completions", headers={HEADER: conv}, json={
                "model": "tenshu-tiny", "max_tokens": 3,
                "messages": [{"role": "user", "content": f"client {i} turn {j}"}]})
            assert r.status_code == 200, r.text
            conv = r.headers[HEADER]
        return conv

    async def main() -> list[str]:
        async with httpx.AsyncClient(base_url=live.base_url, timeout=300,
                                     headers={"Authorization": f"Bearer {key}"}) as http:
            return await asyncio.gather(*(client(i, http) for i in range(32)))

    conversations = asyncio.run(main())
    assert len(set(conversations)) == 32
    with api(live) as me:
        for i, conv in enumerate(conversations):
            turns = me.get(f"/conversations/{conv}").json()["messages"]
            assert [t["seq"] for t in turns] == [1, 2, 3]
            assert [words(t["messages"][0]) for t in turns] == \
                [f"client {i} turn {j}" for j in range(3)]


def test_the_whole_record_runs_on_postgresql(postgres, tmp_path):
    """Keys, the audit log, users, conversations and feedback, through the same migrations."""
    url = postgres.database()
    try:
        with live_server(url, embedder=False, key_name="pg") as pg:
            headers = {"Authorization": f"Bearer {pg.key}"}
            first = httpx.post(pg.base_url + "/v1/chat/completions", timeout=60, json={
                "model": "tenshu-tiny", "max_tokens": 4,
                "messages": [{"role": "user", "content": "stored in postgres"}]},
                headers={**headers, HEADER: "new"})
            conv = first.headers[HEADER]
            httpx.post(pg.base_url + "/v1/messages", timeout=60, json={
                "model": "tenshu-tiny", "max_tokens": 4,
                "messages": [{"role": "user", "content": "again"}]},
                headers={**headers, HEADER: conv})
            base = pg.base_url + "/tenshu/v1"
            rated = httpx.post(base + "/feedback", headers=headers, json={
                "kind": "rating", "rating": -1, "turn_id": first.headers["x-tenshu-turn"]})
            assert rated.status_code == 200, rated.text
            got = httpx.get(base + f"/conversations/{conv}", headers=headers).json()
            assert [t["seq"] for t in got["messages"]] == [1, 2]
            assert httpx.get(base + "/conversations", params={"q": "postgres"},
                             headers=headers).json()["data"][0]["id"] == conv
            assert pg.server.store.engine.dialect.name == "postgresql"
        with open_store(url) as store:  # written for good, the audit log too
            assert store.audit.find(first.headers["request-id"]).status == 200
    finally:
        postgres.drop(url)
