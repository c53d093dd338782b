"""`python -m tenshu.engine.kernels`: build the CPU kernels now (make install runs it)."""

import sys

from tenshu.engine import kernels

if __name__ == "__main__":
    if not kernels.enabled():
        print("TENSHU_CPU_KERNELS is off: nothing to build")
        sys.exit(0)
    print("CPU kernels:", "ready" if kernels.ops() is not None else "not built (see above)")
