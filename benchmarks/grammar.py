"""Structured output: the grammar library, the cost of a token mask, and constrained throughput.

  python benchmarks/grammar.py                    # everything (throughput: about an hour here)
  python benchmarks/grammar.py --only library     # one section: library, throughput, compile
  python benchmarks/grammar.py --quick            # throughput on a 4-layer model, short requests

All on a realistic vocabulary: a byte-level BPE tokenizer of 151,643 tokens (Qwen's size) plus
Qwen's special tokens at the same ids, trained once on the sources of the Python standard
library, torch and transformers (about a minute) and kept in benchmarks/.cache; masks are
151,936 wide (Qwen's vocab_size).

- library: llguidance (tenshu's dependency, through tenshu.chat.structured) against xgrammar
  (not a dependency; measured when installed: `pip install xgrammar==0.2.8`). Tokenizer setup
  (once per model); compile time of four schemas with every cache cleared, and the first mask
  after it; then 64 matchers (the four schemas in turn) advanced together, a finished matcher
  restarted, by sampling from random logits masked by the grammar and again through real
  documents: median time per step to fill the 64-row bitmask, to apply it with the library's
  own kernel, and through tenshu's sampler (`tenshu.engine.sampling._mask`: fill, then
  tenshu's apply), which is what decoding pays.
- throughput: the engine workload (64 requests, lengths uniform in 64..512, seeded, temperature
  1 with a seed per request) on a Qwen3-0.6B-shaped random checkpoint carrying the 151k
  tokenizer. Run A: none constrained (EOS ignored). Run B: the same requests, every other one
  constrained by a JSON schema that cannot finish before max_tokens (an array with minItems
  10000), so both runs generate the same tokens and the ratio is the per-token cost. A and B
  alternate in one process (--rounds each); medians. Goal: B >= 90% of A. Also the share of
  B's time spent in tenshu's _mask, the constrained run's own extra work (the ratio alone
  moves with whatever else the machine runs). Every constrained output is checked: max_tokens
  long, finished by length, and accepted by a fresh matcher.
- compile: the same schema compiled a second time (the compiler's cache) against the first.
Results print as tables and are saved to benchmarks/results/grammar-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import llguidance
import llguidance.hf
import llguidance.torch
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.engine import CACHE, RESULTS, workload  # noqa: E402
from tenshu import LLM, SamplingParams  # noqa: E402
from tenshu.chat.structured import JSON_OPTIONS, GrammarCompiler  # noqa: E402
from tenshu.engine import sampling  # noqa: E402
from tenshu.engine.sampling import _mask  # noqa: E402
from tests.checkpoints import QWEN3_06B_SHAPE, make_checkpoint  # noqa: E402

VOCAB = 151_936  # Qwen's vocab_size: the width of logits and masks
BPE_TOKENS = 151_643  # Qwen's regular tokens; its special tokens follow at these ids
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # 151643, 151644, 151645
TOKENIZER = CACHE / "bpe-151k"
BATCH = 64

# -- schemas -----------------------------------------------------------------------------------
# additionalProperties is spelled out everywhere: the two libraries default differently.

FLAT = {
    "type": "object",
    "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"}, "email": {"type": "string"},
        "active": {"type": "boolean"}, "score": {"type": "number"},
    },
    "required": ["name", "age", "email", "active", "score"],
    "additionalProperties": False,
}
NESTED = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]},
                 "minItems": 1, "maxItems": 4},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"},
                           "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"], "additionalProperties": False,
        },
        "orders": {
            "type": "array", "minItems": 1, "maxItems": 5,
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                               "qty": {"type": "integer", "minimum": 1, "maximum": 99},
                               "status": {"enum": ["open", "shipped", "returned"]}},
                "required": ["sku", "qty", "status"], "additionalProperties": False,
            },
        },
    },
    "required": ["name", "age", "tags", "address", "orders"],
    "additionalProperties": False,
}
TOOL = {  # Claude Code's TodoWrite tool, as it sends it
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "todos": {
            "type": "array", "description": "The updated todo list",
            "items": {
                "type": "object",
                "properties": {
                    "content": {"type": "string", "minLength": 1},
                    "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
                    "activeForm": {"type": "string", "minLength": 1},
                },
                "required": ["content", "status", "activeForm"], "additionalProperties": False,
            },
        },
    },
    "required": ["todos"],
    "additionalProperties": False,
}
REFS = {
    "$defs": {
        "point": {"type": "object",
                  "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                  "required": ["x", "y"], "additionalProperties": False},
        "circle": {"type": "object",
                   "properties": {"kind": {"const": "circle"}, "center": {"$ref": "#/$defs/point"},
                                  "radius": {"type": "number", "minimum": 0}},
                   "required": ["kind", "center", "radius"], "additionalProperties": False},
        "polygon": {"type": "object",
                    "properties": {"kind": {"const": "polygon"},
                                   "points": {"type": "array", "items": {"$ref": "#/$defs/point"},
                                              "minItems": 3}},
                    "required": ["kind", "points"], "additionalProperties": False},
        "group": {"type": "object",
                  "properties": {"kind": {"const": "group"},
                                 "children": {"type": "array", "items": {"$ref": "#/$defs/shape"}}},
                  "required": ["kind", "children"], "additionalProperties": False},
        "shape": {"anyOf": [{"$ref": "#/$defs/circle"}, {"$ref": "#/$defs/polygon"},
                            {"$ref": "#/$defs/group"}]},
    },
    "type": "object",
    "properties": {"title": {"type": "string"}, "shapes": {"type": "array",
                                                           "items": {"$ref": "#/$defs/shape"}}},
    "required": ["title", "shapes"],
    "additionalProperties": False,
}
SCHEMAS = {"flat": FLAT, "nested": NESTED, "tool (TodoWrite)": TOOL, "$defs/$ref/anyOf": REFS}
# one real (compact) document per schema, for the mask loop's second trajectory
DOCUMENTS = [
    {"name": "Ada Lovelace", "age": 36, "email": "ada@example.com", "active": True, "score": 97.5},
    {"name": "Grace Hopper", "age": 85, "tags": ["red", "blue"],
     "address": {"city": "Arlington", "zip": "22201"},
     "orders": [{"sku": "ABC-1234", "qty": 2, "status": "shipped"},
                {"sku": "XYZ-0042", "qty": 1, "status": "open"}]},
    {"todos": [
        {"content": "Run the test suite", "status": "completed",
         "activeForm": "Running the test suite"},
        {"content": "Fix the failing grammar test", "status": "in_progress",
         "activeForm": "Fixing the failing grammar test"},
        {"content": "Write the benchmark notes", "status": "pending",
         "activeForm": "Writing the benchmark notes"}]},
    {"title": "Logo", "shapes": [
        {"kind": "circle", "center": {"x": 0, "y": 0}, "radius": 1.5},
        {"kind": "polygon", "points": [{"x": 0, "y": 0}, {"x": 1, "y": 0}, {"x": 0, "y": 1}]},
        {"kind": "group", "children": [{"kind": "circle", "center": {"x": 2, "y": 2},
                                        "radius": 0.5}]}]},
]
# never complete before max_tokens: every constrained request generates all of its tokens
ENDLESS = {
    "type": "object",
    "properties": {"rows": {"type": "array", "minItems": 10000, "items": NESTED["properties"]
                            ["orders"]["items"]}},
    "required": ["rows"],
    "additionalProperties": False,
}


# -- the tokenizer -----------------------------------------------------------------------------


def tokenizer():
    """The 151k byte-level BPE tokenizer, trained on first use."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not (TOKENIZER / "tokenizer.json").is_file():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        # the standard library alone yields only ~123k merges; torch and transformers are
        # pinned dependencies, so the corpus (and the tokenizer) is the same wherever it runs
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        packages = Path(sysconfig.get_paths()["purelib"])
        files = [p for p in sorted(stdlib.rglob("*.py")) if "site-packages" not in p.parts]
        for package in ("torch", "transformers"):
            files += sorted((packages / package).rglob("*.py"))

        def texts():
            for f in files:
                try:
                    yield f.read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError):
                    continue

        print(f"training a {BPE_TOKENS:,}-token BPE on {len(files)} Python files ...", flush=True)
        start = time.perf_counter()
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=BPE_TOKENS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        bpe.train_from_iterator(texts(), trainer)
        bpe.add_special_tokens(SPECIALS)  # after the BPE tokens, at Qwen's ids
        print(f"  {bpe.get_vocab_size():,} tokens in {time.perf_counter() - start:.0f} s")
        PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>",
                                pad_token="<|endoftext|>").save_pretrained(TOKENIZER)
    return AutoTokenizer.from_pretrained(TOKENIZER)


