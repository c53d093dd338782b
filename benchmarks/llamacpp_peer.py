"""llama.cpp as a CPU benchmark peer for tenshu, driven through llama-cpp-python.

Setup (offline except for the package index). llama-cpp-python is built from its sdist, which
vendors llama.cpp; the converter also imports sentencepiece for Qwen tokenizers:

    CMAKE_ARGS="-DGGML_NATIVE=ON" CMAKE_BUILD_PARALLEL_LEVEL=2 python -m pip install \\
        --no-binary llama-cpp-python llama-cpp-python==0.3.36 sentencepiece

The installed package does not ship llama.cpp's ``convert_hf_to_gguf.py``, so ``fetch_converter()``
downloads the same sdist (``pip download --no-binary :all: --no-deps``) into ``benchmarks/.cache/``
and unpacks only the converter, its ``conversion`` package and the vendored ``gguf-py``. The sdist
is needed only to convert; benchmarking needs just ``llama_cpp`` and the ``.gguf`` file.

Generation is greedy (argmax of the logits) and never stops at EOS, so every request produces
exactly the tokens asked for. ``throughput`` keeps up to ``n_parallel`` sequences in one llama.cpp
context (continuous batching: an admitted request is prefilled on its own, then joins the shared
one-token-per-sequence decode steps); the default ``n_parallel=1`` runs requests one at a time.
Model loading and a one-token warm-up are never timed. ``quantize`` is llama.cpp's own quantizer
(``llama_model_quantize``, with its per-tensor mix and fallbacks); ``prompt_logprobs`` scores
token-id windows, as llama.cpp's perplexity tool does, for benchmarks/perplexity.py.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import subprocess
import sys
import tarfile
import time
from collections import deque
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
_SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"
CONVERTER = CACHE_DIR / _SDIST_NAME / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"

# Runs the converter with one fallback: a tokenizer whose pre-tokenizer hash the converter does
# not know (such as a locally trained test tokenizer) is labelled "qwen2" instead of aborting.
# Tokenizers it knows (real Qwen3 checkpoints) are labelled by the converter as usual.
_CONVERTER_SHIM = """
import os, runpy, sys
script = sys.argv[1]
sys.argv = sys.argv[1:]
root = os.path.dirname(script)
sys.path[:0] = [root, os.path.join(root, "gguf-py")]
from conversion.base import TextModel
known_pre = TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return known_pre(self, tokenizer)
    except NotImplementedError:
        return "qwen2"
TextModel.get_vocab_base_pre = get_vocab_base_pre
runpy.run_path(script, run_name="__main__")
"""


def available() -> bool:
    """True when llama_cpp and sentencepiece import and the converter has been fetched."""
    modules = ("llama_cpp", "sentencepiece")
    return CONVERTER.is_file() and all(importlib.util.find_spec(m) for m in modules)


def fetch_converter() -> Path:
    """Download the pinned llama-cpp-python sdist into CACHE_DIR and unpack the converter."""
    if CONVERTER.is_file():
        return CONVERTER
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    spec = f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
    pip = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
    subprocess.run([*pip, "--dest", str(CACHE_DIR), spec], check=True)
    sdist = CACHE_DIR / f"{_SDIST_NAME}.tar.gz"
    root = f"{_SDIST_NAME}/vendor/llama.cpp/"
    wanted = (root + "convert_hf_to_gguf.py", root + "conversion/", root + "gguf-py/")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(wanted)]
        tar.extractall(CACHE_DIR, members=members, filter="data")
    sdist.unlink()
    return CONVERTER


def convert_to_gguf(hf_dir: Path, out_path: Path, outtype: str = "bf16") -> Path:
    """Convert a Hugging Face checkpoint directory (with tokenizer files) to one GGUF file."""
    if not CONVERTER.is_file():
        raise RuntimeError(f"converter not found at {CONVERTER}; call fetch_converter() first")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    args = [str(CONVERTER), str(hf_dir), "--outtype", outtype, "--outfile", str(out_path)]
    proc = subprocess.run(
        [sys.executable, "-c", _CONVERTER_SHIM, *args], capture_output=True, text=True
    )
    if proc.returncode != 0 or not out_path.is_file():
        raise RuntimeError(f"convert_hf_to_gguf.py failed ({proc.returncode}):\n{proc.stderr}")
    return out_path


class _Engine:
    """A llama.cpp model and context holding up to ``n_seq`` sequences; greedy sampling."""

    def __init__(self, gguf_path: Path, n_threads: int, n_ctx_per_seq: int, n_seq: int = 1):
        import llama_cpp
        import numpy as np

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's own log
        self._ll, self._np, self.n_batch = llama_cpp, np, 512
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        self.model = llama_cpp.llama_model_load_from_file(str(gguf_path).encode(), model_params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {gguf_path}")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx_per_seq * n_seq
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_seq_max = n_seq
        # One KV buffer shared by all sequences, as llama-server uses by default: with separate
        # per-sequence buffers a decode batch over a non-contiguous set of sequences is much slower.
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = n_threads
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise RuntimeError("llama.cpp could not create a context")
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.batch = llama_cpp.llama_batch_init(max(self.n_batch, n_seq), 0, 1)
        self.step([(0, 0, 0, True)])  # warm-up: the first decode allocates compute buffers
        llama_cpp.llama_memory_clear(self.mem, True)

    def __enter__(self) -> _Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self._ll.llama_batch_free(self.batch)
        self._ll.llama_free(self.ctx)
        self._ll.llama_model_free(self.model)

    def step(self, entries: list[tuple[int, int, int, bool]]) -> list[int]:
        """Decode (seq, pos, token, want_next) entries as one batch; argmax per wanted entry."""
        b = self.batch
        b.n_tokens = len(entries)
        for i, (seq, pos, token, want) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, want
            b.seq_id[i][0] = seq
        if self._ll.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")
        rows = [i for i, entry in enumerate(entries) if entry[3]]
        logits = (self._ll.llama_get_logits_ith(self.ctx, i) for i in rows)
        return [int(self._np.ctypeslib.as_array(x, shape=(self.n_vocab,)).argmax()) for x in logits]

    def prefill(self, seq: int, prompt: list[int]) -> int:
        """Process a prompt in n_batch chunks; return the first generated token."""
        last = len(prompt) - 1
        for start in range(0, len(prompt), self.n_batch):
            chunk = prompt[start : start + self.n_batch]
            entries = [(seq, start + j, t, start + j == last) for j, t in enumerate(chunk)]
            next_tokens = self.step(entries)
        return next_tokens[0]

    def drop(self, seq: int) -> None:
        """Free a finished sequence's KV cache cells."""
        self._ll.llama_memory_seq_rm(self.mem, seq, -1, -1)


