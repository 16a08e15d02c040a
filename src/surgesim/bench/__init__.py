"""Benchmarks of the kernels: what ``python -m sims.bench``, ``sims.bench_gpu`` and
``sims.bench_dynamics`` run and print. Timings are best of ``repeat`` after one warm-up call
(``best_time``). Modules: ``kernels`` (random numbers, the one-step kernel, end to end),
``scaling`` (cost against d), ``compile_times`` (JIT compile times), ``dynamics`` (the multi-step
kernel), ``gpu`` (CuPy against the CPU kernels). Every output key: docs/outputs.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["best_time"]


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """The shortest of ``repeat`` timed calls of ``fn``, after one warm-up call (JIT, caches)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
