"""Prompt scoring, as lm-eval's loglikelihood tasks use a server: the engine's prompt_logprobs
side by side with transformers on the same checkpoint, in one run.

  python benchmarks/scoring.py                    # 32 prompts of 256 tokens, 3 repeats
  python benchmarks/scoring.py --prompts 64 --tokens 512 --repeats 5

The checkpoint is Qwen3-0.6B's shape cut to 4 layers (random bf16 weights, its 151,936-token
vocabulary: scoring computes the logits of every prompt position, so the vocabulary's matmul
and log-softmax are much of the work), both sides in float32 on the CPU.

- tenshu: LLM.generate over all prompts at once with SamplingParams(max_tokens=1,
  prompt_logprobs=1): the engine's continuous batching and chunked prefill; every prompt
  token's logprob with its rank and the likeliest alternative, as /v1/completions returns for
  echo with logprobs=1.
- transformers: the model's forward over the prompts in batches of --batch (the same length,
  so no padding), log_softmax over the logits, each token's logprob gathered and the likeliest
  alternative taken with topk: what lm-eval's HF model does.
- tenshu over HTTP: a live server, lm-eval's request (--batch token-id prompts per POST, echo,
  logprobs=1, max_tokens=1, temperature 0), the requests one after another as lm-eval sends
  them by default.

Each repeat runs every variant once, in turns that rotate, after a warm-up. Reported: scored
tokens per second (median over repeats) and each variant's ratio to transformers; and the
largest difference between the two sides' logprobs (they must agree). Results are saved to
benchmarks/results/scoring-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tenshu import LLM, SamplingParams  # noqa: E402
from tests.checkpoints import QWEN3_06B_SHAPE, make_checkpoint  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache"
RESULTS = ROOT / "benchmarks" / "results"


def checkpoint() -> Path:
    path = CACHE / "qwen3-0.6b-shape-bf16-4layers"
    if not (path / "config.json").is_file():
        print(f"making {path.name} (random bf16 weights) ...", flush=True)
        make_checkpoint(path, "qwen3", dtype=torch.bfloat16,
                        **{**QWEN3_06B_SHAPE, "num_hidden_layers": 4})
    return path


def prompts(count: int, length: int, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(8, vocab, (length,), generator=g).tolist() for _ in range(count)]


def tenshu_scores(llm: LLM, batch: list[list[int]]) -> list[list[float]]:
    params = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=1)
    outs = llm.generate([{"prompt_token_ids": p} for p in batch], params)
    return [[entry[t].logprob for t, entry in zip(p[1:], out.prompt_logprobs[1:], strict=True)]
            for p, out in zip(batch, outs, strict=True)]


@torch.inference_mode()
def hf_scores(model, batch: list[list[int]], size: int) -> list[list[float]]:
    scores = []
    for start in range(0, len(batch), size):
        ids = torch.tensor(batch[start:start + size])
        logprobs = torch.log_softmax(model(ids).logits[:, :-1].float(), dim=-1)
        chosen = logprobs.gather(-1, ids[:, 1:, None])[..., 0]
        logprobs.topk(1, dim=-1)  # the likeliest alternative, as lm-eval's is_greedy reads it
        scores += chosen.tolist()
    return scores


def http_scores(base_url: str, batch: list[list[int]], size: int) -> list[list[float]]:
    import httpx

    scores = []
    with httpx.Client(base_url=base_url, timeout=600) as client:
        for start in range(0, len(batch), size):
            body = {"model": "scorer", "prompt": batch[start:start + size], "echo": True,
                    "logprobs": 1, "max_tokens": 1, "temperature": 0}
            reply = client.post("/v1/completions", json=body)
            reply.raise_for_status()
            scores += [c["logprobs"]["token_logprobs"][1:-1] for c in reply.json()["choices"]]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    path = checkpoint()
    from transformers import AutoModelForCausalLM

    from tenshu.config import ModelSpec
    from tests.api.live import live_server

    llm = LLM(str(path), dtype="float32", max_num_seqs=args.batch * 2, kv_cache_memory_gib=2)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    batch = prompts(args.prompts, args.tokens, hf.config.vocab_size)
    scored = args.prompts * (args.tokens - 1)
    state = CACHE / "scoring-state.db"
    state.unlink(missing_ok=True)
    with live_server(state, key_name=None, embedder=False, dtype="float32",
                     models=(ModelSpec("scorer", str(path)),), max_num_seqs=args.batch * 2,
                     kv_cache_memory_gib=2) as live:
        variants = {
            "transformers": lambda: hf_scores(hf, batch, args.batch),
            "tenshu (in-process)": lambda: tenshu_scores(llm, batch),
            "tenshu (HTTP, lm-eval's requests)": lambda: http_scores(live.base_url, batch,
                                                                     args.batch),
        }
        answers = {name: run() for name, run in variants.items()}  # warm-up, and agreement
        reference = torch.tensor(answers["transformers"])
        gaps = {name: float((torch.tensor(a) - reference).abs().max())
                for name, a in answers.items()}
        times: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                start = time.perf_counter()
                variants[name]()
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["transformers"])
    rows = []
    print(f"\n{args.prompts} prompts x {args.tokens} tokens ({scored} scored), "
          f"{torch.get_num_threads()} threads, float32")
    print(f"{'variant':<36}{'tokens/s':>10}{'vs transformers':>17}{'max |diff|':>12}")
    for name in names:
        median = statistics.median(times[name])
        rows.append({"variant": name, "seconds": times[name], "tokens_per_s": scored / median,
                     "ratio": base / median, "max_abs_diff": gaps[name]})
        print(f"{name:<36}{scored / median:>10.0f}{base / median:>16.2f}x{gaps[name]:>12.2e}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"scoring-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"saved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
