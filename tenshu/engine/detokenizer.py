"""Incremental detokenization and stop strings, for one sequence.

Text is produced with the tokenizers library's DecodeStream, primed with the end of the prompt,
so a piece that completes only part of a UTF-8 character yields nothing until the character is
whole, and a word's leading space is right at the prompt/output boundary. Stop strings are
matched on the text; what could still grow into a stop string is held back from the stream
until it is known not to be one, so a partial match never leaks to a client.

Special tokens are dropped from the text (skip_special_tokens) except those asked for by id: a
tool-call parser must see its markers, which some tokenizers make special ([TOOL_CALLS],
<|python_tag|>), but no other special token (<|im_start|>, <|pad|>) belongs in a reply.
"""

from __future__ import annotations

from tokenizers.decoders import DecodeStream

PRIME_TOKENS = 8  # prompt tokens that give the first output token its context


class Detokenizer:
    def __init__(
        self,
        tokenizer,
        prompt_token_ids: list[int],
        skip_special_tokens: bool,
        stop_strings: tuple[str, ...],
        include_stop_str_in_output: bool,
        keep_special_token_ids: frozenset[int] = frozenset(),
    ):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ValueError("streaming detokenization needs a fast (tokenizers) tokenizer")
        self._backend = backend
        keep = keep_special_token_ids if skip_special_tokens else frozenset()
        # with some kept, the stream skips nothing and the others never reach it
        self._drop = special_token_ids(backend) - keep if keep else frozenset()
        self._stream = DecodeStream(
            ids=list(prompt_token_ids[-PRIME_TOKENS:]),
            skip_special_tokens=skip_special_tokens and not keep,
        )
        self._stops = stop_strings
        self._include_stop = include_stop_str_in_output
        self.text = ""

    def add(self, token_id: int) -> str | None:
        """Append one token's text; return the stop string it completed, if any (the text is
        then cut at the stop string, which stays in it only if asked)."""
        if token_id in self._drop:
            return None
        piece = self._stream.step(self._backend, token_id)
        if not piece:
            return None
        searched_from = max(0, len(self.text) - max((len(s) for s in self._stops), default=0))
        self.text += piece
        if not self._stops:
            return None
        found: tuple[int, str] | None = None
        for stop in self._stops:
            i = self.text.find(stop, searched_from)
            if i != -1 and (found is None or i < found[0]):
                found = (i, stop)
        if found is None:
            return None
        i, stop = found
        self.text = self.text[: i + len(stop) if self._include_stop else i]
        return stop

    def releasable(self, finished: bool) -> str:
        """The text that may go to the client now: all of it once finished, else all but a tail
        that is the beginning of some stop string."""
        if finished or not self._stops:
            return self.text
        hold = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(self.text)), hold, -1):
                if self.text.endswith(stop[:k]):
                    hold = k
                    break
        return self.text[: len(self.text) - hold]


def special_token_ids(backend) -> frozenset[int]:
    """The ids skip_special_tokens drops: the tokenizer's added tokens marked special."""
    return frozenset(i for i, token in backend.get_added_tokens_decoder().items() if token.special)