# -- library -----------------------------------------------------------------------------------


class _XgrMatcher:
    """An xgrammar matcher as the engine's Constraint (tenshu's llguidance Matcher's twin)."""

    __slots__ = ("_m",)

    def __init__(self, matcher):
        self._m = matcher

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        self._m.fill_next_token_bitmask(bitmask, row)

    def accept(self, token: int) -> bool:
        return self._m.accept_token(token)

    def finished(self) -> bool:
        return self._m.is_terminated()


class _XgrGrammar:
    def __init__(self, compiled):
        self.compiled = compiled

    def new(self) -> _XgrMatcher:
        import xgrammar

        return _XgrMatcher(xgrammar.GrammarMatcher(self.compiled))


class _Row:  # what _mask reads of a sequence
    __slots__ = ("constraint",)

    def __init__(self, constraint):
        self.constraint = constraint


def _llguidance(tok, eos: int) -> dict:
    """Setup time, compile (tenshu's own compiler), clearing its cache, the library's apply."""
    compiler = GrammarCompiler(tok, VOCAB, [eos])
    start = time.perf_counter()
    compiler.tokenizer  # noqa: B018 - built on first use
    setup = time.perf_counter() - start
    return {"setup_s": setup, "compile": compiler.json_schema,
            "clear": compiler._cache.clear,  # the grammar cache; the tokenizer stays
            "apply": llguidance.torch.apply_token_bitmask_inplace}


