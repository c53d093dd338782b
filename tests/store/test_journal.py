"""The record writer's write-ahead journal: a process that dies before its writer flushes loses
no record (audit records and conversation turns), a record is never written twice, a line cut
short by the kill is skipped, and an earlier version's lines are read."""

from __future__ import annotations

import json
import stat

from tenshu.store import Principal, open_store
from tests.store.test_audit import request, wait_for
from tests.store.test_conversations import answered, record, text


async def test_records_a_killed_process_did_not_write_are_written_at_the_next_start(
        tmp_path, database):
    journal = tmp_path / "audit.journal"
    with open_store(database) as store:
        dead = store.writer(interval=60, journal=journal)
        await dead.start()
        for i in range(10):
            dead.record(**request(i))
        assert stat.S_IMODE(journal.stat().st_mode) == 0o600
        # killed here: the flusher never ran, and close() is never called
        dead._task.cancel()
        with journal.open("ab") as f:
            f.write(b'{"request_id": "req-cut", "protoc')  # the kill cut the last line

        writer = store.writer(interval=60, journal=journal)
        await writer.start()
        assert writer.recovered == 10
        assert sorted(r.request_id for r in writer.query_recent(100)) == \
            sorted(f"req-{i}" for i in range(10))
        assert writer.query_recent(100)[0].input_tokens == 19  # the fields came back whole
        writer.record(**request(10))
        await writer.close()
        assert sorted(p.name for p in tmp_path.glob("audit.journal*")) == []


async def test_what_was_written_is_not_written_twice(tmp_path, database):
    journal = tmp_path / "audit.journal"
    with open_store(database) as store:
        first = store.writer(batch_size=4, interval=60, journal=journal)
        await first.start()
        for i in range(4):
            first.record(**request(i))
        await wait_for(lambda: first.written == 4)  # a full batch goes without waiting
        # killed after the commit but before the flush removed its journal file
        leftover = journal.with_name("audit.journal.9")
        leftover.write_bytes(b"".join(
            f'{{"request_id": "req-{i}", "protocol": "openai", "route": "/x"}}\n'.encode()
            for i in range(6)))
        first._task.cancel()
        again = store.writer(interval=60, journal=journal)
        await again.start()
        assert again.recovered == 2  # req-4 and req-5; req-0..3 are in the log already
        assert len(again.query_recent(100)) == 6
        await again.close()


async def test_turns_a_killed_process_did_not_write_come_back_with_their_conversations(
        tmp_path, database):
    journal = tmp_path / "audit.journal"
    with open_store(database) as store:
        who = Principal.of(store.users.owner())
        dead = store.writer(interval=60, journal=journal)
        await dead.start()
        for n, kind in enumerate(["chat", "arena"]):
            turn = record(who, f"conv_{n:024x}", n, f"question {n}")
            turn.new, turn.kind = True, kind
            answered(dead, turn)
        dead._task.cancel()  # killed before the flush
        # a line an earlier version wrote: its fields at the top, "kind" naming the record
        legacy = record(who, f"conv_{2:024x}", 2, "question 2")
        legacy.new = True
        with journal.open("a") as f:
            f.write(json.dumps({"kind": "turn", **{k: v for k, v in legacy.__dict__.items()
                                                   if k != "kind"}},
                               default=lambda at: at.isoformat()) + "\n")

        writer = store.writer(interval=60, journal=journal)
        await writer.start()
        assert writer.recovered == 5  # two audit records, three turns
        await writer.close()
        kinds = {c.id: c.kind for kind in ("chat", "arena")
                 for c in store.conversations.list(who, kind=kind, limit=10)[0]}
        assert kinds == {f"conv_{0:024x}": "chat", f"conv_{1:024x}": "arena",
                         f"conv_{2:024x}": "chat"}
        for n in range(3):
            turns = store.conversations.turns(who, f"conv_{n:024x}")
            assert [t.completion for t in turns] == [
                [text("assistant", f"answer to question {n}")]]
