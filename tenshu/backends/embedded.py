"""EmbeddedBackend: a ChatRequest answered by tenshu's own engine, in this process.

Templating (chat/), sampling defaults from the checkpoint's generation_config, fitting
max_tokens to the context window, and turning the engine's RequestOutputs into the ChatEvent
sequence every protocol encodes.

The engine is built in the background as the server starts, and released after `keep_alive`
idle seconds (backends/loading.py): a request holds it from start to end, waiting for it to
load first if need be. The model's ModelInfo is read from its files at once
(backends/checkpoint_info.py); what needs the tokenizer (the chat template's tool format,
grammars, token counts) is built with the first engine and kept across unloads. LoRA adapters
added to the engine are added again to each engine built after an unload.

Rendering and tokenizing a prompt can take seconds for one of a few MB, so it
runs in a worker thread, never on the event loop. A prompt that cannot fit the window is refused
before it is tokenized in full: first by its length in characters (no token of the vocabulary is
longer than `max_token_chars`, so a prompt of n characters has at least n / max_token_chars
tokens), then, for a prompt long for its window, by counting it in pieces and stopping once the
count passes the window.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tenshu.backends.base import BackendStats
from tenshu.backends.checkpoint_info import checkpoint_info, loaded_info
from tenshu.backends.loading import DEFAULT_TIMEOUT, Loader
from tenshu.chat.reply import OutputShape, Reply, output_shape
from tenshu.chat.structured import GrammarCompiler
from tenshu.chat.template import prompt_text, tool_format
from tenshu.chat.tools import ToolFormat
from tenshu.core.errors import ContextLengthError, InvalidRequestError, ShuttingDownError
from tenshu.core.events import (
    ChatEvent,
    MessageFinish,
    MessageStart,
    TokenLogprob,
    Usage,
)
from tenshu.core.keep_alive import FOREVER
from tenshu.core.messages import TextBlock, ToolResultBlock
from tenshu.core.request import ChatRequest
from tenshu.engine import (
    AsyncEngine,
    EngineConfig,
    LoRARequest,
    RequestOutputKind,
    SamplingParams,
)
from tenshu.engine.lora import LoRAError

log = logging.getLogger("tenshu.backends")
_ids = itertools.count()


@dataclass(frozen=True)
class _Text:
    """What the tokenizer gives: built with the first engine, kept while it is unloaded."""

    tokenizer: object
    vocab_size: int
    grammars: GrammarCompiler
    tool_format: ToolFormat
    max_token_chars: int

    @classmethod
    def of(cls, llm) -> _Text:
        tokenizer = llm.tokenizer
        return cls(tokenizer, llm.vocab_size,
                   GrammarCompiler(tokenizer, llm.vocab_size, _eos_ids(llm)),
                   tool_format(tokenizer), _max_token_chars(tokenizer))


class EmbeddedBackend:
    def __init__(self, name: str, config: EngineConfig, *, keep_alive: float = FOREVER,
                 load_timeout: float = DEFAULT_TIMEOUT):
        """Starts loading the engine in the background. `keep_alive`: idle seconds before it
        is released (FOREVER: never); `load_timeout`: how long a request waits for a load."""
        self.config = config
        self.defaults = _generation_defaults(Path(config.model))
        self.info = checkpoint_info(name, config)
        self._text: _Text | None = None
        self._loras: dict[int, LoRARequest] = {}  # adapters every engine built gets
        self._prompt_tokens = 0
        self._cached_tokens = 0
        self.loader: Loader[AsyncEngine] = Loader(
            name, self._build, AsyncEngine.shutdown, keep_alive=keep_alive, timeout=load_timeout)
        self.loader.start()

    # -- the engine, while it is loaded ------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine | None:
        return self.loader.value

    @property
    def llm(self):
        """The synchronous engine (LLMEngine) while loaded, else None."""
        engine = self.loader.value
        return engine.engine if engine is not None else None

    @property
    def tokenizer(self):
        return self._prepared().tokenizer

    @property
    def vocab_size(self) -> int:
        return self._prepared().vocab_size

    @property
    def grammars(self) -> GrammarCompiler:
        return self._prepared().grammars

    @property
    def tool_format(self) -> ToolFormat:
        return self._prepared().tool_format

    @property
    def max_token_chars(self) -> int:
        return self._prepared().max_token_chars

    def _prepared(self) -> _Text:
        if self._text is None:
            raise RuntimeError(f"{self.info.name}: the tokenizer is read with the first load; "
                               "await prepare() first")
        return self._text

    async def prepare(self) -> None:
        """Return once the tokenizer's side is ready (after the first load)."""
        if self._text is None:
            await self.loader.acquire()
            self.loader.release()

    async def load(self, keep_alive: float | None = None) -> None:
        """Ollama's load call: load now if need be, and stay `keep_alive` seconds (None: the
        model's own)."""
        await self.loader.acquire()
        self.loader.release(self.loader.keep_alive if keep_alive is None else keep_alive)

    async def unload(self) -> None:
        """Ollama's keep_alive 0: release the engine once no request holds it."""
        await self.loader.unload()

    async def add_lora(self, lora: LoRARequest) -> str:
        """Hold an adapter in this engine and every one built after an unload; returns the
        sha256 of its weights. Raises LoRAError for one that cannot be used."""
        engine = await self.loader.acquire()
        try:
            digest = await engine.add_lora(lora)
            self._loras[lora.lora_int_id] = lora
            return digest
        finally:
            self.loader.release()

    def remove_lora(self, lora_int_id: int) -> None:
        """Give an adapter up; raises LoRAError while a request runs on it."""
        engine = self.loader.value
        if engine is not None:
            engine.remove_lora(lora_int_id)
        self._loras.pop(lora_int_id, None)

    def _build(self) -> AsyncEngine:
        """Loader's load, in its thread: the engine, its adapters, and the tokenizer's side."""
        engine = AsyncEngine(self.config)
        try:
            llm = engine.engine
            for lora in list(self._loras.values()):
                try:
                    llm.add_lora(lora)
                except LoRAError as exc:  # its files changed since: the model goes on without
                    log.warning("adapter %s is not served again: %s", lora.lora_name, exc)
                    self._loras.pop(lora.lora_int_id, None)
            if self._text is None:
                self._text = _Text.of(llm)
            self.info = loaded_info(self.info, self.config, llm)
        except BaseException:
            engine.shutdown()
            raise
        return engine

    # -- the Backend interface ----------------------------------------------------------------

    async def chat(self, request: ChatRequest, lora: LoRARequest | None = None
                   ) -> AsyncIterator[ChatEvent]:
        """The reply's events; with `lora`, from that adapter (one the engine holds). Waits
        for the engine to load; `request.keep_alive` (None: the model's own) is how long it
        stays loaded afterwards."""
        engine = await self.loader.acquire()
        events = self._generate(engine, request, lora)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()  # now, not when collected: it aborts the engine's request
            keep = request.keep_alive
            self.loader.release(self.loader.keep_alive if keep is None else keep)

    async def _generate(self, engine: AsyncEngine, request: ChatRequest,
                        lora: LoRARequest | None) -> AsyncIterator[ChatEvent]:
        ids = await asyncio.to_thread(self.prompt_ids, request)
        shape = OutputShape()
        if request.tools or request.response_format:
            shape = await asyncio.to_thread(self.output_shape, request)
        params, clamped = self.sampling_params(request, len(ids), shape)
        request_id = f"{self.info.name}-{next(_ids)}"
        start = time.perf_counter_ns()
        first_token_at = 0
        counts: dict[int, int] = {}  # choice -> tokens so far
        replies: dict[int, Reply] = {}
        done: set[int] = set()  # choices finished (the engine reports them again while n > 1 run)
        async for out in engine.generate(request_id, {"prompt_token_ids": ids}, params, lora):
            if not counts:
                self._prompt_tokens += len(ids)
                self._cached_tokens += out.num_cached_tokens
                usage = Usage(len(ids), 0, out.num_cached_tokens)
                yield MessageStart(request_id, self.info.name, usage, int(time.time()),
                                   **self._prompt_echo(request, ids, out.prompt_logprobs))
            for c in out.outputs:
                if c.index in done:
                    continue
                if c.finish_reason == "abort":
                    raise ShuttingDownError("the server is shutting down; the reply was cut short")
                count = counts[c.index] = counts.get(c.index, 0) + len(c.token_ids)
                if count and not first_token_at:
                    first_token_at = time.perf_counter_ns()
                reply = replies.get(c.index)
                if reply is None:
                    reply = replies[c.index] = Reply(c.index, shape.parser())
                logprobs = _logprobs(c, request)
                if c.text or logprobs:
                    for event in reply.add(c.text, logprobs):
                        yield event
                if c.finish_reason:
                    done.add(c.index)
                    for event in reply.close():
                        yield event
                    now = time.perf_counter_ns()
                    yield MessageFinish(
                        stop_reason=_stop_reason(c, reply.calls),
                        stop_sequence=c.stop_reason if isinstance(c.stop_reason, str) else None,
                        usage=Usage(len(ids), count, out.num_cached_tokens),
                        choice=c.index,
                        prompt_ns=(first_token_at or now) - start,
                        decode_ns=now - (first_token_at or now),
                        clamped=clamped,
                    )

    def _prompt_echo(self, request: ChatRequest, ids: list[int], scored) -> dict:
        """MessageStart's prompt_text and prompt_tokens, for a completion that wants them."""
        if not request.is_completion or not (request.echo or request.prompt_logprobs is not None):
            return {}
        tokenizer = self.tokenizer
        text = request.prompt if isinstance(request.prompt, str) else tokenizer.decode(ids)
        tokens = None
        if scored is not None:
            first = tokenizer.decode([ids[0]])
            tokens = [TokenLogprob(first, None, list(first.encode()), id=ids[0])]
            tokens += [_token_logprob(token, entries, request.prompt_logprobs)
                       for token, entries in zip(ids[1:], scored[1:], strict=True)]
        return {"prompt_text": text, "prompt_tokens": tokens}

    def output_shape(self, request: ChatRequest) -> OutputShape:
        """What the reply must look like: the grammar it follows and how tool calls are read
        out of it. Compiling can take a while on a large vocabulary, so callers run this off
        the event loop."""
        return output_shape(request, self.grammars, self.tool_format)

    async def count_tokens(self, request: ChatRequest) -> int:
        await self.prepare()
        return len(await asyncio.to_thread(self.prompt_ids, request))

    def stats(self) -> BackendStats:
        llm = self.llm
        if llm is None:  # loading or unloaded: requests waiting for it are the deployment's
            return BackendStats(0, 0, self.config.max_num_seqs, 0.0)
        scheduler, blocks = llm.scheduler, llm.block_manager
        used = 1 - blocks.num_free_blocks / max(1, blocks.num_blocks)
        return BackendStats(len(scheduler.running), len(scheduler.waiting),
                            self.config.max_num_seqs, used)

    def prefix_cache_counts(self) -> tuple[int, int]:
        """(prompt tokens seen, of which served from the prefix cache)."""
        return self._prompt_tokens, self._cached_tokens

    async def abort_all(self) -> None:
        engine = self.engine
        if engine is not None:
            for request_id in list(engine.engine.requests):
                await engine.abort(request_id)

    def close(self) -> None:
        self.loader.close()

    # -- request -> engine --------------------------------------------------------------------

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        """The prompt's token ids; raises ContextLengthError when they cannot fit the window.
        Slow for a large prompt: not for the event loop."""
        tokenizer = self.tokenizer
        window = self.window(request)
        self._check_fits(_least_chars(request) // self.max_token_chars, window, request)
        if request.is_completion and not isinstance(request.prompt, str):
            ids = list(request.prompt)
        else:
            if request.is_completion:
                text, special = request.prompt, True
            else:
                text, special = prompt_text(tokenizer, request.messages, request.tools,
                                            self.tool_format), False
            if len(text) > window * _CHARS_PER_TOKEN:  # long for the window: count first
                self._check_fits(_count_at_least(tokenizer, text, window, special), window,
                                 request)
            ids = tokenizer.encode(text, add_special_tokens=special)
        if not ids:
            raise InvalidRequestError("the prompt is empty", field="prompt")
        self._check_fits(len(ids), window, request, exact=True)
        return ids

    def _check_fits(self, tokens: int, window: int, request: ChatRequest, *,
                    exact: bool = False) -> None:
        if tokens >= window:
            raise ContextLengthError(
                f"the prompt has {'' if exact else 'at least '}{tokens} tokens, but "
                f"{self.info.name}'s context window is {window} tokens and must also hold the "
                "reply; shorten the conversation",
                field="messages" if not request.is_completion else "prompt",
            )

    def window(self, request: ChatRequest) -> int:
        if request.num_ctx:
            return min(request.num_ctx, self.info.context_window)
        return self.info.context_window

    def sampling_params(
        self, request: ChatRequest, num_prompt: int, shape: OutputShape | None = None
    ) -> tuple[SamplingParams, bool]:
        """The engine's SamplingParams, and whether max_tokens was lowered to fit the window."""
        room = self.window(request) - num_prompt
        max_tokens, clamped = request.max_tokens, False
        if max_tokens is None or max_tokens > room:
            clamped = max_tokens is not None
            max_tokens = room

        def pick(name: str, neutral):
            value = getattr(request, name)
            return value if value is not None else self.defaults.get(name, neutral)

        return SamplingParams(
            n=request.n,
            temperature=pick("temperature", 1.0),
            top_p=pick("top_p", 1.0),
            top_k=pick("top_k", 0),
            min_p=pick("min_p", 0.0),
            presence_penalty=pick("presence_penalty", 0.0),
            frequency_penalty=pick("frequency_penalty", 0.0),
            repetition_penalty=pick("repetition_penalty", 1.0),
            seed=request.seed,
            stop=list(request.stop),
            max_tokens=max_tokens,
            ignore_eos=request.ignore_eos,
            logprobs=request.top_logprobs if request.logprobs else None,
            prompt_logprobs=request.prompt_logprobs,
            output_kind=RequestOutputKind.DELTA,
            constraint=shape.grammar if shape else None,
            # tool-call markers can be special tokens ([TOOL_CALLS], <|python_tag|>): the
            # parser must see them, and no other special token
            keep_special_token_ids=shape.markers if shape else frozenset(),
        ), clamped


# Past this many characters per token of the window, a prompt is counted in pieces before it is
# tokenized whole: text averages 3-5 characters per token, so a prompt that long rarely fits.
_CHARS_PER_TOKEN = 8
_PIECE_CHARS = 16_384


def _max_token_chars(tokenizer) -> int:
    """The most characters any one token can stand for: a byte-level token's text has one
    character per byte, a SentencePiece token's one per character (▁ for a space), so none
    decodes to more characters than its vocabulary entry has."""
    if tokenizer is None:
        return 1
    return max(1, max((len(token) for token in tokenizer.get_vocab()), default=1))


def _least_chars(request: ChatRequest) -> int:
    """Characters the prompt holds at least: its text, its tool results (the template adds
    more, the tools' descriptions among them)."""
    if request.is_completion:
        return len(request.prompt) if isinstance(request.prompt, str) else 0
    return sum(len(block.text) for message in request.messages for block in message.content
               if isinstance(block, (TextBlock, ToolResultBlock)))


def _count_at_least(tokenizer, text: str, limit: int, special: bool) -> int:
    """The tokens of `text`, counted piece by piece until the count reaches `limit`. Pieces end
    where a word does (before a space that follows a non-space), where byte-level tokenizers'
    pre-tokenizers split anyway, so the count is the whole text's (within a token per piece for
    SentencePiece's)."""
    count, start = 0, 0
    while start < len(text) and count < limit:
        end = min(len(text), start + _PIECE_CHARS)
        if end < len(text):
            cut = text.rfind(" ", start + 1, end)
            while cut > start and text[cut - 1].isspace():
                cut = text.rfind(" ", start + 1, cut)
            end = cut if cut > start else end
        count += len(tokenizer.encode(text[start:end], add_special_tokens=special and not start))
        start = end
    return count


def _stop_reason(c, calls: int) -> str:
    if c.finish_reason == "length":
        return "max_tokens"
    if calls:
        return "tool_use"
    return "stop_sequence" if isinstance(c.stop_reason, str) else "end_turn"


def _logprobs(c, request: ChatRequest) -> list[TokenLogprob] | None:
    if not request.logprobs or c.logprobs is None:
        return None
    return [_token_logprob(token, entries, request.top_logprobs)
            for token, entries in zip(c.token_ids, c.logprobs, strict=True)]


def _token_logprob(token: int, entries: dict, top: int) -> TokenLogprob:
    """The engine's entry for one position (the token there and the likeliest ones, by id)."""
    chosen = entries[token]
    likeliest = sorted(entries.items(), key=lambda item: item[1].rank)[:top]
    return TokenLogprob(
        _text(chosen), chosen.logprob, list(_text(chosen).encode()),
        [TokenLogprob(_text(e), e.logprob, list(_text(e).encode()), id=t, rank=e.rank)
         for t, e in likeliest],
        id=token, rank=chosen.rank)


def _text(entry) -> str:
    return entry.decoded_token or ""


def _eos_ids(llm) -> list[int]:
    """The end-of-sequence ids, the tokenizer's own first (the end of a chat turn)."""
    first = getattr(llm.tokenizer, "eos_token_id", None)
    return sorted(llm.eos_token_ids, key=lambda t: (t != first, t))


def _generation_defaults(path: Path) -> dict:
    """Sampling defaults the checkpoint's authors chose (generation_config.json)."""
    try:
        config = json.loads((path / "generation_config.json").read_text())
    except (OSError, ValueError):
        return {}
    if config.get("do_sample") is False:
        return {"temperature": 0.0}
    keys = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
    return {k: config[k] for k in keys if config.get(k) is not None}
