"""Users: the owner from the start, roles, passwords hashed with argon2, keys that belong to a
user, and removal that takes everything of theirs; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tenshu.core.errors import NotFoundError, PermissionDeniedError
from tenshu.store import Principal, TurnRecord, open_store
from tenshu.store.conversations import state_hash, write_turns
from tenshu.store.runs import Run, Step
from tenshu.store.sql import begin_write, utcnow


@pytest.fixture
def store(database):
    with open_store(database) as store:
        yield store


def test_the_owner_is_there_from_the_start_and_owns_the_keys(store):
    owner = store.users.owner()
    assert (owner.name, owner.role) == ("owner", "admin")
    record, key = store.keys.create("laptop")  # no user named: the owner's
    assert (record.user_name, record.user_role) == ("owner", "admin")
    assert store.keys.verify(key).user_id == owner.id


def test_users_roles_and_their_keys(store):
    ana = store.users.add("ana")
    kim = store.users.add("kim", role="admin", record="always")
    assert (ana.role, ana.record, kim.role, kim.record) == ("member", "request", "admin", "always")
    record, key = store.keys.create("ana-phone", user="ana", record="never")
    assert (record.user_name, record.user_role, record.record) == ("ana", "member", "never")
    assert [k.name for k in store.keys.list("ana")] == ["ana-phone"]
    assert [u.name for u in store.users.list()] == ["owner", "ana", "kim"]
    with pytest.raises(ValueError, match="already named 'ana'"):
        store.users.add("ana")
    with pytest.raises(ValueError, match="no user named 'nobody'"):
        store.keys.create("x", user="nobody")
    for bad in ("", "a b", "-dash", "x" * 65, "ana/../kim"):
        with pytest.raises(ValueError, match="a user name"):
            store.users.add(bad)
    with pytest.raises(ValueError, match="role"):
        store.users.add("zed", role="root")


def test_passwords_are_hashed_and_checked(store):
    store.users.add("ana", password="correct horse battery")
    with store.engine.connect() as conn:
        stored = conn.execute(text("SELECT password_hash FROM users WHERE name = 'ana'")).scalar()
    assert stored.startswith("$argon2") and "correct horse" not in stored
    assert store.users.check_password("ana", "correct horse battery").name == "ana"
    assert store.users.check_password("ana", "wrong") is None
    assert store.users.check_password("nobody", "correct horse battery") is None
    assert store.users.check_password("owner", "anything") is None  # no password set
    store.users.update("ana", password="another one, longer")
    assert store.users.check_password("ana", "another one, longer") is not None
    with pytest.raises(ValueError, match="at least 8"):
        store.users.update("ana", password="short")


def test_the_last_admin_cannot_go(store):
    with pytest.raises(PermissionDeniedError, match="last admin"):
        store.users.remove("owner")
    with pytest.raises(PermissionDeniedError, match="last admin"):
        store.users.update("owner", role="member")
    store.users.add("kim", role="admin")
    store.users.update("owner", role="member")  # now there is another
    assert store.users.owner().name == "kim"


def _say(store, user, text_: str) -> TurnRecord:
    principal = Principal.of(user)
    conv = store.conversations.create(principal)
    record = TurnRecord(id="turn_" + conv.id[5:], conversation_id=conv.id, owner_id=user.id,
                        request_id="req_" + conv.id[5:], model="m",
                        messages=[{"role": "user", "content": [{"type": "text", "text": text_}]}],
                        completion=[{"role": "assistant",
                                     "content": [{"type": "text", "text": "ok"}]}],
                        state_hash=state_hash([text_]))
    with begin_write(store.engine) as conn:
        write_turns(conn, [record])
    return record


def test_removing_a_user_removes_everything_of_theirs_and_nothing_else(store):
    ana, kim = store.users.add("ana"), store.users.add("kim")
    store.keys.create("ana-laptop", user="ana")
    _, kim_key = store.keys.create("kim-laptop", user="kim")
    turn = _say(store, ana, "ana's secret")
    store.feedback.add(Principal.of(ana), "rating", turn.id, rating=1)
    kept = _say(store, kim, "kim's")
    store.collections.create(Principal.of(ana), "notes", embedder="e")
    store.collections.share(Principal.of(ana), "notes", "kim")
    store.collections.create(Principal.of(kim), "notes", embedder="e")
    run = store.runs.create(Run.new(ana.id, "helper", "ana's errand"))
    store.runs.record(Step(run.id, 1, "model", "model", "m", "done"))
    store.responses.save(Principal.of(ana), {"id": "resp_ana", "model": "m"},
                         [{"type": "message", "role": "user", "content": "ana's question"}])
    event = store.context.add_event("news", "entry-1", "feed.entry", {}, utcnow())
    store.context.add_delivery(event, "brief", ana.id, utcnow())
    store.context.add_delivery(event, "brief-kim", kim.id, utcnow())
    store.context.notify(ana.id, "ana's brief")
    assert store.users.usage("ana") == {"keys": 1, "conversations": 1, "turns": 1,
                                        "feedback": 1, "collections": 1, "runs": 1,
                                        "responses": 1}
    removed = store.users.remove("ana")
    assert removed == {"conversations": 1, "turns": 1, "feedback": 1, "collections": 1,
                       "runs": 1, "responses": 1, "deliveries": 1, "notifications": 1,
                       "keys": 1}
    assert store.context.inbox(Principal.of(ana)) == []
    assert [d.trigger for d in store.context.deliveries(Principal.of(kim))] == ["brief-kim"]
    assert store.runs.steps(None, run.id) == []
    assert store.responses.get(Principal.of(ana), "resp_ana") is None
    assert [c.name for c in store.collections.list(Principal.of(kim))] == ["notes"]
    assert store.users.get("ana") is None
    assert [k.name for k in store.keys.list()] == ["kim-laptop"]
    assert store.keys.verify(kim_key) is not None
    assert [t.id for t in store.conversations.turns(Principal.of(kim), kept.conversation_id)] \
        == [kept.id]
    with pytest.raises(NotFoundError):
        store.users.remove("ana")
