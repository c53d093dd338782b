"""The gate: does a trained adapter go into service? The candidate against the incumbent (the
adapter in service, or the base model when none is) on data neither was trained on.

    judge(base_dir, candidate_adapter, incumbent_adapter_or_None, datasets) -> Verdict

- Preference accuracy on the held-out preference pairs: a model gets a pair right when it gives
  the chosen answer a higher log-likelihood than the rejected one. The candidate's accuracy minus
  the incumbent's, pair by pair, with a paired bootstrap 95% interval: promote only when its lower
  bound is above zero.
- The chosen answers' likelihood must not fall: their mean log-likelihood per token under the
  candidate may be at most `chosen_drop` below the incumbent's (DPO can push both answers down).
- Forgetting: the loss per token on a general held-out set (conversations of tenshu's own
  synthetic corpus, learn/corpus.py, that no feedback contains) may rise at most `forgetting` (a
  share of the incumbent's).
- Length, format and end of turn: greedy answers to the held-out prompts must end their turn
  (not run into the token limit) as often as the incumbent's, less `eot_drop`; be no longer than
  `length_ratio` times the incumbent's on average, nor shorter than `min_length_ratio` times it
  (scaled down when the person's chosen answers are shorter than the rejected ones); and be
  empty no more often.

Every number and the decision go into the candidate's manifest.json (`verdict`); the same
adapters and data give the same verdict (greedy decoding, a seeded bootstrap).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tenshu.learn.datasets import Datasets

GENERAL_SEED = 20261206  # the general held-out set: conversations no feedback contains


@dataclass(frozen=True)
class GateConfig:
    rounds: int = 2000  # bootstrap resamples
    seed: int = 0
    min_pairs: int = 4  # fewer held-out pairs than this: no decision can be made, so no
    chosen_drop: float = 0.25  # nats per token
    forgetting: float = 0.10  # the general loss may rise by this share
    eot_drop: float = 0.2
    length_ratio: float = 2.0
    # answers may not shrink below this share of the incumbent's length, scaled by how much
    # shorter the chosen answers are than the rejected ones (a person who prefers brevity
    # allows more): an adapter that learned to stop early is not one that learned the taste
    min_length_ratio: float = 0.5
    general: int = 24  # conversations in the general held-out set
    max_new_tokens: int = 64
    prompts: int = 16  # held-out prompts answered for the generation guards


@dataclass
class Verdict:
    promote: bool
    reasons: list[str]  # why not (empty when promoted)
    pairs: int
    accuracy: dict  # candidate, incumbent, difference, its interval
    chosen_logp: dict  # per token: candidate, incumbent
    general_loss: dict  # per token: candidate, incumbent
    generation: dict  # end-of-turn rate, mean length, empty share: candidate, incumbent
    incumbent: str  # the adapter it was judged against, or "base"
    data: str = ""  # the content hash of the datasets it was judged on
    config: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"decision": "promote" if self.promote else "reject", **asdict(self)}


def judge(base: Path, candidate: Path, incumbent: Path | None, datasets: Datasets,
          config: GateConfig = GateConfig()) -> Verdict:
    """The candidate adapter (a PEFT folder) against the incumbent (one, or None: the base)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, candidate, adapter_name="candidate")
    if incumbent is not None:
        model.load_adapter(incumbent, adapter_name="incumbent")
    model.eval()
    scorer = _Scorer(model, tokenizer, incumbent is not None)

    _, held = datasets.split("dpo")
    pairs = [(e.messages, e.chosen, e.rejected) for e in held]
    cand = [scorer.margin("candidate", *p) for p in pairs]
    inc = [scorer.margin("incumbent", *p) for p in pairs]
    right_c = [m > 0 for m, _ in cand]
    right_i = [m > 0 for m, _ in inc]
    diffs = [float(c) - float(i) for c, i in zip(right_c, right_i, strict=True)]
    low, high = _bootstrap(diffs, config) if diffs else (0.0, 0.0)
    accuracy = {"candidate": _mean(right_c), "incumbent": _mean(right_i),
                "difference": _mean(diffs), "interval": [low, high]}
    chosen = {"candidate": _mean([c for _, c in cand]), "incumbent": _mean([c for _, c in inc])}

    general = _general_set(config.general)
    general_loss = {who: _mean([scorer.loss(who, prompt, answer) for prompt, answer in general])
                    for who in ("candidate", "incumbent")}

    prompts = _prompts(datasets, config.prompts)
    generation = {who: scorer.answers(who, prompts, config.max_new_tokens)
                  for who in ("candidate", "incumbent")}

    reasons = []
    if len(pairs) < config.min_pairs:
        reasons.append(f"only {len(pairs)} held-out preference pairs; the gate needs "
                       f"{config.min_pairs} to decide")
    elif low <= 0:
        reasons.append(f"preference accuracy is not surely better: difference "
                       f"{accuracy['difference']:+.3f}, 95% interval [{low:+.3f}, {high:+.3f}]")
    if chosen["candidate"] < chosen["incumbent"] - config.chosen_drop:
        reasons.append(f"the chosen answers' likelihood fell: {chosen['candidate']:.3f} against "
                       f"{chosen['incumbent']:.3f} nats per token")
    if general_loss["candidate"] > general_loss["incumbent"] * (1 + config.forgetting):
        reasons.append(f"it forgot: general loss {general_loss['candidate']:.3f} against "
                       f"{general_loss['incumbent']:.3f} per token (at most "
                       f"+{config.forgetting:.0%})")
    c, i = generation["candidate"], generation["incumbent"]
    if c["end_of_turn"] < i["end_of_turn"] - config.eot_drop:
        reasons.append(f"its answers end their turn less often: {c['end_of_turn']:.2f} against "
                       f"{i['end_of_turn']:.2f}")
    if c["length"] > config.length_ratio * max(i["length"], 1.0):
        reasons.append(f"its answers are longer: {c['length']:.1f} tokens against "
                       f"{i['length']:.1f}")
    preferred = _length_ratio(tokenizer, pairs)
    if c["length"] < config.min_length_ratio * min(preferred, 1.0) * i["length"]:
        reasons.append(f"its answers are much shorter: {c['length']:.1f} tokens against "
                       f"{i['length']:.1f} (the chosen answers are {preferred:.2f} times the "
                       "rejected ones' length)")
    if c["empty"] > i["empty"]:
        reasons.append(f"more of its answers are empty: {c['empty']:.2f} against "
                       f"{i['empty']:.2f}")
    return Verdict(not reasons, reasons, len(pairs), accuracy, chosen, general_loss, generation,
                   incumbent=str(incumbent) if incumbent else "base",
                   data=datasets.content_hash(), config=asdict(config))


