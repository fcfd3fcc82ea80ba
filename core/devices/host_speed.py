"""The host CPU's matmul speed, measured once per process with a short matmul."""

from __future__ import annotations

import functools
import time


@functools.lru_cache(maxsize=1)
def measure_cpu_tflops(size: int = 512, seconds: float = 0.15) -> float:
    """Achieved fp32 TFLOP/s of a square matmul on all the threads torch uses.

    Takes about `seconds` of wall time; the result is cached for the process.
    """
    import torch  # only the CPU path needs torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)  # warm-up: thread pool and caches
    runs = 0
    started = time.perf_counter()
    while True:
        torch.mm(a, b)
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and runs >= 3:
            break
    return 2 * size**3 * runs / elapsed / 1e12
