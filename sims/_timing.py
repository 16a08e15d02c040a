"""Timing for the benchmarks (``sims.bench``, ``sims.bench_dynamics``): best of several runs."""

from __future__ import annotations

import time


def best_time(fn, repeat: int) -> float:
    """The shortest of ``repeat`` timed calls of ``fn``, after one warm-up call (JIT, caches)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
