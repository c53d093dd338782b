"""Memory over HTTP on a live server: uploads (a PDF and a DOCX made here), their status,
search, and chat requests that retrieve — named by a header, a key or a route — answered with
their sources in each protocol, through the official clients. Cross-user isolation of every
memory endpoint is in test_isolation.py."""

from __future__ import annotations

import io
import json
import time

import anthropic
import httpx
import ollama
import openai
import pytest

from tenshu.config.routing import RouteSpec
from tests.api.live import live_server

NOTE = (b"# Travel\n\n## Passports\n\nThe passports are in the blue folder in the desk drawer."
        b"\n\n## Insurance\n\nThe travel insurance number is TRV-88231.\n")


def pdf_bytes() -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    for text in ("The boiler is serviced every October by Hansen Heating.",
                 "The boiler pressure should read between 1 and 1.5 bar."):
        pdf.add_page()
        pdf.set_font("helvetica", size=12)
        pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


def docx_bytes() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Garden", level=1)
    document.add_heading("Roses", level=2)
    document.add_paragraph("Prune the roses in late February, above an outward bud.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("memory") / "state.db",
                     tiers=(("local", ("tenshu-tiny",)),),
                     routes=(RouteSpec("assistant", tier="local", memory=("notes",)),)) as live:
        base = live.base_url + "/tenshu/v1/memory/collections/notes/documents"
        for name, data in (("travel.md", NOTE), ("boiler.pdf", pdf_bytes()),
                           ("garden.docx", docx_bytes())):
            r = httpx.post(base, params={"wait": "true"}, headers=live.headers(), timeout=120,
                           files={"file": (name, data)})
            assert r.status_code == 201 and r.json()["status"] == "ready", r.text
        yield live


def api(live, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, live.base_url + "/tenshu/v1/memory" + path,
                         headers=live.headers(), timeout=120, **kwargs)


def test_search_answers_with_where_each_hit_is(live):
    r = api(live, "POST", "/search", json={"query": "when is the boiler serviced",
                                           "collection": "notes", "k": 3})
    assert r.status_code == 200, r.text
    best = r.json()["hits"][0]
    assert (best["source"], best["page"]) == ("boiler.pdf", 1)
    assert "October" in best["text"]
    assert set(best) >= {"source", "title", "section", "page", "text", "score", "chunk_id"}
    roses = api(live, "POST", "/search", json={"query": "pruning roses",
                                               "collection": ["notes"]}).json()["hits"][0]
    assert (roses["source"], roses["section"]) == ("garden.docx", "Garden > Roses")


def test_documents_are_listed_with_their_status(live):
    docs = api(live, "GET", "/collections/notes/documents").json()["data"]
    assert {d["source"]: (d["status"], d["kind"]) for d in docs} == {
        "boiler.pdf": ("ready", "pdf"), "garden.docx": ("ready", "docx"),
        "travel.md": ("ready", "markdown")}
    collection = api(live, "GET", "/collections/notes").json()
    assert collection["documents"] == 3 and collection["embedder"] == "all-minilm-l6-v2"


def test_an_upload_is_indexed_in_the_background(live):
    r = api(live, "POST", "/collections/later/documents",
            files={"file": ("later.md", b"# Later\n\nThe spare key is with the neighbour.")})
    assert r.status_code == 202 and r.json()["status"] in ("pending", "indexing", "ready")
    doc = r.json()["id"]
    deadline = time.monotonic() + 120
    while (status := api(live, "GET", f"/collections/later/documents/{doc}").json()["status"]) \
            in ("pending", "indexing") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == "ready"
    # the same file again is left as it is; a damaged one fails with its reason
    assert api(live, "POST", "/collections/later/documents", params={"wait": "true"}, files={
        "file": ("later.md", b"# Later\n\nThe spare key is with the neighbour.")}
    ).json()["id"] == doc
    bad = api(live, "POST", "/collections/later/documents", params={"wait": "true"},
              files={"file": ("scan.pdf", b"%PDF-1.7 not really")})
    assert bad.status_code == 201 and bad.json()["status"] == "failed"
    assert "PDF" in bad.json()["error"]
    empty = api(live, "POST", "/collections/later/documents", files={"file": ("e.md", b"")})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "file"
    assert api(live, "DELETE", "/collections/later").json()["documents"] == 2


def test_openai_chat_with_memory_names_its_sources(live):
    client = openai.OpenAI(base_url=live.base_url + "/v1", api_key=live.key)
    raw = client.chat.completions.with_raw_response.create(
        model="tenshu-tiny", max_tokens=4, extra_headers={"x-tenshu-memory": "notes"},
        messages=[{"role": "user", "content": "Where are the passports?"}])
    reply = raw.parse()
    sources = reply.model_extra["sources"]
    assert sources[0]["source"] == "travel.md" and sources[0]["section"] == "Travel > Passports"
    assert "chunk=" in raw.headers["x-tenshu-sources"]
    assert raw.headers["x-tenshu-sources"].count("chunk=") == len(sources)
    stream = client.chat.completions.create(
        model="tenshu-tiny", max_tokens=4, stream=True,
        extra_headers={"x-tenshu-memory": "notes"},
        messages=[{"role": "user", "content": "Where are the passports?"}])
    first = next(iter(stream))
    assert first.model_extra["sources"] == sources
    stream.close()


