"""GPU benchmark: the CuPy one-step kernels against the Numba CPU kernels on the same work.

Each case (Hessian, sampler, B) runs the same trials (same seed, same random streams) through the
CPU kernels and the GPU kernels at d = 1000 (default): per-trial a = mu'V and b = V'HV (for dense
H: the signs, then the float32 GEMM). samples/s = trials x d per second, best of --repeat after
one warm-up call. Two GPU rates: "io", NumPy arrays in and out as the estimator passes them
(host-device copies included), and "device", CuPy arrays kept on the device (kernels only). Each
case also reports how far apart the two results are: max |a_gpu - a_cpu| / sum|mu| and the
relative difference of mean(b) (rounding only: the sign patterns are the same).

Dense cases run only up to d = ``DENSE_MAX_DIMS`` (H is d x d). The issue's goal, the GPU at
>= 20x the 2-thread CPU rate on the low-rank one-step kernel at d >= 10^5, is checked on the
device-resident rate (``GOAL_RATIO``, ``GOAL_DIMS``) and printed with the table.

``bench_gpu`` is what ``python -m sims.bench --backend gpu`` and ``python -m sims.bench_gpu``
run; it raises ``surgesim.backend.BackendUnavailable`` when CuPy or a GPU is missing.

Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import best_time

__all__ = ["CASES", "DENSE_MAX_DIMS", "GOAL_RATIO", "GOAL_DIMS", "bench_gpu", "print_report", "GpuBenchOptions"]

CASES = (  # (Hessian family, sampler, B): the surge's rise, its peak region, the plateau; dense
    ("lowrank", "sign", 1),
    ("lowrank", "sign", 64),
    ("lowrank", "sign", 4096),
    ("lowrank", "batch_mean", 64),
    ("dense", "sign", 64),
)

DENSE_MAX_DIMS = 4096  # a dense H of d = 4096 is 128 MiB in float64; the CPU GEMM time grows as d^2
GOAL_RATIO, GOAL_DIMS = 20.0, 100_000  # low-rank one-step: GPU (device) rate / 2-thread CPU rate


def _one_step(mod: Any, xp: Any, sync: Any, problem: Any, sampler: str, B: int, n: int) -> tuple[Any, Any]:
    """A call running trials 0 .. n-1 of (problem, sampler, B, seed 0) with kernel module ``mod``
    on arrays of ``xp`` (numpy or cupy), and the arrays (a, b) it fills."""
    from surgesim.kernels import onestep

    key = onestep.batch_key(0, B)
    code = onestep.SAMPLERS[sampler]
    thr, rare = onestep.sign_thresholds(B, problem.mu, problem.sigma)
    mu, sigma, thr, rare = (xp.asarray(x) for x in (problem.mu, problem.sigma, thr, rare))
    d = problem.dim
    a = xp.empty(n)
    H = problem.hessian
    dense = H.dense_part()  # H = diag(h) + U U' + D: a dense H by a float32 GEMM, the others in the kernel
    if dense.size:
        H32 = xp.asarray(dense.astype(np.float32))
        V = xp.empty((n, d), dtype=np.float32)
        out = {}

        def run_dense() -> None:
            mod.trial_signs(code, key, np.uint64(0), B, mu, sigma, thr, rare, a, V)
            out["b"] = mod.quad_rows_f32(V, H32)
            sync()

        return run_dense, lambda: (a, out["b"])
    h, Ut = xp.asarray(H.diagonal_part()), xp.asarray(np.ascontiguousarray(H.low_rank_factor().T))
    b = xp.empty(n)
    work = np.empty(((n + 15) // 16, d), dtype=np.float32)  # CPU scratch (the GPU ignores it)

    def run() -> None:
        mod.trial_moments(code, key, np.uint64(0), B, mu, sigma, thr, rare, h, Ut, a, b, work)
        sync()

    return run, lambda: (a, b)


@dataclass(frozen=True)
class GpuBenchOptions:
    """The options of ``python -m sims.bench_gpu`` (``cpu_threads`` None: every core), checked:
    ValueError naming an option as `key`."""

    dims: int
    trials: int
    repeat: int
    cpu_threads: int | None
    out: str | None

    def __post_init__(self) -> None:
        if self.dims < 2 or self.trials < 1 or self.repeat < 1:
            raise ValueError(f"need `dims` >= 2, `trials` >= 1, `repeat` >= 1, got "
                             f"{self.dims}, {self.trials}, {self.repeat}")  # fmt: skip
        if self.cpu_threads is not None and self.cpu_threads < 0:
            raise ValueError(f"`cpu_threads` must be >= 0, got {self.cpu_threads}")


def bench_gpu(dims: int = 1000, trials: int = 1 << 16, repeat: int = 3, cpu_threads: int | None = 2) -> dict:
    """GPU and CPU one-step rates on the same work (module docstring); a JSON-ready dict.

    The CPU kernels run on ``cpu_threads`` Numba threads (default 2, the project's machines; None:
    all). Raises ``BackendUnavailable`` (a ValueError) when CuPy or a GPU is unusable.
    """
    import numba

    from surgesim import backend
    from surgesim.kernels import onestep as cpu
    from surgesim.problem import FAMILIES, QuadraticProblem

    backend.resolve("gpu")
    # numba sets NUMBA_NUM_THREADS in config at import (through globals()): not in its types
    max_threads: int = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    threads = max_threads if cpu_threads is None else int(cpu_threads)
    if not 1 <= threads <= max_threads:
        raise ValueError(f"cpu_threads must be in 1 .. {max_threads}, got {cpu_threads}")
    import cupy as cp

    from surgesim.gpu import onestep as gpu

    def sync() -> None:
        cp.cuda.Device().synchronize()

    rows: list[dict] = []
    problems: dict[str, QuadraticProblem] = {}
    for family, sampler, B in CASES:
        if family == "dense" and dims > DENSE_MAX_DIMS:
            continue
        p = problems.get(family) or problems.setdefault(family, FAMILIES[family](dims, 0))
        runs = {
            "cpu": _one_step(cpu, np, lambda: None, p, sampler, B, trials),
            "io": _one_step(gpu, np, sync, p, sampler, B, trials),
            "device": _one_step(gpu, cp, sync, p, sampler, B, trials),
        }
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            rate = {"cpu": trials * dims / best_time(runs["cpu"][0], repeat)}
        finally:
            numba.set_num_threads(previous)
        rate |= {k: trials * dims / best_time(runs[k][0], repeat) for k in ("io", "device")}
        (a_c, b_c), (a_g, b_g) = runs["cpu"][1](), (cp.asnumpy(x) for x in runs["device"][1]())
        rows.append({
            "hessian": family, "sampler": sampler, "B": B,
            "cpu_samples_per_s": rate["cpu"], "gpu_io_samples_per_s": rate["io"],
            "gpu_device_samples_per_s": rate["device"],
            "ratio_io": rate["io"] / rate["cpu"], "ratio_device": rate["device"] / rate["cpu"],
            "max_a_diff_over_sum_abs_mu": float(np.max(np.abs(a_g - a_c)) / np.abs(p.mu).sum()),
            "mean_b_rel_diff": float(abs(b_g.mean() - b_c.mean()) / abs(b_c.mean())),
        })  # fmt: skip
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    return {
        "device": props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"]),
        "cpu_threads": threads,
        "dims": dims,
        "trials": trials,
        "cases": rows,
        "skipped": [] if dims <= DENSE_MAX_DIMS else [f"dense H above d = {DENSE_MAX_DIMS}"],
    }


def print_report(report: dict) -> None:
    """The report of ``bench_gpu`` as a table, and the low-rank goal (module docstring)."""
    print(f"one step on {report['device']} against the CPU kernels ({report['cpu_threads']} threads), "
          f"d = {report['dims']}, {report['trials']} trials (samples = trials x d):")  # fmt: skip
    print(f"{'H':>8} {'sampler':>10} {'B':>5} {'CPU M/s':>9} {'GPU io M/s':>11} {'GPU dev M/s':>12} "
          f"{'x io':>7} {'x dev':>7} {'a diff':>8} {'b diff':>8}")  # fmt: skip
    for r in report["cases"]:
        print(f"{r['hessian']:>8} {r['sampler']:>10} {r['B']:>5} {r['cpu_samples_per_s'] / 1e6:>9.0f} "
              f"{r['gpu_io_samples_per_s'] / 1e6:>11.0f} {r['gpu_device_samples_per_s'] / 1e6:>12.0f} "
              f"{r['ratio_io']:>7.1f} {r['ratio_device']:>7.1f} {r['max_a_diff_over_sum_abs_mu']:>8.1e} "
              f"{r['mean_b_rel_diff']:>8.1e}")  # fmt: skip
    for why in report["skipped"]:
        print(f"skipped: {why}")
    low = [r["ratio_device"] for r in report["cases"] if r["hessian"] == "lowrank"]
    if low and report["dims"] >= GOAL_DIMS:
        verdict = "met" if min(low) >= GOAL_RATIO else "NOT met"
        print(f"goal (low-rank, d >= {GOAL_DIMS}): GPU >= {GOAL_RATIO:.0f}x the {report['cpu_threads']}-thread CPU "
              f"rate on every case: {verdict} (x {min(low):.1f} .. {max(low):.1f})")  # fmt: skip
