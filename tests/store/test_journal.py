"""The audit log's write-ahead journal: a process that dies before its writer flushes loses no
record, a record is never written twice, and a line cut short by the kill is skipped."""

from __future__ import annotations

import stat

from tenshu.store import open_store
from tests.store.test_audit import request, wait_for


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
