"""Random-number rates, the one-step kernel against plain NumPy, and the whole ``sims.surge``
command against the NumPy estimator at the same precision (``python -m sims.bench``'s default
run; the sims.bench docstring says what each measures)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import best_time
from .dynamics import bench_dynamics

__all__ = ["bench_rng", "bench_onestep", "bench_end_to_end", "format_rng", "format_onestep", "format_end_to_end",
           "run_all"]  # fmt: skip


def bench_rng(n: int, repeat: int) -> dict:
    """Rates of NumPy's PCG64 and of the counter-based SplitMix64 draws in Numba (per second)."""
    import numba

    from surgesim import rng
    from surgesim._jit import jit_parallel

    @jit_parallel
    def words(key, n):  # +-1 draws against a threshold, summed: the SIGN sampler's floor
        s = 0
        for i in numba.prange(n):
            s += 1 if rng.random_bits(key, i) < np.uint64(1 << 62) else -1
        return s

    @jit_parallel
    def normals(key, n):
        s = 0.0
        for i in numba.prange(n // 2):
            z0, z1 = rng.normal_pair(key, i)
            s += z0 + z1
        return s

    g = np.random.default_rng(0)
    key = np.uint64(12345)
    return {
        "numpy_uniform_per_s": n / best_time(lambda: g.random(n), repeat),
        "numpy_normal_per_s": n / best_time(lambda: g.standard_normal(n), repeat),
        "splitmix_pm1_per_s": n / best_time(lambda: words(key, n), repeat),
        "splitmix_normal_per_s": n / best_time(lambda: normals(key, n), repeat),
        "threads": numba.get_num_threads(),
    }


def bench_onestep(dims: int, trials: int, repeat: int) -> list[dict]:
    """Per-trial a = mu'V and b = V'HV: the kernel against NumPy (float64, float32), samples/s."""
    from surgesim.estimate import _Sampler
    from surgesim.problem import FAMILIES
    from surgesim.reference import onestep as ref

    rows = []
    for family in ("lowrank", "dense"):
        p = FAMILIES[family](dims, 0)
        for B in (1, 64, 4096):

            def kernel(p=p, B=B):
                s = _Sampler(p, B, seed=0, sampler="sign")
                s.grow(trials, trials)

            g = np.random.default_rng(0)

            def numpy(dtype, p=p, B=B, g=g):
                for s in range(0, trials, 4096):
                    V = ref.signs(p, B, np.arange(s, min(trials, s + 4096)), generator=g)
                    ref.moments(p, V, dtype=dtype)

            t_k = best_time(kernel, repeat)
            t_np = best_time(lambda: numpy(np.float64), max(1, repeat // 2))
            t_np32 = best_time(lambda: numpy(np.float32), max(1, repeat // 2))
            work = trials * dims
            rows.append({
                "hessian": family, "B": B, "kernel_samples_per_s": work / t_k,
                "numpy_samples_per_s": work / t_np, "numpy_f32_samples_per_s": work / t_np32,
                "ratio_vs_numpy": t_np / t_k, "ratio_vs_numpy_f32": t_np32 / t_k,
            })  # fmt: skip
    return rows


def bench_end_to_end(dims: int, rel_se: float, numpy_full: bool) -> dict:
    """The whole ``sims.surge`` command at ``rel_se`` against plain NumPy at the same precision."""
    from surgesim.problem import FAMILIES
    from surgesim.reference import onestep as ref

    sizes = [2**k for k in range(15)]  # 1 .. 16384
    with tempfile.TemporaryDirectory() as tmp:
        problem = Path(tmp) / "dense.npz"
        FAMILIES["dense"](dims, 0).save(problem)
        cmd = [sys.executable, "-m", "sims.surge", "--problem", str(problem), "--rel-se", str(rel_se),
               "--batch-sizes", ",".join(map(str, sizes)), "--quiet", "--no-plot",
               "--out", str(Path(tmp) / "run")]  # fmt: skip
        warm = cmd[:-1] + [str(Path(tmp) / "warm"), "--rel-se", "0.5"]
        subprocess.run(warm, check=True)  # warm the JIT cache (its own store: other options)
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        t_kernel = time.perf_counter() - t
        results = list(_read_csv(Path(tmp) / "run" / "results.csv"))
        p = FAMILIES["dense"](dims, 0)

    # Plain NumPy at the same precision uses the same N trials for a and b: its relative variance
    # is (ra + rb - 2 rc) / N with per-trial relative (co)variances from a 4096-trial NumPy pilot.
    g = np.random.default_rng(0)
    block = 4096
    n_plain = []
    for B in sizes:
        a, b = ref.moments(p, ref.signs(p, B, np.arange(block), generator=g), dtype=np.float32)
        ma, mb = a.mean(), b.mean()
        per_trial = a.var(ddof=1) / ma**2 + b.var(ddof=1) / mb**2 - 2 * np.cov(a, b)[0, 1] / (ma * mb)
        n_plain.append(max(int(np.ceil(per_trial / rel_se**2)), block))

    def numpy_block():
        V = ref.signs(p, 64, np.arange(block), generator=g)
        ref.moments(p, V, dtype=np.float32)

    per_trial = best_time(numpy_block, 2) / block
    out = {
        "rel_se": rel_se, "batch_sizes": sizes, "kernel_command_seconds": t_kernel,
        "kernel_trials": int(sum(int(r["trials"]) for r in results)),
        "kernel_denominator_trials": int(sum(int(r["denominator_trials"]) for r in results)),
        "numpy_trials": int(sum(n_plain)), "numpy_seconds_per_trial": per_trial,
        "numpy_seconds_estimated": per_trial * sum(n_plain),
    }  # fmt: skip
    numpy_seconds = per_trial * sum(n_plain)
    if numpy_full:
        t = time.perf_counter()
        for B, n in zip(sizes, n_plain):
            for s in range(0, n, block):
                V = ref.signs(p, B, np.arange(s, min(n, s + block)), generator=g)
                ref.moments(p, V, dtype=np.float32)
        numpy_seconds = time.perf_counter() - t
        out["numpy_seconds_measured"] = numpy_seconds
    out["speedup"] = numpy_seconds / t_kernel
    return out


def _read_csv(path: Path):
    import csv

    with open(path) as f:
        yield from csv.DictReader(f)


def format_rng(r: dict) -> str:
    """The line of ``bench_rng``'s rates."""
    m = {k: v / 1e6 for k, v in r.items() if k.endswith("_per_s")}
    return (f"random numbers ({r['threads']} threads): NumPy PCG64 {m['numpy_uniform_per_s']:.0f}M uniforms/s, "
            f"{m['numpy_normal_per_s']:.0f}M normals/s (1 thread); SplitMix64 {m['splitmix_pm1_per_s']:.0f}M "
            f"+-1 draws/s, {m['splitmix_normal_per_s']:.0f}M normals/s")  # fmt: skip


def format_onestep(rows: list[dict], rng: dict, dims: int, trials: int) -> str:
    """The table of ``bench_onestep``, and the best kernel rate against the raw +-1 draw rate."""
    head = f"{'H':>8} {'B':>5} {'kernel M/s':>11} {'NumPy M/s':>10} {'NumPy32 M/s':>12} {'x NumPy':>8} {'x NumPy32':>9}"
    lines = [f"\none step, d = {dims}, {trials} trials (samples = trials x d):", head]
    for q in rows:
        rates = [q[k] / 1e6 for k in ("kernel_samples_per_s", "numpy_samples_per_s", "numpy_f32_samples_per_s")]
        lines.append(f"{q['hessian']:>8} {q['B']:>5} {rates[0]:>11.0f} {rates[1]:>10.0f} {rates[2]:>12.0f} "
                     f"{q['ratio_vs_numpy']:>8.1f} {q['ratio_vs_numpy_f32']:>9.1f}")  # fmt: skip
    best = max(q["kernel_samples_per_s"] for q in rows if q["hessian"] == "lowrank")
    lines.append(f"best one-step kernel: {best / 1e6:.0f}M samples/s = {best / rng['splitmix_pm1_per_s']:.0%} of the "
                 f"raw +-1 draw rate ({rng['splitmix_pm1_per_s'] / 1e6:.0f}M/s)")  # fmt: skip
    return "\n".join(lines)


def format_end_to_end(e: dict, dims: int) -> str:
    """The lines of ``bench_end_to_end``: the command's time, plain NumPy's, the speed-up."""
    numpy_s = e.get("numpy_seconds_measured", e["numpy_seconds_estimated"])
    how = "measured" if "numpy_seconds_measured" in e else "measured rate x trials needed"
    return (f"\nend to end, dense d = {dims}, rel. s.e. {e['rel_se']} at B = 1 .. 16384:\n"
            f"  python -m sims.surge: {e['kernel_command_seconds']:.1f} s ({e['kernel_trials']:,} numerator / "
            f"{e['kernel_denominator_trials']:,} denominator trials)\n"
            f"  plain NumPy: {numpy_s:.0f} s ({how}: {e['numpy_trials']:,} trials at "
            f"{e['numpy_seconds_per_trial'] * 1e6:.1f} us)\n"
            f"  speed-up: {e['speedup']:.1f}x")  # fmt: skip


def run_all(dims: int, trials: int, repeat: int, end_to_end: bool = True, numpy_full: bool = False) -> dict:
    """The default benchmark, printed as it goes: random numbers, the one-step kernel, end to end
    (unless not ``end_to_end``), the dynamics kernel; the report as a JSON-ready dict."""
    report: dict = {"rng": bench_rng(1 << 25, repeat)}
    print(format_rng(report["rng"]))
    report["onestep"] = bench_onestep(dims, trials, repeat)
    print(format_onestep(report["onestep"], report["rng"], dims, trials))
    if end_to_end:
        report["end_to_end"] = bench_end_to_end(dims, 0.0025, numpy_full)
        print(format_end_to_end(report["end_to_end"], dims))
    report["dynamics"] = bench_dynamics()
    print("\nmulti-step dynamics:")
    print(json.dumps(report["dynamics"], indent=2))
    return report
