"""tenshu's own CPU kernels (cpu_matmul.cpp), built for this machine's CPU.

They multiply a few rows of activations (decoding) by weights kept narrower than float32, bf16
or a QuantWeight's integer codes, reading each weight once: torch has no such product for the
integer formats, and its bf16 one runs well below the memory bandwidth (docs/benchmarks.md).
They also decode a QuantWeight's rows for prompt chunks, attend over the paged KV cache where
it lies, normalize rows (RMSNorm), do a layer's small steps in one call each, and run a
decode step's layers in one call (decode_layers: models/llama.py's DecodePlan); cpu_matmul.cpp's
header lists them all.

Built with torch's extension builder (`-O3 -march=native`: each machine builds its own) into
`~/.cache/tenshu/kernels/` (or `$XDG_CACHE_HOME/tenshu/kernels/`), under a name keyed by the
source, torch's version, the flags and the CPU: `make install` builds them
(`python -m tenshu.engine.kernels`); otherwise the first model that needs them builds them
while it loads (about 20 s, once). Where they cannot be built (no compiler) or are turned off
(`TENSHU_CPU_KERNELS=0`), `ops()` is None and the engine keeps torch's paths.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import threading
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # Windows: no flock; torch's own lock file alone
    fcntl = None

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_matmul.cpp")
MAX_ROWS = 16  # above this many rows the float GEMM on dequantized chunks is faster
# float32 rows times bf16 weights (bf16_matmul) up to this many rows: 1.7-5x torch's float32
# GEMM on a float32 copy at 4-16 rows, 1.2-1.6x at 64, 0.8-1.0x at 96-128; with AVX512-BF16,
# 1.0-1.8x torch's bf16 GEMM at 2-16 rows, 0.9-1.0x at 64 (docs/benchmarks.md)
BF16_MAX_ROWS = 64
# the integer-dot products (quant_matmul_int8) up to this many rows: at 64 rows they are
# 1.3-1.5x the dequantized chunks, at 128 0.85-1.1x (docs/benchmarks.md)
INT8_MAX_ROWS = 64
# ... and where they multiply sixteen rows of x a vector (VNNI): a CPU prompt chunk (512 rows
# by default) too, 1.6x the dequantized chunks in bf16 at 512 rows on 1024 columns, 0.9x on 3072
INT8_LANES_MAX_ROWS = 512
_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-fopenmp-simd"]

_lock = threading.Lock()
_state: dict[str, object] = {}  # "ops": the loaded namespace, or None once it has failed


def enabled() -> bool:
    return os.environ.get("TENSHU_CPU_KERNELS", "1").strip().lower() not in ("0", "false", "no")


def _cpu_key() -> str:
    """What a -march=native build depends on: the CPU's model and instruction sets."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def build_name() -> str:
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), torch.__version__.encode(), " ".join(_FLAGS).encode(),
                 _cpu_key().encode()):
        digest.update(part)
    return f"tenshu_cpu_{digest.hexdigest()[:12]}"


def build_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tenshu" / "kernels" / build_name()


def _load(verbose: bool = False):
    """Load the built library, building it first where it is missing. A finished build is
    loaded directly: torch's build step costs about a second even when it has nothing to do.

    torch's builder marks a build under way with a plain file ("lock") and waits, without end,
    for it to go; a build that was killed (Ctrl-C during the first start) leaves it behind, and
    every later start would hang there. So builds also take a lock of the operating system's
    (flock on "build.lock"), which ends with the process that holds it: whoever holds that
    knows that no build is under way and that a "lock" file left is stale."""
    name, folder = build_name(), build_dir()
    library = folder / f"{name}.so"
    baton = folder / "lock"
    if library.is_file() and not baton.exists():
        torch.ops.load_library(str(library))
        return torch.ops.tenshu_cpu
    from torch.utils import cpp_extension  # imports setuptools: only when building

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "build.lock", "w") as held:
        if fcntl is not None:
            fcntl.flock(held, fcntl.LOCK_EX)  # another process building: wait for it
            if baton.exists():
                logger.warning("removing %s, left by a kernel build that did not finish", baton)
                baton.unlink(missing_ok=True)
        cpp_extension.load(name, [str(SOURCE)], extra_cflags=_FLAGS,
                           extra_ldflags=["-fopenmp"], build_directory=str(folder),
                           is_python_module=False, verbose=verbose)
    return torch.ops.tenshu_cpu


def int8_max_rows() -> int:
    """How many rows of x the integer-dot products take at most, on this CPU."""
    ops()
    return _state.get("int8_rows", INT8_MAX_ROWS)


def ops():
    """torch.ops.tenshu_cpu (bf16_matmul, quant_matmul, dequantize_rows, paged_decode, ...), built
    the first time; None where they are turned off or cannot be built (said once in the log)."""
    if "ops" in _state:
        return _state["ops"]
    with _lock:
        if "ops" not in _state:
            loaded = None
            if enabled():
                try:
                    loaded = _load()
                except Exception as exc:  # no compiler, a broken toolchain: torch's paths serve
                    logger.warning("tenshu's CPU kernels could not be built, using torch's "
                                   "(slower for decoding): %s", str(exc).strip()[-400:])
            if loaded is not None and loaded.multiplies_int8_lanes():
                _state["int8_rows"] = INT8_LANES_MAX_ROWS
            _state["ops"] = loaded
    return _state["ops"]
