"""The learning loop's datasets from a real store's feedback: which feedback becomes which
example, that the same log gives the same bytes, that a held-out prompt is never trained on,
that one person's feedback never lands in another's data, and `tenshu learn data`."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

from tenshu.learn.datasets import MINIMUM, build
from tenshu.store import Principal, TurnRecord, open_store
from tenshu.store.conversations import write_turns
from tenshu.store.feedback import export_rows
from tenshu.store.sql import begin_write


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "state.db") as store:
        for name in ("ana", "ben"):
            store.users.add(name)
        yield store


def who(store, name: str) -> Principal:
    return Principal.of(store.users.get(name))


def answered(store, name: str, prompt: str, answer: str, model: str = "tiny",
             system: str | None = None) -> str:
    """A recorded turn: `name` asked `prompt` in a conversation of its own, `model` answered."""
    hexid = secrets.token_hex(12)
    asked = ([{"role": "system", "content": [{"type": "text", "text": system}]}]
             if system else [])
    asked.append({"role": "user", "content": [{"type": "text", "text": prompt}]})
    with begin_write(store.engine) as conn:
        write_turns(conn, [TurnRecord(
            id=f"turn_{hexid}", conversation_id=f"conv_{hexid}",
            owner_id=store.users.get(name).id, request_id=f"req_{hexid}", model=model,
            messages=asked, state_hash=hexid, new=True,
            completion=[{"role": "assistant", "content": [{"type": "text", "text": answer}]}])])
    return f"turn_{hexid}"


def datasets(store, name: str = "ana"):
    return build(export_rows(store.engine, who(store, name)))


def test_each_kind_of_feedback_becomes_its_examples(store):
    ana = who(store, "ana")
    good = answered(store, "ana", "name a castle", "Himeji.", system="Be brief.")
    bad = answered(store, "ana", "name a castle", "A castle is a building.", system="Be brief.")
    fixed = answered(store, "ana", "capital of Japan?", "Kyoto.")
    a = answered(store, "ana", "a haiku", "old pond, frog", model="tiny")
    b = answered(store, "ana", "a haiku", "frogs are green", model="auto")
    tie_a = answered(store, "ana", "tie?", "x", model="tiny")
    tie_b = answered(store, "ana", "tie?", "y", model="auto")
    changed = answered(store, "ana", "changed mind", "maybe")
    feedback = store.feedback
    feedback.add(ana, "rating", good, rating=1)
    feedback.add(ana, "rating", bad, rating=-1)
    feedback.add(ana, "correction", fixed, text="Tokyo.")
    feedback.add(ana, "preference", a, other_turn_id=b, preference="a")
    feedback.add(ana, "preference", tie_a, other_turn_id=tie_b, preference="tie")
    feedback.add(ana, "rating", changed, rating=1)
    feedback.add(ana, "rating", changed, rating=-1)  # the latest rating counts

    data = datasets(store)
    sft = {(e.prompt[-1][1], e.completion) for e in data.sft}
    assert sft == {("name a castle", "Himeji."), ("capital of Japan?", "Tokyo.")}
    himeji = next(e for e in data.sft if e.completion == "Himeji.")
    assert himeji.messages == [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "name a castle"}]
    dpo = {(e.prompt[-1][1], e.chosen, e.rejected) for e in data.dpo}
    assert dpo == {("name a castle", "Himeji.", "A castle is a building."),  # up over down
                   ("capital of Japan?", "Tokyo.", "Kyoto."),  # a correction over the original
                   ("a haiku", "old pond, frog", "frogs are green")}  # the arena's vote; no tie
    kto = {(e.completion, e.label) for e in data.kto}
    assert kto == {("Himeji.", True), ("A castle is a building.", False), ("Tokyo.", True),
                   ("maybe", False)}


def test_the_same_log_gives_the_same_bytes_and_files(store, tmp_path):
    ana = who(store, "ana")
    for i in range(30):
        turn = answered(store, "ana", f"question {i}", f"answer {i}")
        store.feedback.add(ana, "rating", turn, rating=1 if i % 3 else -1)
    first, second = datasets(store), datasets(store)
    assert first.content_hash() == second.content_hash()
    one = first.write(tmp_path / "one")
    two = second.write(tmp_path / "two")
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert manifest["hash"] == first.content_hash()
    sft_rows = [json.loads(line) for name in ("sft.train.jsonl", "sft.heldout.jsonl")
                for line in (tmp_path / "one" / "trl" / name).read_text().splitlines()]
    assert len(sft_rows) == 20 and set(sft_rows[0]) == {"prompt", "completion"}
    assert sft_rows[0]["completion"][0]["role"] == "assistant"
    kto_rows = (tmp_path / "one" / "trl" / "kto.train.jsonl").read_text().splitlines()
    assert {json.loads(line)["label"] for line in kto_rows} == {True, False}
    mlx = [json.loads(line) for line in
           (tmp_path / "one" / "mlx" / "sft" / "train.jsonl").read_text().splitlines()]
    assert mlx[0]["messages"][-1]["role"] == "assistant"


def test_a_held_out_prompt_is_never_trained_on(store):
    ana = who(store, "ana")
    for i in range(200):
        for text, rating in ((f"good {i}", 1), (f"bad {i}", -1)):
            store.feedback.add(ana, "rating", answered(store, "ana", f"prompt {i}", text),
                               rating=rating)
    data = datasets(store)
    for kind in ("sft", "dpo", "kto"):
        train, held = data.split(kind)
        assert {e.prompt for e in train}.isdisjoint({e.prompt for e in held}), kind
    share = data.counts()["dpo"]["heldout"] / len(data.dpo)
    assert 0.04 < share < 0.2, share  # about one prompt in ten
    assert data.needs("dpo") is None and data.needs("sft") is None


def test_too_little_data_says_what_more_is_needed(store):
    ana = who(store, "ana")
    store.feedback.add(ana, "rating", answered(store, "ana", "hi", "hello"), rating=1)
    need = datasets(store).needs("dpo")
    assert need is not None and f"needs {MINIMUM['dpo']}" in need and "arena" in need


def test_one_persons_feedback_is_never_in_anothers_data(store):
    turn = answered(store, "ben", "ben's secret question", "ben's answer")
    store.feedback.add(who(store, "ben"), "rating", turn, rating=1)
    assert datasets(store, "ana").content_hash() == build([]).content_hash()
    assert [e.completion for e in datasets(store, "ben").sft] == ["ben's answer"]


def test_a_deleted_conversation_leaves_the_data(store):
    ana = who(store, "ana")
    turn = answered(store, "ana", "forget this", "forgotten")
    store.feedback.add(ana, "rating", turn, rating=1)
    assert len(datasets(store).sft) == 1
    store.conversations.delete(ana, "conv_" + turn.removeprefix("turn_"))
    assert datasets(store).sft == []


def test_tenshu_learn_data_counts_and_writes(tmp_path):
    with open_store(tmp_path / "state.db") as store:
        owner = Principal.of(store.users.owner())
        for i in range(3):
            turn = answered(store, "owner", f"q{i}", f"a{i}")
            store.feedback.add(owner, "rating", turn, rating=1)
    run = subprocess.run([sys.executable, "-m", "tenshu", "learn", "data", "--out",
                          str(tmp_path / "data")], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TENSHU_HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    header, *rows = run.stdout.splitlines()[:4]
    assert header.split() == ["DATASET", "STATUS", "TRAIN", "HELD", "OUT", "NEEDED"]
    assert rows[0].split()[:2] == ["SFT", "too"]
    assert "SFT needs 16 training examples" in run.stdout
    assert (tmp_path / "data" / "trl" / "sft.train.jsonl").exists()
    assert (tmp_path / "data" / "mlx" / "dpo" / "valid.jsonl").exists()
