"""The learning loop's datasets: a person's feedback turned into SFT examples, DPO preference
pairs and KTO labels, with a held-out split, in TRL's and mlx-lm's file formats.

The input is the feedback log as store/feedback.export_rows reads it (each item with the prompt
it judged, the answer, and for a preference the other answer); `build` is a pure function of it,
so the same log gives the same bytes, and each dataset has a content hash (sha256 of its JSONL).

    SFT   answers rated up (their latest rating), and corrections as the target of their prompt
    DPO   arena votes (a or b; ties and "both bad" say nothing about which is better); a rated-up
          and a rated-down answer to the same prompt; a correction over the answer it corrects
    KTO   every rated answer, labelled by its rating; corrections, labelled desirable

The held-out split is by prompt: a prompt's hash decides, so an example whose prompt is held out
is never trained on, and nor is any other example with the same prompt. (This module is the
learning loop's; dataset.py is the from-scratch trainer's token data.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("sft", "dpo", "kto")
HELDOUT = 0.1  # the share of prompts held out
# What each method needs in its training split before `tenshu learn` will run it, and how a
# person gets more of it.
MINIMUM = {"sft": 16, "dpo": 16, "kto": 32}
HOW = {"sft": "rate good answers up, or correct bad ones (Edit answer)",
       "dpo": "vote in the arena, rate two answers to the same prompt one up and one down, or "
              "correct an answer",
       "kto": "rate answers up or down"}
_PAIRS_PER_PROMPT = 4  # rated-up x rated-down pairs taken from one prompt, at most


@dataclass(frozen=True, slots=True)
class Example:
    """One training item. `prompt` is the conversation before the answer, as plain
    {"role", "content"} messages; the rest depends on the kind."""

    kind: str  # sft | dpo | kto
    prompt: tuple[tuple[str, str], ...]  # (role, text) pairs: hashable, so duplicates merge
    completion: str | None = None  # sft, kto
    chosen: str | None = None  # dpo
    rejected: str | None = None  # dpo
    label: bool | None = None  # kto
    source: str = ""  # the feedback item(s) it came from
    model: str = ""  # the model or route that gave the answer (the chosen one, for dpo)
    adapter: str = ""  # the adapter version that gave it ("NAME@vN"; for a correction, the
    #                    version whose answer was corrected); "" for the base model

    @property
    def messages(self) -> list[dict]:
        return [{"role": role, "content": text} for role, text in self.prompt]

    @property
    def heldout(self) -> bool:
        return prompt_bucket(self.prompt) < HELDOUT

    def trl(self) -> dict:
        """TRL's conversational format for this kind's trainer."""
        def said(text: str) -> list[dict]:
            return [{"role": "assistant", "content": text}]

        if self.kind == "dpo":
            return {"prompt": self.messages, "chosen": said(self.chosen),
                    "rejected": said(self.rejected)}
        row = {"prompt": self.messages, "completion": said(self.completion)}
        return {**row, "label": self.label} if self.kind == "kto" else row

    def mlx(self) -> dict:
        """mlx-lm's format: chat messages for SFT; for preferences, the system, the last user
        message and the two answers as plain text (the earlier turns are not carried)."""
        if self.kind == "sft":
            return {"messages": [*self.messages, {"role": "assistant",
                                                  "content": self.completion}]}
        system = next((text for role, text in self.prompt if role == "system"), None)
        last = next((text for role, text in reversed(self.prompt) if role == "user"), "")
        row = {"prompt": last, "chosen": self.chosen, "rejected": self.rejected}
        return {"system": system, **row} if system else row


@dataclass
class Datasets:
    sft: list[Example] = field(default_factory=list)
    dpo: list[Example] = field(default_factory=list)
    kto: list[Example] = field(default_factory=list)

    def of(self, kind: str) -> list[Example]:
        return getattr(self, kind)

    def split(self, kind: str) -> tuple[list[Example], list[Example]]:
        """(train, held out) of one kind."""
        items = self.of(kind)
        return [e for e in items if not e.heldout], [e for e in items if e.heldout]

    def counts(self) -> dict[str, dict[str, int]]:
        return {kind: {"train": len(self.split(kind)[0]), "heldout": len(self.split(kind)[1])}
                for kind in KINDS}

    def content_hash(self, kind: str | None = None) -> str:
        """sha256 of the dataset's TRL JSONL (every kind's, in order, when `kind` is None)."""
        digest = hashlib.sha256()
        for k in [kind] if kind else KINDS:
            digest.update(jsonl([e.trl() for e in self.of(k)]))
        return digest.hexdigest()

    def needs(self, kind: str) -> str | None:
        """What is missing before `kind` can train, in words; None when it can."""
        have, want = len(self.split(kind)[0]), MINIMUM[kind]
        if have >= want:
            return None
        return (f"{kind.upper()} needs {want} training examples and has {have}: "
                f"{HOW[kind]} ({want - have} more)")

    def write(self, out: Path, formats: Iterable[str] = ("trl", "mlx")) -> list[Path]:
        """Write the datasets under `out`: trl/{kind}.{train,heldout}.jsonl and
        mlx/{sft,dpo}/{train,valid}.jsonl (mlx-lm's names; it has no KTO), and manifest.json
        with the counts and hashes. Returns the files written."""
        written = []
        for fmt in formats:
            for kind in KINDS:
                train, held = self.split(kind)
                if fmt == "trl":
                    pairs = [(out / "trl" / f"{kind}.train.jsonl", train),
                             (out / "trl" / f"{kind}.heldout.jsonl", held)]
                elif kind != "kto":
                    pairs = [(out / "mlx" / kind / "train.jsonl", train),
                             (out / "mlx" / kind / "valid.jsonl", held)]
                else:
                    continue
                for path, items in pairs:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(jsonl([e.trl() if fmt == "trl" else e.mlx()
                                            for e in items]))
                    written.append(path)
        manifest = out / "manifest.json"
        manifest.write_text(json.dumps(self.manifest(), indent=2) + "\n", encoding="utf-8")
        return [*written, manifest]

    def manifest(self) -> dict:
        return {"heldout": HELDOUT, "counts": self.counts(), "hash": self.content_hash(),
                "hashes": {kind: self.content_hash(kind) for kind in KINDS},
                "needs": {kind: self.needs(kind) for kind in KINDS}}


def jsonl(rows: list[dict]) -> bytes:
    """Rows as JSON lines, written the same way every time (sorted keys, no spaces)."""
    return b"".join(json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
                    .encode() + b"\n" for r in rows)


def prompt_bucket(prompt: tuple[tuple[str, str], ...]) -> float:
    """Where a prompt falls in [0, 1), from its hash: the held-out split's coin."""
    digest = hashlib.sha256(json.dumps(prompt, ensure_ascii=False).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def text_of(message: dict | None) -> str:
    """A stored message's text (its text blocks, joined)."""
    if not message:
        return ""
    content = message.get("content", "")
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if b.get("type") == "text")


def _prompt(messages: list[dict] | None) -> tuple[tuple[str, str], ...]:
    return tuple((m.get("role", "user"), text_of(m)) for m in messages or ())


def build(rows: Iterable[dict]) -> Datasets:
    """The datasets from feedback rows (export_rows' dicts, oldest first)."""
    ratings: dict[str, dict] = {}  # turn -> its latest rating row
    corrections: dict[str, dict] = {}  # turn -> its latest correction row
    votes: list[dict] = []
    for row in rows:
        if row.get("prompt") is None or row.get("answer") is None:
            continue  # what it judged is gone (a deleted conversation)
        if row["kind"] == "rating":
            ratings[row["turn_id"]] = row
        elif row["kind"] == "correction" and (row.get("text") or "").strip():
            corrections[row["turn_id"]] = row
        elif row["kind"] == "preference" and row.get("preference") in ("a", "b"):
            votes.append(row)
    out = Datasets()
    for turn, row in ratings.items():
        prompt, answer = _prompt(row["prompt"]), text_of(row["answer"])
        if not answer.strip():
            continue
        if row["rating"] > 0 and turn not in corrections:
            out.sft.append(Example("sft", prompt, completion=answer, source=row["id"],
                                   model=row["model"], adapter=row.get("adapter") or ""))
        out.kto.append(Example("kto", prompt, completion=answer, label=row["rating"] > 0,
                               source=row["id"], model=row["model"],
                               adapter=row.get("adapter") or ""))
    for row in corrections.values():
        prompt, fixed = _prompt(row["prompt"]), row["text"].strip()
        out.sft.append(Example("sft", prompt, completion=fixed, source=row["id"],
                               model="correction"))
        out.kto.append(Example("kto", prompt, completion=fixed, label=True, source=row["id"],
                               model="correction"))
        original = text_of(row["answer"])
        if original.strip() and original.strip() != fixed:
            out.dpo.append(Example("dpo", prompt, chosen=fixed, rejected=original,
                                   source=row["id"], model="correction",
                                   adapter=row.get("adapter") or ""))
    for row in votes:
        a, b = text_of(row["answer"]), text_of(row.get("other_answer"))
        if not a.strip() or not b.strip() or a == b:
            continue
        chosen, rejected = (a, b) if row["preference"] == "a" else (b, a)
        model, adapter = (row["model"], row.get("adapter")) if row["preference"] == "a" else \
            (row.get("other_model") or "", row.get("other_adapter"))
        out.dpo.append(Example("dpo", _prompt(row["prompt"]), chosen=chosen, rejected=rejected,
                               source=row["id"], model=model, adapter=adapter or ""))
    out.dpo += _rated_pairs(ratings.values())
    for kind in KINDS:  # one of each, in a stable order
        unique = {(e.prompt, e.completion, e.chosen, e.rejected, e.label): e
                  for e in out.of(kind)}
        setattr(out, kind, sorted(unique.values(), key=_order))
    return out


def _rated_pairs(ratings: Iterable[dict]) -> list[Example]:
    """A rated-up and a rated-down answer to the same prompt, as preference pairs."""
    by_prompt: dict[tuple, dict[int, list[dict]]] = {}
    for row in ratings:
        by_prompt.setdefault(_prompt(row["prompt"]), {}).setdefault(row["rating"], []).append(row)
    pairs = []
    for prompt, rated in by_prompt.items():
        ups, downs = rated.get(1, []), rated.get(-1, [])
        made = [(up, down) for up in ups for down in downs
                if text_of(up["answer"]) != text_of(down["answer"])]
        for up, down in made[:_PAIRS_PER_PROMPT]:
            pairs.append(Example("dpo", prompt, chosen=text_of(up["answer"]),
                                 rejected=text_of(down["answer"]),
                                 source=f"{up['id']}+{down['id']}", model=up["model"],
                                 adapter=up.get("adapter") or ""))
    return pairs


def _order(e: Example) -> tuple:
    return (e.prompt, e.completion or "", e.chosen or "", e.rejected or "", str(e.label))
