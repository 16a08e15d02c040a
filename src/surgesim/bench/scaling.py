"""Cost against d: the one-step estimator (sign sampler, B = 64) at d = 10^3 .. 10^7 (10^8 with
32 GB), the same samples (trials x d) at every d, each point in a fresh process so that its max
RSS is its peak memory (``sims.bench --scaling``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from . import best_time

__all__ = ["SCALING_SAMPLES", "NUMPY_MAX_DIMS", "scaling_trials", "scaling_point", "bench_scaling",
           "default_scaling_dims", "print_scaling"]  # fmt: skip


SCALING_SAMPLES = 10_000 * 2**18  # samples per dimension in --scaling (issue 16: d = 10^4 x 262,144 trials)
NUMPY_MAX_DIMS = 10_000  # the NumPy reference builds the dense H: 0.8 GB at d = 10^4


def scaling_trials(d: int) -> int:
    """Trials at dimension d: the power of 2 nearest SCALING_SAMPLES / d (at least 16)."""
    return max(16, 2 ** round(np.log2(SCALING_SAMPLES / d)))


def scaling_point(d: int, trials: int) -> dict:
    """One --scaling row, run in a fresh process (so its max RSS is this point's peak memory)."""
    import resource

    from surgesim.estimate import estimate_batch_size
    from surgesim.problem import surge_problem
    from surgesim.reference import onestep as ref

    p = surge_problem(d, 0)
    estimate_batch_size(p, 64, trials=16)  # warm-up: load the compiled kernel
    t = time.perf_counter()
    estimate_batch_size(p, 64, trials=trials)
    seconds = time.perf_counter() - t
    row = {"dims": d, "trials": trials, "seconds": seconds, "samples_per_s": trials * d / seconds,
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}  # fmt: skip
    if d <= NUMPY_MAX_DIMS:  # plain NumPy (PCG64 uniforms, float64 GEMM) on 256 trials
        g = np.random.default_rng(0)

        def numpy() -> None:
            ref.moments(p, ref.signs(p, 64, np.arange(256), generator=g))

        row["numpy_samples_per_s"] = 256 * d / best_time(numpy, 1)
    return row


def bench_scaling(dims: tuple[int, ...]) -> list[dict]:
    """``scaling_point`` for each d, each in its own process (``python -m sims.bench --scaling-point``);
    MemoryError or ValueError (with the child's error line) when one fails."""
    rows = []
    for d in dims:
        cmd = [sys.executable, "-m", "sims.bench", "--scaling-point", f"{d},{scaling_trials(d)}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:  # the child's own error line (memory above all), not a traceback here
            lines = r.stderr.strip().splitlines()
            last = lines[-1].removeprefix("error: ") if lines else f"exit status {r.returncode}"
            if r.returncode in (-9, 137) or "MemoryError" in r.stderr or "memory" in last:
                raise MemoryError(f"scaling at d = {d}: {last}")
            raise ValueError(f"scaling at d = {d} failed: {last}")
        rows.append(json.loads(r.stdout.splitlines()[-1]))
    return rows


def default_scaling_dims() -> tuple[int, ...]:
    """10^3 .. 10^7, and 10^8 where the machine has 32 GB or more (that point peaks near 10 GB)."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        memory = 0
    return tuple(10**k for k in range(3, 9 if memory >= 32 * 2**30 else 8))


def print_scaling(rows: list[dict]) -> None:
    """The table of ``bench_scaling``."""
    print(f"{'d':>11} {'trials':>9} {'seconds':>8} {'samples/s':>10} {'peak RSS':>9} {'NumPy samples/s':>16}")
    for q in rows:
        numpy = f"{q['numpy_samples_per_s'] / 1e6:.3g}M" if "numpy_samples_per_s" in q else "-"
        print(f"{q['dims']:>11,} {q['trials']:>9,} {q['seconds']:>8.2f} {q['samples_per_s'] / 1e6:>9.0f}M "
              f"{q['peak_rss_bytes'] / 1e9:>7.2f}GB {numpy:>16}")  # fmt: skip
