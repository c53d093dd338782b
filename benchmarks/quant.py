"""GGUF benchmarks: tenshu against llama.cpp on the same files, side by side in one run.

  python benchmarks/quant.py                       # every section, bf16 Q8_0 Q4_0 Q4_K_M
  python benchmarks/quant.py --quick               # the 4-layer model, for development
  python benchmarks/quant.py --only decode,prefill --types q8_0,q4_0
  python benchmarks/quant.py --only profile --types q8_0,q4_0
  python benchmarks/quant.py --shape qwen2.5-7b --types q8_0,q4_k_m --decode-tokens 32

The model is benchmarks/engine.py's checkpoint (the Qwen3-0.6B shape, random bf16 weights), or
with `--shape qwen2.5-7b` the 7B class (QWEN25_7B_SHAPE: its files are made as said there).
bf16, Q8_0 and Q4_0 files are written by tests/engine/gguf_files.py (gguf-py's writer and
quantizer: every 2-D weight in the file's type, norms F32, the tied embedding once). Q4_K_M is
made from the bf16 file by llama.cpp's own quantizer (`llama_model_quantize`), so it has
llama.cpp's mix (Q4_K, with Q6_K for some v and down projections and the embedding). Each
engine runs every file, so each reads the other's.

Sections, file by file, the two engines taking turns (A, B, A, B; the best of --repeats):
- decode: single-stream decode tokens/s (64-token prompt, 128 new tokens, greedy, EOS ignored),
  against the bandwidth limit: the weight bytes read per token (the file's 2-D tensors) over
  the streaming read bandwidth measured here (engine.py's `read_bandwidth`). With
  `--decode-context N` the prompt is N tokens, so the new tokens attend to a long context.
- prefill: prompt processing of a 2,048-token prompt (tenshu: `max_tokens=1`, 512-token
  chunks; llama.cpp: n_batch 512, up to the first token's logits).
- concurrent: --streams requests at once (64-token prompts, --stream-tokens new tokens). tenshu:
  `LLM.generate` on all of them, with as many slots; llama.cpp: as many sequences in one
  context through `llama_decode` (llamacpp_peer.throughput's continuous batching). The same
  against llama-server, over HTTP: benchmarks/serving.py.
- profile: tenshu alone, 16 decode steps under torch.profiler: the top ops (tenshu's CPU
  kernels as `tenshu_cpu::*`), and the share of the step spent in inductor's compiled GEMV
  where the kernels are off (TENSHU_CPU_KERNELS=0; timed around each call, in a second pass).
llama.cpp joins when llama-cpp-python is installed (see benchmarks/llamacpp_peer.py). Results
print as they come and are saved to benchmarks/results/quant-<time>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.engine import CACHE, RESULTS, checkpoint, read_bandwidth  # noqa: E402
from tenshu import LLM, SamplingParams  # noqa: E402
from tenshu.engine.sampling import RequestOutputKind  # noqa: E402

TYPES = ("bf16", "q8_0", "q4_0", "q4_k_m")
GGUF_PY = {"bf16": "BF16", "q8_0": "Q8_0", "q4_0": "Q4_0"}  # written by gguf-py
LLAMA_QUANTIZE = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",  # made by llama.cpp from the bf16 file
                  "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S", "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
                  "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}
# The 7B-class shape: Qwen2.5-7B's (qwen2: q/k/v biases, untied output, 7.6B parameters). Its
# bf16 file (15 GB) is written tensor by tensor with random weights (random_gguf: it does not fit
# through transformers in float32 here); llama.cpp's quantizer makes Q8_0 and Q4_K_M from it.
QWEN25_7B_SHAPE = {"arch": "qwen2", "vocab_size": 152064, "hidden_size": 3584,
                   "intermediate_size": 18944, "num_hidden_layers": 28,
                   "num_attention_heads": 28, "num_key_value_heads": 4, "head_dim": 128,
                   "rms_norm_eps": 1e-6, "rope_theta": 1e6, "context_length": 32768}
SHAPES = ("qwen3-0.6b", "qwen2.5-7b")
GREEDY = dict(temperature=0, ignore_eos=True, output_kind=RequestOutputKind.FINAL_ONLY)


def has_llamacpp() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


# -- the files ---------------------------------------------------------------------------------


def gguf_file(kind: str, quick: bool, shape: str = SHAPES[0]) -> Path:
    """The benchmark model of `shape` (4 layers if `quick`) as a GGUF file of `kind`, made once
    and cached."""
    if shape == SHAPES[0]:
        return gguf_from(checkpoint(quick), kind)
    path = CACHE / f"{shape}-shape{'-4layers' if quick else ''}.{kind}.gguf"
    if path.is_file():
        return path
    if kind == "bf16":
        return random_gguf(path, {**QWEN25_7B_SHAPE, **({"num_hidden_layers": 4} if quick else {})})
    from benchmarks import llamacpp_peer

    print(f"making {path.name} ...", flush=True)
    return llamacpp_peer.quantize(gguf_file("bf16", quick, shape), path, LLAMA_QUANTIZE[kind],
                                  torch.get_num_threads())


def random_gguf(path: Path, shape: dict, seed: int = 0) -> Path:
    """A bf16 GGUF file of `shape` (QWEN25_7B_SHAPE's keys) with random weights (normal, std
    0.02; norms 1, biases 0), written one tensor at a time so that no more than one is held, and
    the benchmark tokenizer's vocabulary (padded to the shape's)."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter

    from tests.engine.gguf_files import _tokenizer_metadata

    print(f"making {path.name} (random bf16 weights) ...", flush=True)
    h, inter, hd = shape["hidden_size"], shape["intermediate_size"], shape["head_dim"]
    q, kv, vocab = shape["num_attention_heads"] * hd, shape["num_key_value_heads"] * hd, \
        shape["vocab_size"]
    tensors = [("token_embd.weight", (vocab, h))]
    for i in range(shape["num_hidden_layers"]):
        b = f"blk.{i}"
        tensors += [(f"{b}.attn_norm.weight", (h,)), (f"{b}.attn_q.weight", (q, h)),
                    (f"{b}.attn_q.bias", (q,)), (f"{b}.attn_k.weight", (kv, h)),
                    (f"{b}.attn_k.bias", (kv,)), (f"{b}.attn_v.weight", (kv, h)),
                    (f"{b}.attn_v.bias", (kv,)), (f"{b}.attn_output.weight", (h, q)),
                    (f"{b}.ffn_norm.weight", (h,)), (f"{b}.ffn_gate.weight", (inter, h)),
                    (f"{b}.ffn_up.weight", (inter, h)), (f"{b}.ffn_down.weight", (h, inter))]
    tensors += [("output_norm.weight", (h,)), ("output.weight", (vocab, h))]
    tmp = path.with_suffix(".tmp")
    writer = GGUFWriter(tmp, shape["arch"])
    writer.add_context_length(shape["context_length"])
    writer.add_embedding_length(h)
    writer.add_block_count(shape["num_hidden_layers"])
    writer.add_feed_forward_length(inter)
    writer.add_head_count(shape["num_attention_heads"])
    writer.add_head_count_kv(shape["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(shape["rms_norm_eps"])
    writer.add_rope_freq_base(shape["rope_theta"])
    _tokenizer_metadata(writer, checkpoint(True), vocab)
    for name, dims in tensors:
        matrix = len(dims) == 2
        writer.add_tensor_info(name, dims, np.dtype(np.uint16 if matrix else np.float32),
                               int(np.prod(dims)) * (2 if matrix else 4),
                               raw_dtype=GGMLQuantizationType.BF16 if matrix else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    gen = torch.Generator().manual_seed(seed)
    for name, dims in tensors:
        if len(dims) == 2:
            data = (torch.randn(dims, generator=gen) * 0.02).bfloat16().view(torch.uint16).numpy()
        else:
            data = np.full(dims, 0.0 if name.endswith(".bias") else 1.0, np.float32)
        writer.write_tensor_data(data)
    writer.close()
    tmp.rename(path)
    return path


def gguf_from(src: Path, kind: str) -> Path:
    """The transformers checkpoint `src` as a GGUF file of `kind` (GGUF_PY's or LLAMA_QUANTIZE's),
    made once and cached as benchmarks/.cache/<src name>.<kind>.gguf."""
    path = CACHE / f"{src.name}.{kind}.gguf"
    if path.is_file():
        return path
    print(f"making {path.name} ...", flush=True)
    if kind in GGUF_PY:
        from tests.engine.gguf_files import make_gguf

        tmp = CACHE / f"{path.name}.tmp"
        made, _ = make_gguf(src, tmp, default=GGUF_PY[kind], reference=False)
        made.rename(path)
        tmp.rmdir()
    else:
        from benchmarks import llamacpp_peer

        llamacpp_peer.quantize(gguf_from(src, "bf16"), path, LLAMA_QUANTIZE[kind],
                               torch.get_num_threads())
    return path


def file_bytes(path: Path) -> dict:
    """Weight bytes read per decoded token: every 2-D tensor of the file once (the tied
    embedding is read whole as the output projection; its row lookup is negligible). Also the
    types the file holds, by bytes."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    total, types = 0, {}
    for t in reader.tensors:
        if len(t.shape) == 2:
            total += int(t.n_bytes)
            types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + int(t.n_bytes)
    return {"weight_bytes_per_token": total, "bytes_by_type": types,
            "file_bytes": path.stat().st_size}


# -- tenshu --------------------------------------------------------------------------------------


def tenshu_llm(path: Path, int8_activations: bool = True, max_num_seqs: int = 16) -> LLM:
    return LLM(path, skip_tokenizer_init=True, max_num_seqs=max_num_seqs, kv_cache_memory_gib=4,
               int8_activations=int8_activations)


def resident_bytes(llm: LLM) -> int:
    """Bytes of the matmul weights as tenshu holds them: QuantWeights keep the K-quants'
    scales as the file does, Q8_0's and Q4_0's as float32 (a little more than the file's
    blocks), and widen a fused weight's parts to one format. A float32 weight copy for batched
    steps, where the loader keeps one, is not counted (decode does not read it)."""
    from tenshu.engine.quant.weight import QuantWeight

    model = llm.engine.runner.model
    quant = sum(m.nbytes() for m in model.modules() if isinstance(m, QuantWeight))
    floats = sum(p.numel() * p.element_size() for p in model.parameters() if p.dim() == 2)
    return quant + floats


def process_memory(pid: int | str = "self") -> dict[str, int]:
    """A process's resident memory now (VmRSS) and at its peak (VmHWM), in bytes (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def tenshu_decode(llm: LLM, prompt: list[int], n_out: int) -> dict:
    engine, request = llm.engine, f"d{time.time()}"
    engine.add_request(request, {"prompt_token_ids": prompt},
                       SamplingParams(max_tokens=n_out, **GREEDY))
    while not engine.requests[request].seqs[0].output_token_ids:
        engine.step()  # the prompt's chunks, up to the first token
    start, steps, outs = time.perf_counter(), 0, []
    while engine.has_unfinished_requests():
        outs += engine.step()
        steps += 1
    seconds = time.perf_counter() - start
    return {"tokens_per_s": steps / seconds, "tokens": list(outs[-1].outputs[0].token_ids)}


def tenshu_prefill(llm: LLM, prompt: list[int]) -> dict:
    start = time.perf_counter()
    llm.generate([{"prompt_token_ids": prompt}], SamplingParams(max_tokens=1, **GREEDY))
    seconds = time.perf_counter() - start
    return {"tokens_per_s": len(prompt) / seconds, "seconds": seconds}


def tenshu_concurrent(llm: LLM, requests) -> dict:
    prompts = [{"prompt_token_ids": p} for p, _ in requests]
    params = [SamplingParams(max_tokens=o, **GREEDY) for _, o in requests]
    start = time.perf_counter()
    outs = llm.generate(prompts, params)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"output_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


class _Timed:
    """Wraps a ShapeCompiled GEMV, adding up the time spent in its calls."""

    def __init__(self, inner):
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __call__(self, *args):
        start = time.perf_counter()
        out = self.inner(*args)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def tenshu_profile(llm: LLM, prompt: list[int], steps: int = 16, top: int = 15) -> dict:
    """Where a decode step's time goes: torch.profiler's top ops over `steps` steps (tenshu's
    CPU kernels appear there as `tenshu_cpu::*`), then the share of inductor's compiled GEMVs,
    timed around each call in a second pass without the profiler (they serve only where the
    kernels do not: TENSHU_CPU_KERNELS=0)."""
    from torch.profiler import ProfilerActivity, profile

    from tenshu.engine.layers import linear as float_linear
    from tenshu.engine.quant import weight as quant_weight

    engine = llm.engine

    def run(tag: str, prof=None) -> float:
        engine.add_request(f"{tag}{time.time()}", {"prompt_token_ids": prompt},
                           SamplingParams(max_tokens=steps + 1, **GREEDY))
        engine.step()  # prefill, not profiled
        if prof is not None:
            prof.start()
        start = time.perf_counter()
        while engine.has_unfinished_requests():
            engine.step()
        seconds = time.perf_counter() - start
        if prof is not None:
            prof.stop()
        return seconds

    run("warm")
    prof = profile(activities=[ProfilerActivity.CPU])
    run("prof", prof)
    averages = prof.key_averages()
    table = averages.table(sort_by="self_cpu_time_total", row_limit=top)
    total_us = sum(e.self_cpu_time_total for e in averages)
    ops = sorted(averages, key=lambda e: -e.self_cpu_time_total)[:top]
    top_ops = [{"op": e.key, "calls_per_step": e.count / steps,
                "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
                "share": e.self_cpu_time_total / total_us} for e in ops]
    timed = {m: _Timed(m._compiled_gemv) for m in (quant_weight, float_linear)}
    try:
        for module, wrapper in timed.items():
            module._compiled_gemv = wrapper
        seconds = run("timed")
    finally:
        for module, wrapper in timed.items():
            module._compiled_gemv = wrapper.inner
    gemv = sum(w.seconds for w in timed.values())
    return {"steps": steps, "ms_per_step": seconds * 1e3 / steps,
            "gemv_ms_per_step": gemv * 1e3 / steps, "gemv_share": gemv / seconds,
            "gemv_calls_per_step": sum(w.calls for w in timed.values()) / steps,
            "top_ops": top_ops, "table": table}


# -- main ----------------------------------------------------------------------------------------


def best(runs: list[dict]) -> dict:
    return max(runs, key=lambda r: r["tokens_per_s"])


def agreeing(a: list[int], b: list[int]) -> int:
    """Greedy tokens the two engines agree on before their first difference."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="decode,prefill,concurrent,profile")
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--quick", action="store_true", help="the 4-layer model")
    parser.add_argument("--shape", choices=SHAPES, default=SHAPES[0],
                        help="the model's shape (qwen2.5-7b: the 7B class, bf16 not run: "
                             "the two engines' copies do not fit in memory side by side)")
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--decode-context", type=int, default=64,
                        help="prompt tokens before the decode section's new tokens")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--prefill-tokens", type=int, default=2048)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--stream-tokens", type=int, default=128,
                        help="new tokens per request in the concurrent section")
    parser.add_argument("--no-llamacpp", action="store_true")
    parser.add_argument("--float-activations", action="store_true",
                        help="tenshu with int8_activations=False (float32 decoding products)")
    parser.add_argument("--save", help=argparse.SUPPRESS)  # where a child writes its results
    args = parser.parse_args(argv)
    sections = set(args.only.split(","))
    peer = None
    if not args.no_llamacpp and has_llamacpp():
        from benchmarks import llamacpp_peer as peer
    # llama.cpp's quantizer makes the K-quant files, with or without --no-llamacpp
    kinds = [k for k in args.types.split(",") if k in GGUF_PY or has_llamacpp()]
    if len(kinds) > 1:
        return _each_in_its_own_process(kinds, sys.argv[1:] if argv is None else argv)
    threads = torch.get_num_threads()
    vocab = 151936
    rng = random.Random(3)
    prompt = [rng.randrange(vocab) for _ in range(args.decode_context)]
    n_out = args.decode_tokens
    results: dict = {
        "model": f"{args.shape}-shape" + ("-4layers" if args.quick else ""), "threads": threads,
        "decode_context": args.decode_context,
        "llamacpp": None if peer is None else peer.LLAMA_CPP_PYTHON_VERSION,
        "torch": torch.__version__, "read_gb_s": read_bandwidth() / 1e9, "files": {},
    }
    print(json.dumps(results, indent=1), flush=True)
    bandwidth = results["read_gb_s"] * 1e9
    for kind in kinds:
        path = gguf_file(kind, args.quick, args.shape)
        res = results["files"][kind] = {"file": path.name, **file_bytes(path)}
        print(f"== {kind}: {res}", flush=True)
        start = time.perf_counter()
        llm = tenshu_llm(path, int8_activations=not args.float_activations,
                         max_num_seqs=max(16, args.streams))  # as many slots as llama.cpp's
        res["tenshu_load_s"] = time.perf_counter() - start
        res["tenshu_resident_weight_bytes"] = resident_bytes(llm)
        warm = [rng.randrange(vocab) for _ in range(600)]
        llm.generate([{"prompt_token_ids": warm}], SamplingParams(max_tokens=4, **GREEDY))
        res["tenshu_process_rss_bytes"] = process_memory()["VmRSS"]  # loaded and warm
        limit = bandwidth / res["weight_bytes_per_token"]
        if "decode" in sections:
            runs: dict[str, list] = {"tenshu": [], "llamacpp": []}
            for _ in range(args.repeats):
                runs["tenshu"].append(tenshu_decode(llm, prompt, n_out))
                if peer is not None:
                    lc = peer.single_stream(path, prompt, n_out, n_threads=threads)
                    runs["llamacpp"].append({"tokens_per_s": lc["decode_tokens_per_s"],
                                             "tokens": lc["tokens"]})
            d = res["decode"] = {"bandwidth_limit_tokens_per_s": limit}
            for name, r in runs.items():
                if r:
                    b = best(r)
                    d[name] = {"tokens_per_s": b["tokens_per_s"],
                               "runs": [x["tokens_per_s"] for x in r],
                               "fraction_of_limit": b["tokens_per_s"] / limit}
            if runs["llamacpp"]:
                d["ratio_tenshu_over_llamacpp"] = (d["tenshu"]["tokens_per_s"]
                                                   / d["llamacpp"]["tokens_per_s"])
                d["greedy_tokens_agreeing"] = agreeing(runs["tenshu"][0]["tokens"],
                                                       runs["llamacpp"][0]["tokens"])
            print("decode", {k: v for k, v in d.items()}, flush=True)
        if "prefill" in sections:
            runs = {"tenshu": [], "llamacpp": []}
            for _ in range(args.repeats):
                long = [rng.randrange(vocab) for _ in range(args.prefill_tokens)]
                runs["tenshu"].append(tenshu_prefill(llm, long))
                if peer is not None:
                    lc = peer.single_stream(path, long, 2, n_threads=threads)
                    runs["llamacpp"].append({"tokens_per_s": lc["prefill_tokens_per_s"]})
            p = res["prefill"] = {"prompt_tokens": args.prefill_tokens}
            for name, r in runs.items():
                if r:
                    p[name] = {"tokens_per_s": best(r)["tokens_per_s"],
                               "runs": [x["tokens_per_s"] for x in r]}
            if runs["llamacpp"]:
                p["ratio_tenshu_over_llamacpp"] = (p["tenshu"]["tokens_per_s"]
                                                   / p["llamacpp"]["tokens_per_s"])
            print("prefill", p, flush=True)
        if "concurrent" in sections:
            reqs = [([rng.randrange(vocab) for _ in range(64)], args.stream_tokens)
                    for _ in range(args.streams)]
            c = res["concurrent"] = {"streams": args.streams,
                                     "tenshu": tenshu_concurrent(llm, reqs)}
            if peer is not None:
                c["llamacpp"] = peer.throughput(path, reqs, n_threads=threads,
                                                n_parallel=args.streams)
                c["ratio_tenshu_over_llamacpp"] = (c["tenshu"]["tokens_per_s"]
                                                   / c["llamacpp"]["tokens_per_s"])
            print("concurrent", c, flush=True)
        if "profile" in sections:
            prof = res["profile"] = tenshu_profile(llm, prompt)
            print(prof.pop("table"), flush=True)
            print("profile", {k: v for k, v in prof.items() if k != "top_ops"}, flush=True)
        del llm

    return save(results, args.save)


def save(results: dict, path: str | None = None, name: str = "quant") -> int:
    """Writes `results` to `path`, else to benchmarks/results/<name>-<time>.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(path) if path else RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"saved {out}")
    return 0


def _each_in_its_own_process(kinds: list[str], argv: list[str]) -> int:
    """One process per file, as a server loads one model. In one process the models' GEMV
    shapes add up: past dynamo's recompile limit (8 shapes of one compiled function) the
    next model's GEMVs fall back to the eager path (see the report in docs/benchmarks.md)."""
    import subprocess
    import tempfile

    merged: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            out = Path(tmp) / f"{kind}.json"
            subprocess.run([sys.executable, __file__, *argv, "--types", kind, "--save", str(out)],
                           check=True)
            one = json.loads(out.read_text())
            files = one.pop("files")
            merged = merged or {**one, "read_gb_s": {}, "files": {}}
            merged["read_gb_s"][kind] = one["read_gb_s"]
            merged["files"].update(files)
    return save(merged)


if __name__ == "__main__":
    raise SystemExit(main())
