"""Perplexity: tenshu against llama.cpp on the same GGUF files and the same token ids.

  python benchmarks/perplexity.py                          # tenshu-tiny: bf16 Q8_0 Q4_K_M Q6_K
  python benchmarks/perplexity.py --windows 4 --types bf16,q8_0
  python benchmarks/perplexity.py --texts heldout --conversations 1000
  python benchmarks/perplexity.py --models qwen3-4layers --texts pydoc

Models: tenshu-tiny (tenshu/assets, a trained 4-layer Llama, vocab 2,048, bf16), and
qwen3-4layers, quant.py's `--quick` checkpoint (the Qwen3-0.6B shape cut to 4 layers, random
bf16 weights: its perplexity measures nothing but the two engines' agreement). bf16 and Q8_0
files are written by tests/engine/gguf_files.py (gguf-py); Q4_K_M and Q6_K are made from the
bf16 file by llama.cpp's quantizer, with its per-tensor mix and fallbacks (a tensor whose rows
do not fill 256-wide K-quant blocks, such as tenshu-tiny's 704-wide down projection, falls
back: Q4_K to Q5_0, Q6_K to Q8_0). Files are cached in benchmarks/.cache, shared with quant.py.

Texts, each tokenized once with tenshu-tiny's tokenizer and scored as the same ids by both
engines (and by transformers on the source checkpoint, float32, as a reference):
- pydoc: held-out text nobody here wrote, the Python documentation that ships with the
  interpreter running this script (`pydoc_data.topics`, the reference's topics in plain text,
  sorted by name); --windows windows of --window tokens, evenly spaced over it. The default
  window is tenshu-tiny's context less one (tenshu must fit the one token it generates). For
  tenshu-tiny, trained only on cat chat, this text is far outside what it knows (perplexity
  above its vocabulary size), so it tests the engines' agreement more than the model.
- heldout: the first --conversations of tenshu-tiny's own held-out conversations, regenerated
  from its recipe (tenshu-train.json; never trained on), each rendered with the chat template
  and scored on its own, as training scored them (all of them give its recorded held-out
  loss, 0.4196 nats/token). In-domain: a perplexity near 1.5, where quantization shows.
Each window or conversation starts from an empty cache; its first token has no prediction and
is left out. tenshu: `prompt_logprobs=0` with `max_tokens=1`, once as prompts are computed and
once in chunks of 16 tokens (decode numerics: int8 activations on quantized files, the
default, as llama.cpp computes everything). llama.cpp: `Llama(logits_all=
True)`, log-softmax in float64. Perplexity is exp of the mean negative log-probability over
all scored tokens of a text.
Results print as they come and are saved to benchmarks/results/perplexity-<time>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import llamacpp_peer  # noqa: E402
from benchmarks.engine import CACHE, RESULTS, checkpoint  # noqa: E402
from benchmarks.quant import gguf_from  # noqa: E402
from tenshu import LLM, SamplingParams  # noqa: E402
from tenshu.core.errors import ModelLoadError  # noqa: E402

TINY = ROOT / "tenshu" / "assets" / "tenshu-tiny"
MODELS = ("tenshu-tiny", "qwen3-4layers")
TYPES = ("bf16", "q8_0", "q4_k_m", "q6_k")
TEXTS = ("pydoc", "heldout")
TOLERANCE = 0.01  # the goal: within 1% of llama.cpp's perplexity


# -- the model, its files, the text --------------------------------------------------------------


def source(model: str) -> Path:
    """The transformers checkpoint the GGUF files are written from. tenshu-tiny is staged in
    the cache: its tokenizer_config names no BOS token (the model has none), which the GGUF
    writer needs, so the stage names <|endoftext|> (the GGUF says not to add it)."""
    if model == "qwen3-4layers":
        return checkpoint(quick=True)
    stage = CACHE / "tenshu-tiny"
    config = json.loads((TINY / "tokenizer_config.json").read_text())
    if not (stage / "tokenizer_config.json").is_file():
        stage.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "generation_config.json", "model.safetensors",
                     "tokenizer.json"):
            (stage / name).symlink_to(TINY / name)
        config.setdefault("bos_token", "<|endoftext|>")
        (stage / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return stage


def gguf_file(model: str, kind: str) -> Path:
    """`model` as a GGUF file of `kind`, made once and cached (quant.py's names)."""
    return gguf_from(source(model), kind)


def tensor_types(path: Path) -> dict[str, int]:
    """How many of the file's 2-D tensors are in each GGML type."""
    from gguf import GGUFReader

    counts: dict[str, int] = {}
    for t in GGUFReader(path).tensors:
        if len(t.shape) == 2:
            counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


def pydoc_text(count: int, length: int) -> tuple[dict, list[list[int]]]:
    """`count` windows of `length` tokens, evenly spaced over the Python documentation."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer

    text = "\n\n".join(topics[name] for name in sorted(topics))
    ids = Tokenizer.from_file(str(TINY / "tokenizer.json")).encode(text).ids
    if count * length > len(ids):
        raise SystemExit(f"the text has {len(ids)} tokens, fewer than {count} x {length}")
    stride = (len(ids) - length) // max(count - 1, 1)
    about = {"source": f"pydoc_data.topics of Python {sys.version.split()[0]}",
             "chars": len(text), "tokens": len(ids), "windows": count, "window_tokens": length,
             "sha256": hashlib.sha256(text.encode()).hexdigest()}
    return about, [ids[i * stride : i * stride + length] for i in range(count)]


def heldout_text(count: int) -> tuple[dict, list[list[int]]]:
    """The first `count` of tenshu-tiny's held-out conversations, as its training encoded them."""
    from transformers import PreTrainedTokenizerFast

    from tenshu.learn import corpus, dataset

    recipe = json.loads((TINY / "tenshu-train.json").read_text())["recipe"]
    conversations = corpus.generate_corpus(recipe["conversations"], seed=recipe["seed"])
    n_heldout = max(1, round(len(conversations) * recipe["heldout_fraction"]))
    count = min(count, n_heldout)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(TINY)
    rows, _ = dataset.encode(tokenizer, [c.messages for c in conversations[:count]],
                             tokenizer.model_max_length)
    about = {"source": f"tenshu-tiny's held-out conversations (the first {count} of "
                       f"{n_heldout}, seed {recipe['seed']})", "conversations": len(rows),
             "tokens": sum(map(len, rows))}
    return about, rows


# -- the engines ---------------------------------------------------------------------------------


def tenshu_logprobs(path: Path, wins: list[list[int]], decode_numerics: bool = False
                    ) -> list[np.ndarray]:
    """decode_numerics: prompts in chunks of 16 tokens, so that every product takes the path a
    decode step takes (int8 activations on a quantized file) instead of the GEMM a long prompt
    takes (bf16 or float32): what the tokens tenshu generates are computed with."""
    chunks = {"max_num_batched_tokens": 16} if decode_numerics else {}
    llm = LLM(path, skip_tokenizer_init=True, max_num_seqs=len(wins), kv_cache_memory_gib=1,
              **chunks)
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0)
    outs = llm.generate([{"prompt_token_ids": w} for w in wins], params)
    return [np.array([entries[t].logprob for entries, t in zip(o.prompt_logprobs[1:], w[1:],
                                                               strict=True)])
            for o, w in zip(outs, wins, strict=True)]


