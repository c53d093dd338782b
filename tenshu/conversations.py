"""The gateway's conversation stages: open one before routing, record the turn after the answer.

A client asks for a conversation with the request header `x-tenshu-conversation`:

    new       starts one; the response's `x-tenshu-conversation` header names it
    arena     starts one that is an arena answer (listed apart from chats: ?kind=arena)
    conv_...  continues it: its stored turns are put before the request's messages, so a client
              may send only the new turn (one that sends the whole history again is understood:
              what is stored already is not repeated)

With it, `x-tenshu-rewind: turn_...` answers again from before that turn (regenerate, or edit
and resend): the history is the turns before it, and it and the turns after it are kept but
leave the conversation's path (`superseded_by`), replaced by the new turn.

Whose setting decides: the key's, else the user's (`record`): `request` records only what a
client asks for, `always` records every chat request (one that repeats a recorded
conversation's history continues it), `never` records nothing and ignores the header. Another
user's conversation, or an id that does not exist, is the same 404.

Recording is off the request path: the turn (the request id, the model and route that answered,
the messages the client sent new, the completion, tokens, latency and trace) goes to the record
writer with the request's audit record (one journal write for both), and is written in its
batches. Every response carries
`x-tenshu-conversation` and `x-tenshu-turn` (the turn's id, for feedback on it).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from tenshu.core.errors import InvalidRequestError, NotFoundError
from tenshu.core.fold import Fold
from tenshu.core.messages import Message, from_dict, to_dict
from tenshu.core.request import ChatRequest
from tenshu.gateway import CONVERSATION_HEADER, REWIND_HEADER
from tenshu.store.conversations import ConversationStore, TurnRecord, current, state_hash
from tenshu.store.conversations import history as stored_history
from tenshu.store.people import Principal
from tenshu.store.writer import RecordWriter

HEADER = CONVERSATION_HEADER
TURN_HEADER = "x-tenshu-turn"
_ID = re.compile(r"conv_[0-9a-f]{24}")


@dataclass
class Recording:
    """One request's place in a conversation, and its answer as it streams (the gateway adds
    each event to `fold`)."""

    conversation_id: str
    turn_id: str
    principal: Principal
    sent: list[dict]  # the messages the client sent that the conversation did not have
    before: list[dict]  # the conversation before this turn
    new: bool = False  # the request starts the conversation
    kind: str = "chat"  # of the conversation it starts
    replaces: list[str] = field(default_factory=list)  # the turns a rewind takes off the path
    fold: Fold = field(default_factory=Fold)

    def headers(self) -> dict[str, str]:
        return {HEADER: self.conversation_id, TURN_HEADER: self.turn_id}

    def turn(self, request_id: str, **fields) -> TurnRecord:
        completion = [to_dict(m) for m in self.fold.messages()]
        after = [*self.before, *self.sent, *completion[:1]]
        return TurnRecord(id=self.turn_id, conversation_id=self.conversation_id,
                          owner_id=self.principal.user_id, request_id=request_id,
                          messages=self.sent, completion=completion,
                          state_hash=state_hash(after), key_id=self.principal.key_id,
                          new=self.new, kind=self.kind, replaces=self.replaces, **fields)


class ConversationStage:
    def __init__(self, store: ConversationStore, writer: RecordWriter) -> None:
        self.store = store
        self.writer = writer

    async def open(self, request: ChatRequest, principal: Principal | None, asked: str | None,
                   request_id: str, rewind: str | None = None) -> Recording | None:
        """The request's conversation, if it is to be recorded; its history goes before
        `request.messages`. `asked` is the header's value, `rewind` the rewind header's. Raises
        NotFoundError for a conversation that is not the principal's."""
        asked = (asked or "").strip() or None
        if principal is None or principal.record == "never":
            return None
        if asked is None and principal.record != "always":
            return None
        if request.is_completion:
            if asked is None:
                return None
            raise InvalidRequestError(f"{HEADER} is for chat requests (messages), not "
                                      "completions", field=HEADER)
        turn_id = "turn_" + request_id.removeprefix("req_")
        sent = [to_dict(m) for m in request.messages]
        rewind = (rewind or "").strip() or None
        starts = asked is not None and asked.lower() in ("new", "arena")
        if rewind is not None and (asked is None or starts):
            raise InvalidRequestError(f"{REWIND_HEADER} needs {HEADER}: the conversation whose "
                                      "turn to answer again", field=REWIND_HEADER)
        if asked is not None and not starts:
            return await self._continue(request, principal, asked, turn_id, sent, rewind)
        ends = _assistant_ends(sent) if asked is None else []
        if ends:  # recording everything: a repeated history continues its conversation
            await self.writer.settle()
            for cut in ends:
                found = await asyncio.to_thread(self.store.continued_by, principal,
                                                state_hash(sent[:cut]))
                if found is not None:
                    return Recording(found, turn_id, principal, sent[cut:], sent[:cut])
        # a new conversation is made with its first turn, in the writer's batch: no database
        # work on the request's path. Its id is the request's random part, as the turn's is
        # (no call for fresh randomness, a system call, on every request).
        kind = "arena" if asked is not None and asked.lower() == "arena" else "chat"
        return Recording("conv_" + turn_id.removeprefix("turn_"), turn_id, principal, sent, [],
                         new=True, kind=kind)

    async def _continue(self, request: ChatRequest, principal: Principal, asked: str,
                        turn_id: str, sent: list[dict], rewind: str | None) -> Recording:
        if not _ID.fullmatch(asked):  # malformed ids answer as missing ones: nothing to probe
            raise NotFoundError(f"conversation {asked[:64]!r} not found")
        await self.writer.settle()  # its last turn may still be queued
        turns = await asyncio.to_thread(self.store.turns, principal, asked)
        if turns is None:
            raise NotFoundError(f"conversation {asked!r} not found")
        turns, replaces = current(turns), []
        if rewind is not None:
            at = next((i for i, t in enumerate(turns) if t.id == rewind), None)
            if at is None:
                raise NotFoundError(f"turn {rewind[:64]!r} is not on conversation {asked!r}'s "
                                    "path")
            turns, replaces = turns[:at], [t.id for t in turns[at:]]
        history = stored_history(turns)
        if sent[:len(history)] == history:  # the client sent the whole history again
            new = sent[len(history):]
        else:
            new = sent
            request.messages = _joined(history, request.messages)
        return Recording(asked, turn_id, principal, new, history, replaces=replaces)



def _joined(history: list[dict], messages: list[Message]) -> list[Message]:
    """The stored history, then the request's messages, with the system message first (chat
    templates want one, first): the request's own if it brings one, else the history's last."""
    past = [from_dict(m) for m in history]
    system = [m for m in messages if m.role == "system"] or \
        [m for m in past if m.role == "system"][-1:]
    return [*system, *(m for m in past if m.role != "system"),
            *(m for m in messages if m.role != "system")]


def _assistant_ends(messages: list[dict]) -> list[int]:
    """Where a recorded state could end: after each assistant message, latest first."""
    return [i + 1 for i in range(len(messages) - 1, -1, -1)
            if messages[i].get("role") == "assistant"][:4]