def throughput(
    gguf_path: Path, requests: list[tuple[list[int], int]], n_threads: int, n_parallel: int = 1
) -> dict:
    """Generate n_out tokens for every (prompt_ids, n_out) request; report output tokens/s."""
    if any(not prompt or n_out < 1 for prompt, n_out in requests):
        raise ValueError("every request needs a non-empty prompt and n_out >= 1")
    n_seq = max(1, min(n_parallel, len(requests)))
    n_ctx = max(len(prompt) + n_out for prompt, n_out in requests)
    pending, free, active = deque(requests), list(range(n_seq)), {}  # seq -> (pos, token, left)
    output_tokens = 0
    with _Engine(gguf_path, n_threads, n_ctx, n_seq) as eng:
        start = time.perf_counter()
        while pending or active:
            for seq in [s for s, (_, _, left) in active.items() if left == 0]:
                del active[seq]
                eng.drop(seq)
                free.append(seq)
            while pending and free:
                prompt, n_out = pending.popleft()
                seq = free.pop()
                active[seq] = (len(prompt), eng.prefill(seq, prompt), n_out - 1)
                output_tokens += 1
            seqs = [s for s, (_, _, left) in active.items() if left > 0]
            if seqs:
                next_tokens = eng.step([(s, *active[s][:2], True) for s in seqs])
                for seq, token in zip(seqs, next_tokens, strict=True):
                    pos, _, left = active[seq]
                    active[seq] = (pos + 1, token, left - 1)
                output_tokens += len(seqs)
        seconds = time.perf_counter() - start
    return {
        "requests": len(requests),
        "n_parallel": n_seq,
        "output_tokens": output_tokens,
        "seconds": seconds,
        "tokens_per_s": output_tokens / seconds,
    }


def single_stream(gguf_path: Path, prompt_ids: list[int], n_out: int, n_threads: int) -> dict:
    """One request, timing prefill (up to the first token) apart from the other n_out - 1."""
    if not prompt_ids or n_out < 2:
        raise ValueError("need a non-empty prompt and n_out >= 2")
    with _Engine(gguf_path, n_threads, len(prompt_ids) + n_out) as eng:
        start = time.perf_counter()
        tokens = [eng.prefill(0, prompt_ids)]
        prefill_s = time.perf_counter() - start
        for pos in range(len(prompt_ids), len(prompt_ids) + n_out - 1):
            tokens += eng.step([(0, pos, tokens[-1], True)])
        decode_s = time.perf_counter() - start - prefill_s
    return {
        "prompt_tokens": len(prompt_ids),
        "output_tokens": n_out,
        "tokens": tokens,
        "prefill_s": prefill_s,
        "prefill_tokens_per_s": len(prompt_ids) / prefill_s,
        "decode_s": decode_s,
        "decode_tokens_per_s": (n_out - 1) / decode_s,
    }


def quantize(src: Path, dst: Path, ftype: str, n_threads: int) -> Path:
    """Write `src` (a GGUF file) to `dst` in llama.cpp's `ftype` mix, e.g. "LLAMA_FTYPE_MOSTLY_Q4_K_M"
    (a tensor whose rows do not fit the type's blocks falls back to another type per tensor)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype)
    params.nthread = n_threads
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                      ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama_model_quantize failed for {dst}")
    return dst


def prompt_logprobs(gguf_path: Path, windows: list[list[int]], n_threads: int) -> list:
    """For each token-id window, the log-probability of its tokens after the first, given the
    tokens before them: float64 numpy arrays of len(window) - 1 (log-softmax in float64 over
    llama.cpp's float32 logits). Each window starts from an empty KV cache."""
    import llama_cpp
    import numpy as np

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    n_ctx = max(len(w) for w in windows)
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_batch=n_ctx,
                          logits_all=True, n_threads=n_threads, n_threads_batch=n_threads,
                          verbose=False)
    out = []
    try:
        for window in windows:
            llm.reset()
            llm.eval(window)
            logits = np.asarray(llm.scores[: len(window) - 1], dtype=np.float64)  # [n - 1, V]
            top = logits.max(axis=1, keepdims=True)
            norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
            out.append(logits[np.arange(len(window) - 1), window[1:]] - norm)
    finally:
        llm.close()
    return out