def test_anthropic_and_ollama_replies_carry_sources(live):
    client = anthropic.Anthropic(base_url=live.base_url, api_key=live.key)
    message = client.messages.create(
        model="tenshu-tiny", max_tokens=4, extra_headers={"x-tenshu-memory": "notes"},
        messages=[{"role": "user", "content": "What is the boiler pressure?"}])
    assert message.sources[0]["source"] == "boiler.pdf"
    with client.messages.stream(model="tenshu-tiny", max_tokens=4,
                                extra_headers={"x-tenshu-memory": "notes"},
                                messages=[{"role": "user", "content": "boiler pressure"}]
                                ) as stream:
        start = next(iter(stream))
        assert start.message.sources[0]["source"] == "boiler.pdf"
    # Ollama's client keeps only the fields it knows: it still gets its answer...
    answer = ollama.Client(host=live.base_url, headers={
        **live.headers(), "x-tenshu-memory": "notes"}).chat(
        model="tenshu-tiny", messages=[{"role": "user", "content": "roses"}],
        options={"num_predict": 4})
    assert answer.done
    # ...and the sources are on the reply, and on the last line of a stream
    body = {"model": "tenshu-tiny", "messages": [{"role": "user", "content": "roses"}],
            "options": {"num_predict": 4}}
    headers = {**live.headers(), "x-tenshu-memory": "notes"}
    whole = httpx.post(live.base_url + "/api/chat", json={**body, "stream": False},
                       headers=headers, timeout=60).json()
    assert whole["sources"][0]["source"] == "garden.docx"
    lines = httpx.post(live.base_url + "/api/chat", json=body, headers=headers,
                       timeout=60).text.splitlines()
    assert json.loads(lines[-1])["sources"] == whole["sources"]


def test_a_route_or_a_key_turns_memory_on(live):
    client = openai.OpenAI(base_url=live.base_url + "/v1", api_key=live.key)
    routed = client.chat.completions.create(
        model="assistant", max_tokens=4,
        messages=[{"role": "user", "content": "travel insurance number"}])
    assert routed.model_extra["sources"][0]["source"] == "travel.md"
    plain = client.chat.completions.create(
        model="tenshu-tiny", max_tokens=4,
        messages=[{"role": "user", "content": "travel insurance number"}])
    assert "sources" not in plain.model_extra
    off = client.chat.completions.create(
        model="assistant", max_tokens=4, extra_headers={"x-tenshu-memory": "none"},
        messages=[{"role": "user", "content": "travel insurance number"}])
    assert "sources" not in off.model_extra
    key = live.server.store.keys.create(f"mem-{time.monotonic_ns()}", memory=("notes",))[1]
    keyed = openai.OpenAI(base_url=live.base_url + "/v1", api_key=key).chat.completions.create(
        model="tenshu-tiny", max_tokens=4,
        messages=[{"role": "user", "content": "travel insurance number"}])
    assert keyed.model_extra["sources"][0]["source"] == "travel.md"


def test_a_missing_collection_is_a_404_in_each_protocol(live):
    headers = {**live.headers(), "x-tenshu-memory": "nowhere"}
    body = {"model": "tenshu-tiny", "max_tokens": 4,
            "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(live.base_url + "/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 404 and "nowhere" in r.json()["error"]["message"]
    r = httpx.post(live.base_url + "/v1/messages", json=body, headers=headers)
    assert r.status_code == 404 and r.json()["type"] == "error"
    r = httpx.post(live.base_url + "/api/chat", json={**body, "stream": False}, headers=headers)
    assert r.status_code == 404 and "nowhere" in r.json()["error"]


def test_a_correction_comes_back_first_in_the_next_answer(live):
    headers = {**live.headers(), "x-tenshu-memory": "notes", "x-tenshu-conversation": "new"}
    ask = {"model": "tenshu-tiny", "max_tokens": 4,
           "messages": [{"role": "user", "content": "Where are the passports kept?"}]}
    first = httpx.post(live.base_url + "/v1/chat/completions", json=ask, headers=headers,
                       timeout=60)
    fb = httpx.post(live.base_url + "/tenshu/v1/feedback", headers=live.headers(), json={
        "kind": "correction", "turn_id": first.headers["x-tenshu-turn"],
        "text": "The passports moved to the safe in the bedroom."})
    assert fb.status_code == 200, fb.text
    assert len(fb.json()["memory_chunks"]) == 1
    again = httpx.post(live.base_url + "/v1/chat/completions", json=ask, timeout=60,
                       headers={**live.headers(), "x-tenshu-memory": "notes"}).json()
    assert again["sources"][0]["source"] == "correction"
    assert again["sources"][1]["source"] == "travel.md"


def test_the_memory_api_is_in_the_openapi_document(live):
    paths = httpx.get(live.base_url + "/openapi.json", headers=live.headers()).json()["paths"]
    assert {"/tenshu/v1/memory/search", "/tenshu/v1/memory/collections",
            "/tenshu/v1/memory/collections/{name}/documents"} <= set(paths)


def test_excerpts_never_push_the_prompt_past_the_window(live):
    """Text the model's tokenizer splits finely (hex here: ~1 token per character or two,
    where the budget guesses four) is cut to what fits tenshu-tiny's 512 tokens."""
    import secrets

    dense = "\n\n".join(f"## Part {i}\n\nkey material " + " ".join(
        secrets.token_hex(6) for _ in range(40)) for i in range(8)).encode()
    r = api(live, "POST", "/collections/dense/documents", params={"wait": "true"},
            files={"file": ("dense.md", b"# Dense\n\n" + dense)})
    assert r.json()["status"] == "ready", r.text
    for max_tokens in (None, 64):
        body = {"model": "tenshu-tiny", "messages": [{"role": "user",
                                                      "content": "key material part 3"}]}
        if max_tokens:
            body["max_tokens"] = max_tokens
        reply = httpx.post(live.base_url + "/v1/chat/completions", json=body, timeout=120,
                           headers={**live.headers(), "x-tenshu-memory": "dense"})
        assert reply.status_code == 200, reply.text
        assert len(reply.json().get("sources", [])) == \
            reply.headers.get("x-tenshu-sources", "").count("chunk=")
