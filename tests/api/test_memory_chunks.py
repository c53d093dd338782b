"""One chunk by its id (GET /tenshu/v1/memory/chunks/{id}), as a search hit or an answer's
source names it, and a collection's reindex status (GET .../collections/{name}/indexes), on a
live server: the owner reads them, a user the collection is shared with reads them, anyone else
gets the 404 a missing id gets; an id that cannot be a chunk's is a 400, never a 500."""

from __future__ import annotations

import httpx
import pytest

from tenshu.memory.reindex import _drop, _new_index
from tenshu.store.people import Principal
from tests.api.live import live_server

NOTE = (b"# Travel\n\n## Passports\n\nThe passports are in the blue folder in the desk drawer."
        b"\n\n## Insurance\n\nThe travel insurance number is TRV-88231.\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("chunks") / "state.db") as live:
        store = live.server.store
        for name in ("ana", "ben", "cy"):
            store.users.add(name, role="member")
        keys = {name: store.keys.create(f"{name}-key", user=name)[1]
                for name in ("ana", "ben", "cy")}
        client = httpx.Client(base_url=live.base_url + "/tenshu/v1/memory", timeout=120)
        doc = client.post("/collections/travel/documents", params={"wait": "true"},
                          headers=auth(keys["ana"]), files={"file": ("travel.md", NOTE)})
        assert doc.status_code == 201 and doc.json()["status"] == "ready", doc.text
        hit = client.post("/search", headers=auth(keys["ana"]), json={
            "query": "where are the passports", "collection": "travel", "k": 1}).json()["hits"][0]
        yield {"live": live, "keys": keys, "client": client, "doc": doc.json(), "hit": hit}
        client.close()


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def get(world, who: str, path: str) -> httpx.Response:
    return world["client"].get(path, headers=auth(world["keys"][who]))


def test_the_owner_reads_a_chunk_where_it_sits(world):
    hit = world["hit"]
    r = get(world, "ana", f"/chunks/{hit['chunk_id']}")
    assert r.status_code == 200, r.text
    chunk = r.json()
    assert chunk["id"] == hit["chunk_id"]
    assert chunk["text"] == hit["text"] and "blue folder" in chunk["text"]
    assert (chunk["section"], chunk["page"]) == ("Travel > Passports", None)
    assert (chunk["start"], chunk["end"]) == (hit["start"], hit["end"])
    assert chunk["document"] == {"id": world["doc"]["id"], "source": "travel.md"}
    assert chunk["collection"] == {"name": "travel", "owner": "ana", "writable": True}
    assert chunk["kind"] == "text"


def test_a_user_it_is_shared_with_reads_it_and_no_one_else(world):
    chunk_id = world["hit"]["chunk_id"]
    client, keys = world["client"], world["keys"]
    missing = get(world, "cy", f"/chunks/{chunk_id + 10_000}")
    assert missing.status_code == 404

    def like_missing(r: httpx.Response) -> bool:
        return (r.status_code, r.text.replace(str(chunk_id), "ID")) == (
            missing.status_code, missing.text.replace(str(chunk_id + 10_000), "ID"))

    assert like_missing(get(world, "ben", f"/chunks/{chunk_id}"))
    assert client.put("/collections/travel/shares/ben",
                      headers=auth(keys["ana"])).status_code == 200
    try:
        r = get(world, "ben", f"/chunks/{chunk_id}")
        assert r.status_code == 200, r.text
        assert r.json()["collection"] == {"name": "travel", "owner": "ana", "writable": False}
        assert r.json()["text"] == world["hit"]["text"]
        assert like_missing(get(world, "cy", f"/chunks/{chunk_id}"))
    finally:
        client.delete("/collections/travel/shares/ben", headers=auth(keys["ana"]))
    assert like_missing(get(world, "ben", f"/chunks/{chunk_id}"))


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1.5", "1e3", str(2**63), str(10**30), "%00"])
def test_an_id_that_cannot_be_a_chunks_is_a_400(world, bad):
    r = get(world, "ana", f"/chunks/{bad}")
    assert 400 <= r.status_code < 500 and r.status_code != 404, (bad, r.status_code, r.text)
    assert r.json()["error"]["message"]


def test_the_reindex_status_shows_the_live_index_and_one_being_built(world):
    r = get(world, "ana", "/collections/travel/indexes")
    assert r.status_code == 200, r.text
    [live] = r.json()["data"]
    chunks = world["doc"]["chunks"]
    assert live["live"] and live["status"] == "ready"
    assert (live["embedder"], live["dim"]) == ("all-minilm-l6-v2", 384)
    assert live["vectors"] == live["chunks"] == chunks > 0
    # what `tenshu memory reindex` makes first: an empty index beside the live one
    store = world["live"].server.store
    collection = store.collections.get(Principal.of(store.users.get("ana")), "travel")
    building = _new_index(store.engine, collection, "another-embedder")
    try:
        found = get(world, "ana", "/collections/travel/indexes").json()["data"]
        assert [i["live"] for i in found] == [True, False]
        assert found[1] == {**found[1], "embedder": "another-embedder", "status": "building",
                            "vectors": 0, "chunks": chunks, "dim": None}
        assert like_404(get(world, "cy", "/collections/travel/indexes?owner=ana"))
    finally:
        _drop(store.engine, building)
    assert len(get(world, "ana", "/collections/travel/indexes").json()["data"]) == 1


def like_404(r: httpx.Response) -> bool:
    return r.status_code == 404 and "no collection named" in r.json()["error"]["message"]