def _xgrammar(tok, eos: int) -> dict | None:
    try:
        import xgrammar
    except ImportError:
        return None
    start = time.perf_counter()
    info = xgrammar.TokenizerInfo.from_huggingface(tok, vocab_size=VOCAB, stop_token_ids=[eos])
    compiler = xgrammar.GrammarCompiler(info, max_threads=torch.get_num_threads())
    setup = time.perf_counter() - start

    def compile(schema):  # compact JSON, the language tenshu's llguidance grammars take
        return _XgrGrammar(compiler.compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=(",", ":")))

    return {"setup_s": setup, "compile": compile, "clear": compiler.clear_cache,
            "apply": xgrammar.apply_token_bitmask_inplace}


def compile_times(lib: dict, repeats: int) -> dict:
    """Per schema: median cold compile, and the first mask after it (llguidance builds its
    lexer lazily, so part of its compile is paid here)."""
    words = -(-VOCAB // 32)
    out = {}
    for name, schema in SCHEMAS.items():
        compiles, firsts = [], []
        for _ in range(repeats):
            lib["clear"]()
            start = time.perf_counter()
            grammar = lib["compile"](schema)
            compiles.append(time.perf_counter() - start)
            bitmask = torch.zeros(1, words, dtype=torch.int32)
            start = time.perf_counter()
            grammar.new().fill_bitmask(bitmask, 0)
            firsts.append(time.perf_counter() - start)
        out[name] = {"compile_s": statistics.median(compiles),
                     "first_mask_s": statistics.median(firsts)}
    return out


def mask_cost(grammars: list, apply, steps: int, docs: list[list[int]] | None = None) -> dict:
    """64 matchers decoding together (row i follows schema i % 4); medians per step of the fill,
    the library's apply, and tenshu's _mask (fill + tenshu's apply).

    The next token is a sample from random logits under the mask (a random walk: once inside a
    free string it seldom leaves), or with `docs` the next token of a real document of the
    schema, each row starting at a different offset. The same seeded trajectory is walked
    twice, once per kind of timing, so no state is filled twice."""
    words = -(-VOCAB // 32)

    def run(timed_mask: bool) -> tuple[list[float], list[float], int]:
        gen = torch.Generator().manual_seed(0)
        rows, positions = [], []
        for i in range(BATCH):
            rows.append(_Row(grammars[i % len(grammars)].new()))
            positions.append(0)
            if docs:  # spread the rows over their documents
                doc = docs[i % len(docs)]
                positions[i] = i * 7 % len(doc)
                if not all(rows[i].constraint.accept(t) for t in doc[: positions[i]]):
                    raise RuntimeError(f"the {i % len(docs)}th document does not match")
        index = list(range(BATCH))
        bitmask = torch.zeros(BATCH, words, dtype=torch.int32)  # [64, 4748]
        first, second, restarts = [], [], 0
        for _ in range(steps):
            logits = torch.randn(BATCH, VOCAB, generator=gen)  # [64, V]
            if timed_mask:
                start = time.perf_counter()
                _mask(logits, rows, index)
                first.append(time.perf_counter() - start)
            else:
                start = time.perf_counter()
                for i, row in enumerate(rows):
                    row.constraint.fill_bitmask(bitmask, i)
                first.append(time.perf_counter() - start)
                start = time.perf_counter()
                apply(logits, bitmask)
                second.append(time.perf_counter() - start)
            sampled = logits.argmax(dim=-1).tolist()  # randn logits: a uniform sample
            for i, row in enumerate(rows):
                doc = docs[i % len(docs)] if docs else None
                token = doc[positions[i]] if doc else sampled[i]
                if not row.constraint.accept(token):
                    raise RuntimeError(f"row {i}: the grammar refused token {token}")
                positions[i] += 1
                if row.constraint.finished() or (doc and positions[i] == len(doc)):
                    row.constraint, positions[i] = grammars[i % len(grammars)].new(), 0
                    restarts += 1
        return first, second, restarts

    fill, apply_times, restarts = run(timed_mask=False)
    tenshu, _, _ = run(timed_mask=True)
    return {"fill_ms": statistics.median(fill) * 1e3,
            "fill_us_per_row": statistics.median(fill) / BATCH * 1e6,
            "apply_ms": statistics.median(apply_times) * 1e3,
            "tenshu_mask_ms": statistics.median(tenshu) * 1e3,
            "steps": steps, "restarts": restarts}


def parallel_fill_llguidance(tok, eos: int, steps: int) -> float:
    """Median ms per step of llguidance's own parallel fill (LLExecutor) over the random walk:
    what tenshu would gain by filling rows on several threads."""
    ltok = llguidance.hf.from_tokenizer(tok, n_vocab=VOCAB, eos_token=eos)
    grammars = [llguidance.LLMatcher.grammar_from_json_schema(json.dumps(s), defaults=JSON_OPTIONS)
                for s in SCHEMAS.values()]
    executor = llguidance.LLExecutor(num_threads=torch.get_num_threads())
    matchers = [llguidance.LLMatcher(ltok, grammars[i % len(grammars)]) for i in range(BATCH)]
    bitmask = llguidance.torch.allocate_token_bitmask(BATCH, VOCAB)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        logits = torch.randn(BATCH, VOCAB, generator=gen)
        start = time.perf_counter()
        llguidance.torch.fill_next_token_bitmask_par(
            executor, [(m, i) for i, m in enumerate(matchers)], bitmask)
        times.append(time.perf_counter() - start)
        llguidance.torch.apply_token_bitmask_inplace(logits, bitmask)
        for i, token in enumerate(logits.argmax(dim=-1).tolist()):
            matchers[i].consume_token(token)
            if matchers[i].is_stopped():
                matchers[i] = llguidance.LLMatcher(ltok, grammars[i % len(grammars)])
    return statistics.median(times) * 1e3


def libraries(tok, eos: int) -> dict:
    libs = {"llguidance": _llguidance(tok, eos), "xgrammar": _xgrammar(tok, eos)}
    if libs["xgrammar"] is None:
        print("xgrammar is not installed, so only llguidance is measured; to compare them: "
              "pip install xgrammar==0.2.8")
    return {name: lib for name, lib in libs.items() if lib is not None}


def library(libs: dict, tok, eos: int, steps: int, repeats: int) -> dict:
    docs = [tok.encode(json.dumps(d, separators=(",", ":")), add_special_tokens=False)
            for d in DOCUMENTS]
    out: dict = {"document_tokens": [len(d) for d in docs]}
    for name, lib in libs.items():
        print(f"{name}: compiling, then {steps} steps of {BATCH} masks ...", flush=True)
        grammars = [lib["compile"](s) for s in SCHEMAS.values()]
        out[name] = {"setup_s": lib["setup_s"], "schemas": compile_times(lib, repeats),
                     "mask_random": mask_cost(grammars, lib["apply"], steps),
                     "mask_documents": mask_cost(grammars, lib["apply"], steps, docs)}
    out["llguidance"]["parallel_fill_ms"] = parallel_fill_llguidance(tok, eos, steps)
    return out


def compile_cache(libs: dict, repeats: int) -> dict:
    """Per library and schema, medians: a cold compile, then the same schema again."""
    out: dict = {}
    for name, lib in libs.items():
        out[name] = {}
        for schema_name, schema in SCHEMAS.items():
            firsts, seconds = [], []
            for _ in range(repeats):
                lib["clear"]()
                start = time.perf_counter()
                lib["compile"](schema)
                firsts.append(time.perf_counter() - start)
                start = time.perf_counter()
                lib["compile"](schema)
                seconds.append(time.perf_counter() - start)
            out[name][schema_name] = {"first_s": statistics.median(firsts),
                                      "second_s": statistics.median(seconds)}
    return out


# -- throughput --------------------------------------------------------------------------------


def checkpoint(quick: bool, tok) -> Path:
    """A Qwen3-0.6B-shaped random bf16 checkpoint carrying the 151k tokenizer."""
    shape = dict(QWEN3_06B_SHAPE)
    if quick:
        shape["num_hidden_layers"] = 4
    path = CACHE / ("qwen3-0.6b-shape-bf16-bpe151k" + ("-4layers" if quick else ""))
    if not (path / "config.json").is_file():
        from transformers import GenerationConfig

        print(f"making {path.name} (random bf16 weights) ...", flush=True)
        endoftext, im_end = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
        ids = {"bos_token_id": endoftext, "eos_token_id": im_end, "pad_token_id": endoftext}
        make_checkpoint(path, "qwen3", dtype=torch.bfloat16, tokenizer=False, **shape, **ids)
        GenerationConfig(**ids | {"eos_token_id": [im_end, endoftext]}).save_pretrained(path)
        tok.save_pretrained(path)
    return path


def throughput(path: Path, requests, rounds: int, kv_gib: float) -> dict:
    llm = LLM(path, max_num_seqs=len(requests), kv_cache_memory_gib=kv_gib,
              enable_prefix_caching=False)  # the runs repeat prompts; each must prefill them
    engine = llm.engine
    eos = sorted(engine.eos_token_ids, key=lambda t: (t != engine.tokenizer.eos_token_id, t))
    grammar = GrammarCompiler(engine.tokenizer, engine.vocab_size, eos).json_schema(ENDLESS)
    prompts = [{"prompt_token_ids": p} for p, _ in requests]

    def params(constrained: bool) -> list[SamplingParams]:
        return [
            SamplingParams(temperature=1, seed=i, max_tokens=o, constraint=grammar)
            if constrained and i % 2 else
            SamplingParams(temperature=1, seed=i, max_tokens=o, ignore_eos=True)
            for i, (_, o) in enumerate(requests)
        ]

    warm_up = SamplingParams(temperature=1, max_tokens=8, ignore_eos=True)
    llm.generate(prompts[:8], [warm_up] * 8)
    # The A/B ratio moves by several percent with whatever else runs on the machine; the time
    # spent masking is the constrained run's own extra work, so it is measured too.
    masking = [0.0]

    def timed_mask(*args) -> None:
        start = time.perf_counter()
        _mask(*args)
        masking[0] += time.perf_counter() - start

    runs: dict[str, list[dict]] = {"A": [], "B": []}
    sampling._mask = timed_mask
    try:
        for r in range(rounds):
            for name in ("A", "B"):
                print(f"  run {name}{r + 1} ...", flush=True)
                masking[0] = 0.0
                start = time.perf_counter()
                outs = llm.generate(prompts, params(name == "B"))
                seconds = time.perf_counter() - start
                tokens = sum(len(o.outputs[0].token_ids) for o in outs)
                run = {"seconds": seconds, "output_tokens": tokens,
                       "tokens_per_s": tokens / seconds, "mask_seconds": masking[0]}
                if name == "B":
                    run["constrained"] = _check(outs[1::2], requests[1::2], grammar)
                runs[name].append(run)
                print(f"    {run}", flush=True)
    finally:
        sampling._mask = _mask
    a = statistics.median(r["tokens_per_s"] for r in runs["A"])
    b = statistics.median(r["tokens_per_s"] for r in runs["B"])
    return {"model": path.name, "requests": len(requests), "runs": runs,
            "unconstrained_tokens_per_s": a, "half_constrained_tokens_per_s": b, "ratio": b / a,
            "preemptions": engine.scheduler.num_preemptions,
            "sample": engine.tokenizer.decode(_sample_completion(llm, prompts, grammar))}


def _sample_completion(llm: LLM, prompts, grammar) -> list[int]:
    """The first 60 tokens of one constrained completion, to show what the runs generate."""
    out = llm.generate(prompts[:1], SamplingParams(temperature=1, seed=1, max_tokens=60,
                                                   constraint=grammar))
    return out[0].outputs[0].token_ids


def _check(outs, requests, grammar) -> dict:
    """How the constrained completions ended, and whether each is a valid document's prefix."""
    reasons: dict[str, int] = {}
    full = valid = 0
    for out, (_, max_tokens) in zip(outs, requests, strict=True):
        c = out.outputs[0]
        reasons[c.finish_reason] = reasons.get(c.finish_reason, 0) + 1
        full += len(c.token_ids) == max_tokens
        matcher = grammar.new()
        valid += all(matcher.accept(t) for t in c.token_ids)
    return {"count": len(outs), "finish_reasons": reasons, "max_tokens_long": full,
            "valid_prefix": valid}


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="library,throughput,compile",
                        help="sections to run, comma-separated")
    parser.add_argument("--quick", action="store_true",
                        help="throughput on a 4-layer model with lengths in 32..128")
    parser.add_argument("--steps", type=int, default=100, help="decoding steps of the mask loop")
    parser.add_argument("--repeats", type=int, default=3, help="compiles per schema and section")
    parser.add_argument("--rounds", type=int, default=3, help="A/B pairs of throughput runs")
    parser.add_argument("--requests", type=int, default=64)
    args = parser.parse_args(argv)
    sections = set(args.only.split(","))
    tok = tokenizer()
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    results: dict = {"threads": torch.get_num_threads(), "vocab": VOCAB,
                     "tokenizer_tokens": len(tok), "batch": BATCH}
    libs = libraries(tok, eos) if sections & {"library", "compile"} else {}
    if "library" in sections:
        results["library"] = library(libs, tok, eos, args.steps, args.repeats)
    if "compile" in sections:
        results["compile"] = compile_cache(libs, args.repeats)
    if "throughput" in sections:
        lo, hi = (32, 128) if args.quick else (64, 512)
        requests = workload(BPE_TOKENS, args.requests, lo, hi)
        print(f"throughput: {args.requests} requests, lengths {lo}..{hi} ...", flush=True)
        results["throughput"] = throughput(checkpoint(args.quick, tok), requests, args.rounds,
                                           kv_gib=2 if args.quick else 10)
        results["throughput"]["lengths"] = [lo, hi]
    report(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"grammar-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"saved {out}")
    return 0


def report(r: dict) -> None:
    lib = {k: v for k, v in r.get("library", {}).items() if isinstance(v, dict)}
    if lib:
        names = list(lib)
        print(f"\nlibraries, vocabulary {r['tokenizer_tokens']:,} tokens, masks {VOCAB:,} wide:")
        print("| | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 1) + "|")
        print("| tokenizer setup (once per model) | "
              + " | ".join(f"{lib[n]['setup_s']:.2f} s" for n in names) + " |")
        for schema in SCHEMAS:
            print(f"| compile {schema}, then first mask | " + " | ".join(
                f"{lib[n]['schemas'][schema]['compile_s'] * 1e3:.1f} + "
                f"{lib[n]['schemas'][schema]['first_mask_s'] * 1e3:.1f} ms" for n in names) + " |")
        rows = [("fill the bitmask, per step", "fill_ms", "ms"),
                ("fill, per row", "fill_us_per_row", "us"),
                ("the library's apply, per step", "apply_ms", "ms"),
                ("tenshu's `_mask` (fill + tenshu's apply), per step", "tenshu_mask_ms", "ms")]
        for walk in ("random", "documents"):
            for label, key, unit in rows:
                print(f"| {walk}: {label} | " + " | ".join(
                    f"{lib[n]['mask_' + walk][key]:.2f} {unit}" for n in names) + " |")
        if "parallel_fill_ms" in lib.get("llguidance", {}):
            print(f"\nllguidance's own parallel fill (LLExecutor, {r['threads']} threads): "
                  f"{lib['llguidance']['parallel_fill_ms']:.2f} ms per step")
    if "compile" in r:
        print("\ncompile, first time / same schema again (cache):")
        for name, schemas in r["compile"].items():
            for schema, t in schemas.items():
                print(f"  {name:10} {schema:18} {t['first_s'] * 1e3:9.2f} ms / "
                      f"{t['second_s'] * 1e3:7.3f} ms")
    if "throughput" in r:
        t = r["throughput"]
        print(f"\nthroughput, {t['model']}, {t['requests']} requests, lengths {t['lengths']}:")
        for name, label in (("A", "none constrained"), ("B", "every other one constrained")):
            per_run = ", ".join(f"{x['tokens_per_s']:.1f}" for x in t["runs"][name])
            print(f"  {label:28} runs {per_run} tok/s")
        print(f"  B / A = {t['ratio']:.3f} (medians {t['half_constrained_tokens_per_s']:.1f} / "
              f"{t['unconstrained_tokens_per_s']:.1f}; goal >= 0.90); pair by pair "
              + ", ".join(f"{b['tokens_per_s'] / a['tokens_per_s']:.3f}"
                          for a, b in zip(t["runs"]["A"], t["runs"]["B"], strict=True)))
        share = statistics.median(b["mask_seconds"] / b["seconds"] for b in t["runs"]["B"])
        print(f"  B's time in tenshu's _mask: {share:.1%} (median), so B / A <= {1 - share:.3f} "
              "from masking alone")
        for i, run in enumerate(t["runs"]["B"]):
            print(f"  B{i + 1} constrained: {run['constrained']}")
        print(f"  a constrained completion begins: {t['sample']!r}")


if __name__ == "__main__":
    raise SystemExit(main())