def transformers_logprobs(src: Path, wins: list[list[int]]) -> list[np.ndarray]:
    """The source checkpoint in float32 (a bf16 checkpoint's weights exactly as the bf16 file
    holds them), log-softmax in float64."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    out = []
    with torch.inference_mode():
        for w in wins:
            ids = torch.tensor([w])
            logits = model(ids).logits[0, :-1].double()  # [n - 1, V]
            lp = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
            out.append(lp.numpy())
    return out


def perplexity(logprobs: list[np.ndarray]) -> float:
    return math.exp(-float(np.concatenate(logprobs).mean()))


def difference(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    """Per-token log-probability differences a - b."""
    d = np.concatenate(a) - np.concatenate(b)
    return {"mean": float(d.mean()), "mean_abs": float(np.abs(d).mean()),
            "max_abs": float(np.abs(d).max())}


# -- main ----------------------------------------------------------------------------------------


def run_model(model: str, kinds: list[str], wins: list[list[int]], threads: int) -> dict:
    src = source(model)
    res: dict = {"source": str(src.relative_to(ROOT)), "files": {}}
    start = time.perf_counter()
    reference = transformers_logprobs(src, wins)
    res["transformers"] = {"ppl": perplexity(reference),
                           "seconds": time.perf_counter() - start}
    print(f"== {model}: transformers (source checkpoint, float32) ppl "
          f"{res['transformers']['ppl']:.4f}", flush=True)
    for kind in kinds:
        path = gguf_file(model, kind)
        r = res["files"][kind] = {"file": path.name, "tensor_types": tensor_types(path)}
        start = time.perf_counter()
        theirs = llamacpp_peer.prompt_logprobs(path, wins, threads)
        r["llamacpp"] = {"ppl": perplexity(theirs), "seconds": time.perf_counter() - start}
        start = time.perf_counter()
        try:
            ours = tenshu_logprobs(path, wins)
        except ModelLoadError as e:
            r["tenshu"] = {"error": str(e)}
        else:
            r["tenshu"] = {"ppl": perplexity(ours), "seconds": time.perf_counter() - start}
            r["ratio_tenshu_over_llamacpp"] = r["tenshu"]["ppl"] / r["llamacpp"]["ppl"]
            r["within_1pct"] = abs(r["ratio_tenshu_over_llamacpp"] - 1) <= TOLERANCE
            r["logprob_tenshu_minus_llamacpp"] = difference(ours, theirs)
            r["logprob_tenshu_minus_transformers"] = difference(ours, reference)
            start = time.perf_counter()
            decoding = tenshu_logprobs(path, wins, decode_numerics=True)
            r["tenshu_decode_numerics"] = {
                "ppl": perplexity(decoding), "seconds": time.perf_counter() - start,
                "ratio_over_llamacpp": perplexity(decoding) / r["llamacpp"]["ppl"],
                "logprob_minus_llamacpp": difference(decoding, theirs)}
        r["logprob_llamacpp_minus_transformers"] = difference(theirs, reference)
        print(f"{kind}: {json.dumps(r)}", flush=True)
    return res


def table(results: dict) -> str:
    lines = ["| text | model | file | tenshu ppl | llama.cpp ppl | tenshu / llama.cpp | "
             "within 1% | decode numerics / llama.cpp |",
             "|---|---|---|---:|---:|---:|---|---:|"]
    for text, one in results["texts"].items():
        for model, res in one["models"].items():
            head = f"| {text} | {model} |"
            lines.append(f"{head} transformers, float32 | {res['transformers']['ppl']:.4f} "
                         "| | | | |")
            for kind, r in res["files"].items():
                lc = f"{r['llamacpp']['ppl']:.4f}"
                if "error" in r["tenshu"]:
                    lines.append(f"{head} {kind} | not loaded | {lc} | | | |")
                    continue
                ok = "yes" if r["within_1pct"] else "**no**"
                dec = r["tenshu_decode_numerics"]["ratio_over_llamacpp"]
                lines.append(f"{head} {kind} | {r['tenshu']['ppl']:.4f} | {lc} | "
                             f"{r['ratio_tenshu_over_llamacpp']:.4f} | {ok} | {dec:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tenshu-tiny", help=f"of {','.join(MODELS)}")
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--texts", default=",".join(TEXTS))
    parser.add_argument("--windows", type=int, default=8, help="pydoc windows")
    parser.add_argument("--window", type=int, default=None,
                        help="tokens a pydoc window (default: tenshu-tiny's context less one)")
    parser.add_argument("--conversations", type=int, default=64,
                        help="held-out conversations (1,000 in all)")
    args = parser.parse_args(argv)
    models, kinds, texts = args.models.split(","), args.types.split(","), args.texts.split(",")
    if unknown := set(models) - set(MODELS) | set(kinds) - set(TYPES) | set(texts) - set(TEXTS):
        parser.error(f"unknown {sorted(unknown)}: models are {MODELS}, types {TYPES}, "
                     f"texts {TEXTS}")
    if importlib.util.find_spec("llama_cpp") is None:
        parser.error("llama-cpp-python is not installed (see benchmarks/llamacpp_peer.py)")
    length = args.window or json.loads((TINY / "config.json").read_text())[
        "max_position_embeddings"] - 1
    threads = torch.get_num_threads()
    results: dict = {
        "threads": threads, "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "llamacpp": llamacpp_peer.LLAMA_CPP_PYTHON_VERSION, "texts": {},
    }
    for text in texts:
        about, wins = pydoc_text(args.windows, length) if text == "pydoc" else \
            heldout_text(args.conversations)
        about["scored_tokens"] = sum(len(w) - 1 for w in wins)
        one = results["texts"][text] = {**about, "models": {}}
        print(f"=== {text}: {json.dumps(about)}", flush=True)
        for model in models:
            one["models"][model] = run_model(model, kinds, wins, threads)
    print(table(results))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"perplexity-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