def _length_ratio(tokenizer, pairs) -> float:
    """How long the chosen answers are against the rejected ones, in tokens (1 without pairs)."""
    chosen = sum(len(tokenizer(c, add_special_tokens=False).input_ids) for _, c, _ in pairs)
    rejected = sum(len(tokenizer(r, add_special_tokens=False).input_ids) for _, _, r in pairs)
    return chosen / rejected if chosen and rejected else 1.0


def record(verdict: Verdict, manifest: Path) -> None:
    """Write the verdict into the candidate's manifest.json."""
    data = json.loads(manifest.read_text(encoding="utf-8")) if manifest.exists() else {}
    data["verdict"] = verdict.to_json()
    manifest.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


class _Scorer:
    """Log-likelihoods and greedy answers under the candidate, the incumbent adapter or the
    base model (the incumbent when no adapter is in service)."""

    def __init__(self, model, tokenizer, has_incumbent: bool) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.has_incumbent = has_incumbent

    def _as(self, who: str):
        import contextlib

        if who == "candidate" or self.has_incumbent:
            self.model.set_adapter(who)
            return contextlib.nullcontext()
        return self.model.disable_adapter()

    def _logps(self, who: str, prompt: list[dict], answer: str) -> list[float]:
        """The log-probability of each of `answer`'s tokens after `prompt`, and of the end of
        the turn after it (an answer and the same answer signed differ only in where the turn
        ends: without it, the shorter would always be the likelier)."""
        import torch

        asked = self.tokenizer.apply_chat_template(prompt, tokenize=False,
                                                   add_generation_prompt=True)
        start = len(self.tokenizer(asked, add_special_tokens=False).input_ids)
        ids = self.tokenizer(asked + answer + (self.tokenizer.eos_token or ""),
                             add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad(), self._as(who):
            logits = self.model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
        picked = logits.gather(1, ids[0, 1:, None])[:, 0]
        return picked[start - 1:].tolist()

    def margin(self, who: str, prompt: list[dict], chosen: str, rejected: str):
        """(log p(chosen) - log p(rejected), the chosen answer's mean log p per token)."""
        good, bad = self._logps(who, prompt, chosen), self._logps(who, prompt, rejected)
        return sum(good) - sum(bad), _mean(good)

    def loss(self, who: str, prompt: list[dict], answer: str) -> float:
        return -_mean(self._logps(who, prompt, answer))

    def answers(self, who: str, prompts: list[list[dict]], limit: int) -> dict:
        """Greedy answers: how often they end their turn, their mean length, the empty share."""
        import torch

        ended, lengths, empty = [], [], []
        eos = self.tokenizer.eos_token_id
        for prompt in prompts:
            ids = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True,
                                                     return_tensors="pt", return_dict=True)
            with torch.no_grad(), self._as(who):
                out = self.model.generate(**ids, max_new_tokens=limit, do_sample=False,
                                          pad_token_id=eos)
            new = out[0, ids["input_ids"].shape[1]:].tolist()
            stop = new.index(eos) if eos in new else None
            ended.append(stop is not None)
            lengths.append(stop if stop is not None else len(new))
            empty.append(not self.tokenizer.decode(new[:stop], skip_special_tokens=True).strip())
        return {"end_of_turn": _mean(ended), "length": _mean(lengths), "empty": _mean(empty)}


def _bootstrap(diffs: list[float], config: GateConfig) -> tuple[float, float]:
    """The 95% interval of the mean of `diffs`, resampling them (a paired bootstrap)."""
    rng = random.Random(config.seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n
                   for _ in range(config.rounds))
    return means[int(0.025 * (len(means) - 1))], means[int(0.975 * (len(means) - 1))]


def _general_set(count: int) -> list[tuple[list[dict], str]]:
    """(prompt, answer) of the last assistant turn of conversations no feedback contains."""
    from tenshu.learn.corpus import generate_corpus

    out = []
    for conversation in generate_corpus(count, seed=GENERAL_SEED):
        messages = list(conversation.messages)
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        out.append((messages[:last], messages[last]["content"]))
    return out


def _prompts(datasets: Datasets, count: int) -> list[list[dict]]:
    """Held-out prompts of every kind, each once, in a stable order."""
    seen, out = set(), []
    for kind in ("dpo", "sft", "kto"):
        for example in datasets.split(kind)[1]:
            if example.prompt not in seen:
                seen.add(example.prompt)
                out.append(example.messages)
    return out[:count]


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
