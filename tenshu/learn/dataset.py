"""Token data for `tenshu train tiny`: the chat format, the tokenizer trained on the corpus, and
the deterministic stream of training batches.

corpus.py writes conversations as text; this module turns them into what the trainer in tiny.py
consumes. Everything is a pure function of the corpus and the seed, so a resumed run sees exactly
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"  # ends every turn; the model's end-of-sequence token
SPECIAL_TOKENS = (PAD, IM_START, IM_END)

# ChatML, as Qwen models use it. Content given as a list of text parts (OpenAI/Anthropic style)
# is joined, so a gateway can pass messages through unflattened.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}{%- set text = message['content'] | map(attribute='text') | join('') -%}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + text + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any UTF-8 text encodes, nothing is ever unknown) trained on
    the rendered conversations, with the chat special tokens kept whole."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=None,
        clean_up_tokenization_spaces=False,
    )


def encode(tokenizer: PreTrainedTokenizerFast, conversations: Sequence[Sequence[dict]], context: int):
    """Token ids of each conversation rendered with the chat template; those longer than the
    context are dropped (the count is returned) rather than cut, so no row ends mid-turn."""
    texts = [tokenizer.apply_chat_template(list(c), tokenize=False) for c in conversations]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    kept = [row for row in ids if len(row) <= context]
    return kept, len(ids) - len(kept)


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [rows, longest]
    labels: torch.Tensor  # [rows, longest]; -100 on padding
    attention_mask: torch.Tensor  # [rows, longest]
    num_tokens: int  # real (non-padding) tokens


def collate(rows: Sequence[Sequence[int]], pad_id: int) -> Batch:
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return Batch(ids, labels, mask, int(mask.sum()))


def plan_epoch(lengths: Sequence[int], batch_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """Row indices of every batch of one epoch. Rows are shuffled, then sorted by length within
    windows of a few hundred, so a batch holds rows of similar length (little padding) while the
    order of batches stays random; a batch holds at most `batch_tokens` padded tokens."""
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    window = 512
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(_pack(chunk, lengths, batch_tokens))
    rng.shuffle(batches)
    return batches


def batch_stream(
    rows: Sequence[Sequence[int]], batch_tokens: int, seed: int, pad_id: int, start_step: int = 0
) -> Iterator[Batch]:
    """Batches forever, epoch after epoch; `start_step` skips the batches an earlier run used."""
    lengths = [len(r) for r in rows]
    step, epoch = 0, 0
    while True:
        for indices in plan_epoch(lengths, batch_tokens, seed, epoch):
            if step >= start_step:
                yield collate([rows[i] for i in indices], pad_id)
            step += 1
        epoch += 1


def fixed_batches(rows: Sequence[Sequence[int]], batch_tokens: int, pad_id: int) -> list[Batch]:
    """The held-out set in length order, for evaluation."""
    lengths = [len(r) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: lengths[i])
    return [collate([rows[i] for i in b], pad_id) for b in _pack(order, lengths, batch_tokens)]


def _pack(order: Sequence[int], lengths: Sequence[int], batch_tokens: int) -> Iterator[list[int]]:
    """Cut rows sorted by length into batches of at most `batch_tokens` padded tokens."""
    current: list[int] = []
    for i in order:
        if current and lengths[i] * (len(current) + 1) > batch_tokens:
            yield current
            current = []
        current.append(i)
    if current:
        yield current
