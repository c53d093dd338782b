"""Streaming text: never a broken UTF-8 character, spaces right at merge boundaries, stop
strings cut cleanly and never leaked in part."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tenshu import LLM, SamplingParams
from tenshu.engine.detokenizer import Detokenizer
from tenshu.engine.sampling import RequestOutputKind

TEXT = " naïve café: 日本語 🙂 and the clock's gears, über alles!"


@pytest.fixture(scope="module")
def tokenizer(checkpoint):
    return AutoTokenizer.from_pretrained(checkpoint("qwen3"))


def test_streamed_pieces_are_whole_characters_and_add_up(tokenizer):
    prompt = tokenizer.encode("Hello there,")
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    assert len(ids) > len(TEXT.split())  # multi-byte characters span several tokens
    detok = Detokenizer(tokenizer, prompt, True, (), False)
    pieces = []
    for t in ids:
        before = detok.text
        detok.add(t)
        pieces.append(detok.text[len(before) :])
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == TEXT
    assert pieces[0].startswith(" ")  # the leading space of the first output word is kept


def test_stop_string_cuts_the_text_and_partial_matches_are_held_back(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    detok = Detokenizer(tokenizer, [], True, ("clock's",), False)
    released = []
    for t in ids:
        stop = detok.add(t)
        released.append(detok.releasable(finished=stop is not None))
        if stop:
            break
    assert stop == "clock's"
    assert detok.text == TEXT[: TEXT.index("clock's")]
    for r in released:
        assert TEXT.startswith(r) and "clock" not in r
    assert released[-1] == " naïve café: 日本語 🙂 and the "


def test_include_stop_str_in_output(tokenizer):
    detok = Detokenizer(tokenizer, [], True, ("日本",), True)
    for t in tokenizer.encode(TEXT, add_special_tokens=False):
        if detok.add(t):
            break
    assert detok.text.endswith("日本")


def test_engine_streams_deltas_that_add_up_and_stop_on_a_string(checkpoint):
    llm = LLM(checkpoint("qwen3"), dtype="float32")
    engine = llm.engine
    prompt = "Once upon a time"
    full = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=40, ignore_eos=True))
    text = full[0].outputs[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip(), text
    params = SamplingParams(
        temperature=0, max_tokens=40, ignore_eos=True, stop=[stop],
        output_kind=RequestOutputKind.DELTA,
    )
    engine.add_request("s", prompt, params)
    deltas, last = [], None
    while engine.has_unfinished_requests():
        for out in engine.step():
            deltas.append(out.outputs[0].text)
            last = out.outputs[0]
    streamed = "".join(deltas)
    assert streamed == text[: text.index(stop)]
    assert last.finish_reason == "stop" and last.stop_reason == stop


def test_only_the_special_tokens_asked_for_are_kept(checkpoint):
    """With tools offered a parser needs its markers, which may be special tokens; every other
    special token stays out of the text."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint("qwen3"))
    tokenizer.add_tokens(["[TOOL_CALLS]"], special_tokens=True)
    marker = tokenizer.convert_tokens_to_ids("[TOOL_CALLS]")
    text = "<|im_start|>Sure.<|pad|>[TOOL_CALLS][{}]<|im_end|> done"
    ids = tokenizer.encode(text, add_special_tokens=False)

    def detokenized(skip: bool, keep=frozenset()) -> str:
        detok = Detokenizer(tokenizer, tokenizer.encode("Hi<|im_end|>"), skip, (), False, keep)
        for t in ids:
            detok.add(t)
        return detok.text

    assert detokenized(True, frozenset({marker})) == "Sure.[TOOL_CALLS][{}] done"
    assert detokenized(True) == "Sure.[{}] done"
    assert detokenized(False, frozenset({marker})) == text  # nothing is skipped at all
