"""EmbeddedBackend: a ChatRequest answered by tenshu's own engine, in this process.

Templating (chat/), sampling defaults from the checkpoint's generation_config, fitting
max_tokens to the context window, and turning the engine's RequestOutputs into the ChatEvent
sequence every protocol encodes.

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
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from tenshu.backends.base import BackendStats
from tenshu.chat.reply import OutputShape, Reply, output_shape
from tenshu.chat.structured import GrammarCompiler
from tenshu.chat.template import prompt_text, tool_format
from tenshu.core.errors import ContextLengthError, InvalidRequestError, ShuttingDownError
from tenshu.core.events import (
    ChatEvent,
    MessageFinish,
    MessageStart,
    TokenLogprob,
    Usage,
)
from tenshu.core.messages import TextBlock, ToolResultBlock
from tenshu.core.models import ModelInfo
from tenshu.core.request import ChatRequest
from tenshu.core.weights import gguf_format
from tenshu.engine import (
    AsyncEngine,
    EngineConfig,
    LoRARequest,
    RequestOutputKind,
    SamplingParams,
)
from tenshu.engine.quant import QuantWeight

_ids = itertools.count()


class EmbeddedBackend:
    def __init__(self, name: str, config: EngineConfig):
        self.config = config
        self.engine = AsyncEngine(config)
        self.llm = self.engine.engine
        self.defaults = _generation_defaults(Path(config.model))
        tokenizer = self.llm.tokenizer
        self.grammars = GrammarCompiler(tokenizer, self.llm.vocab_size, _eos_ids(self.llm))
        self.tool_format = tool_format(tokenizer)
        self.info = _model_info(name, config, self.llm)
        self.max_token_chars = _max_token_chars(tokenizer)
        self._prompt_tokens = 0
        self._cached_tokens = 0

    # -- the Backend interface ----------------------------------------------------------------

    async def chat(self, request: ChatRequest, lora: LoRARequest | None = None
                   ) -> AsyncIterator[ChatEvent]:
        """The reply's events; with `lora`, from that adapter (one the engine holds)."""
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
        async for out in self.engine.generate(request_id, {"prompt_token_ids": ids}, params,
                                              lora):
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
        tokenizer = self.llm.tokenizer
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
        return len(await asyncio.to_thread(self.prompt_ids, request))

    def stats(self) -> BackendStats:
        scheduler, blocks = self.llm.scheduler, self.llm.block_manager
        used = 1 - blocks.num_free_blocks / max(1, blocks.num_blocks)
        return BackendStats(len(scheduler.running), len(scheduler.waiting),
                            self.config.max_num_seqs, used)

    def prefix_cache_counts(self) -> tuple[int, int]:
        """(prompt tokens seen, of which served from the prefix cache)."""
        return self._prompt_tokens, self._cached_tokens

    async def abort_all(self) -> None:
        for request_id in list(self.llm.requests):
            await self.engine.abort(request_id)

    def close(self) -> None:
        self.engine.shutdown()

    # -- request -> engine --------------------------------------------------------------------

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        """The prompt's token ids; raises ContextLengthError when they cannot fit the window.
        Slow for a large prompt: not for the event loop."""
        tokenizer = self.llm.tokenizer
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


def _model_info(name: str, config: EngineConfig, llm) -> ModelInfo:
    path = Path(config.model)
    gguf = path.is_file()  # a .gguf file or an Ollama blob (engine/loader.py's is_gguf)
    weights = path.stat().st_size if gguf else sum(
        f.stat().st_size for f in path.glob("*.safetensors"))
    hf = llm.hf_config
    arch = (getattr(hf, "architectures", None) or [""])[0]
    params = sum(p.numel() for p in llm.runner.model.parameters()) + sum(
        m.shape.numel() for m in llm.runner.model.modules() if isinstance(m, QuantWeight))
    # The dtype the weights are held in, which is what Ollama's quantization_level reports: a
    # bf16 checkpoint stays bf16 in memory even where the engine computes in float32 (a CPU
    # without native bf16, engine/config.py), so `llm.dtype`, the compute dtype, would say F32.
    by_dtype = Counter()
    for p in llm.runner.model.parameters():
        by_dtype[p.dtype] += p.numel()
    weights_dtype = by_dtype.most_common(1)[0][0] if by_dtype else llm.dtype
    template = getattr(llm.tokenizer, "chat_template", "") or ""
    # the decoder Linears' format, where they are quantized (engine/quant)
    qc = getattr(hf, "quantization_config", None)
    quantization = config.quantization or (qc.get("quant_method") if isinstance(qc, dict) else None)
    if gguf:  # as Ollama reports a GGUF's: Q4_K_M, Q8_0, F16
        quantization = gguf_format(path).removeprefix("GGUF ")
    return ModelInfo(
        name=name,
        context_window=llm.max_model_len,
        created=int(path.stat().st_mtime),
        family=getattr(hf, "model_type", "") or arch,
        parameters=params,
        dtype=quantization or str(weights_dtype).removeprefix("torch."),
        size_bytes=weights,
        path=str(path),
        chat_template=template if isinstance(template, str) else "",
    )
