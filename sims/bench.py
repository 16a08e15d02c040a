"""Benchmarks: the Numba kernels against plain NumPy on the same work, measured in one run.

1. Raw random-number rates: NumPy's PCG64 (uniforms, normals) and the counter-based SplitMix64
   words and +-1 draws in Numba: the floor any sampler stands on.
2. One-step kernel: per-trial a = mu'V and b = V'HV for d = 1000, dense and diagonal + low-rank H,
   several B; samples/s (trials x d per second) for the kernel, plain NumPy (float64 GEMM) and
   tuned NumPy (float32 GEMM), and their ratios.
3. End to end at a fixed precision: the whole ``python -m sims.surge`` command on a dense d = 1000
   problem given with --problem, --rel-se 0.0025 at every B in 1 .. 16384, against the plain
   vectorised NumPy estimator that reaches the same precision (same trials for a and b). The NumPy
   time is its measured per-trial rate times the trials it needs (``--numpy-full`` runs it).
4. Multi-step dynamics kernel (``sims.bench_dynamics``), and ``--backend gpu`` (``sims.bench_gpu``).
5. ``--scaling``: the one-step estimator (``sign`` sampler, B = 64, default family) at d = 10^3 ..
   10^7 (10^8 on machines with 32 GB or more), the same ~2.6e9 samples (trials x d) at every d:
   samples/s and the peak memory (max RSS) of a fresh process that generates the problem and runs
   the trials, beside plain NumPy's rate where it can run (it densifies H: d <= 10^4).
6. ``--compile``: the JIT compile time of each kernel, per workload (the default ``sims.surge``
   run, the other samplers, dense H, the dynamics and the correlated-noise kernels), measured in a
   fresh process with an empty Numba cache, then the time to load the same kernels from the
   on-disk cache in a second fresh process (what every later run pays).

Timings are best of ``--repeat`` after one warm-up call (JIT compiled and cached first).

Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims import _cli
from sims._timing import best_time


@dataclass(frozen=True)
class Options:
    dims: int
    trials: int
    repeat: int
    backend: str
    skip_end_to_end: bool
    numpy_full: bool
    out: str | None
    scaling: tuple[int, ...] | None


def bench_rng(n: int, repeat: int) -> dict:
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
    if numpy_full:
        t = time.perf_counter()
        for B, n in zip(sizes, n_plain):
            for s in range(0, n, block):
                V = ref.signs(p, B, np.arange(s, min(n, s + block)), generator=g)
                ref.moments(p, V, dtype=np.float32)
        out["numpy_seconds_measured"] = time.perf_counter() - t
    out["speedup"] = out.get("numpy_seconds_measured", out["numpy_seconds_estimated"]) / t_kernel
    return out


def _read_csv(path: Path):
    import csv

    with open(path) as f:
        yield from csv.DictReader(f)


def _compile_workloads() -> dict:
    """Name -> (what runs it, a call that compiles its kernels on a small input)."""
    from surgesim.estimate import estimate_batch_size
    from surgesim.problem import FAMILIES

    def onestep(family: str, sampler: str, d: int = 64):
        p = FAMILIES[family](d, 0)
        return lambda: estimate_batch_size(p, 16, trials=64, sampler=sampler)

    def dynamics():
        from surgesim.dynamics import DEFAULT_OPTIMIZERS, initial_delta
        from surgesim.kernels.dynamics import run_trajectories, trajectory_key

        p = FAMILIES["lowrank"](64, 0)
        keys = np.array([trajectory_key(0, 8, r) for r in range(2)], dtype=np.uint64)
        run_trajectories(p.hessian, p.sigma, initial_delta(p), keys, 1e-4, 8, DEFAULT_OPTIMIZERS["sign"],
                         max_steps=4, min_steps=4)  # fmt: skip

    def correlated():
        from surgesim.kernels import correlated as kc

        p = FAMILIES["lowrank"](16, 0)
        kc.moments(kc.gaussian_noise(np.diag(p.sigma**2)), 4, p.mu, p.hessian, trials=8, seed=0)

    return {
        "surge default (sign sampler, low-rank H)": ("sims.surge", onestep("lowrank", "sign")),
        "sign sampler, dense H": ("sims.surge --hessian dense", onestep("dense", "sign")),
        "batch_mean sampler": ("sims.surge --sampler batch_mean", onestep("lowrank", "batch_mean")),
        "per_example sampler": ("sims.surge --sampler per_example, sims.limits", onestep("lowrank", "per_example")),
        "multi-step dynamics (sign-SGD)": ("sims.dynamics, sims.schedules", dynamics),
        "correlated noise": ("sims.limits", correlated),
    }


def compile_point() -> list[dict]:
    """One process's pass over ``_compile_workloads``: wall seconds of each workload's first call,
    and of each top-level Numba compilation inside it."""
    from numba.core import event

    class CompileTimes(event.Listener):
        """Wall seconds of each top-level compilation (nested ones, such as inlined callees, count
        in their caller's)."""

        def __init__(self) -> None:
            self.compiles: list[dict] = []
            self._stack: list[float] = []

        def on_start(self, ev) -> None:
            self._stack.append(time.perf_counter())

        def on_end(self, ev) -> None:
            t = time.perf_counter() - self._stack.pop()
            if not self._stack:
                f = ev.data["dispatcher"].py_func
                self.compiles.append({"kernel": f"{f.__module__}.{f.__qualname__}", "seconds": t})

    rows = []
    for name, (used_by, call) in _compile_workloads().items():
        listener = CompileTimes()
        event.register("numba:compile", listener)
        try:
            t = time.perf_counter()
            call()
            seconds = time.perf_counter() - t
        finally:
            event.unregister("numba:compile", listener)
        rows.append({"workload": name, "used_by": used_by, "seconds": seconds, "compiles": listener.compiles})
    return rows


def bench_compile() -> list[dict]:
    """``compile_point`` in a fresh process with an empty Numba cache (NUMBA_CACHE_DIR: a new
    temporary directory), then in a second fresh process on the cache the first one filled."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        cmd = [sys.executable, "-m", "sims.bench", "--compile-point"]
        cold, warm = (json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                                env=env).stdout.splitlines()[-1]) for _ in range(2))  # fmt: skip
    for c, w in zip(cold, warm, strict=True):
        c["cached_seconds"] = w["seconds"]
    return cold


def print_compile(rows: list[dict]) -> None:
    print("JIT compile time per workload (fresh process, empty cache), and its load from the on-disk cache:")
    print(f"{'workload':<42} {'compile s':>9} {'cached s':>9}  used by")
    for r in rows:
        print(f"{r['workload']:<42} {r['seconds']:>9.2f} {r['cached_seconds']:>9.2f}  {r['used_by']}")
        for c in sorted(r["compiles"], key=lambda c: -c["seconds"]):
            if c["seconds"] >= 0.05:
                print(f"    {c['kernel']:<56} {c['seconds']:>6.2f}")


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
    """``scaling_point`` for each d, each in its own process (``python -m sims.bench --scaling-point``)."""
    rows = []
    for d in dims:
        cmd = [sys.executable, "-m", "sims.bench", "--scaling-point", f"{d},{scaling_trials(d)}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:  # the child's own error line (memory above all), not a traceback here
            lines = r.stderr.strip().splitlines()
            last = lines[-1].removeprefix("error: ") if lines else f"exit status {r.returncode}"
            if r.returncode in (-9, 137) or "MemoryError" in r.stderr or "memory" in last:
                raise MemoryError(f"--scaling at d = {d}: {last}")
            raise _cli.UsageError(f"--scaling at d = {d} failed: {last}")
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
    print(f"{'d':>11} {'trials':>9} {'seconds':>8} {'samples/s':>10} {'peak RSS':>9} {'NumPy samples/s':>16}")
    for q in rows:
        numpy = f"{q['numpy_samples_per_s'] / 1e6:.3g}M" if "numpy_samples_per_s" in q else "-"
        print(f"{q['dims']:>11,} {q['trials']:>9,} {q['seconds']:>8.2f} {q['samples_per_s'] / 1e6:>9.0f}M "
              f"{q['peak_rss_bytes'] / 1e9:>7.2f}GB {numpy:>16}")  # fmt: skip


def build_parser() -> _cli.Parser:
    p = _cli.parser("sims.bench", __doc__)
    p.add_argument("--dims", type=_cli.integer(2, 2**40), default=1000, help="dimension d (default 1000)")
    p.add_argument(
        "--trials", type=_cli.integer(16, 2**40), default=16384, help="trials per one-step timing (default 16384)"
    )
    p.add_argument("--repeat", type=_cli.integer(1, 1000), default=3, help="timed repetitions, best kept (default 3)")
    p.add_argument("--backend", choices=["cpu", "gpu"], default="cpu", help="gpu: CuPy kernels against the CPU kernels")
    p.add_argument("--skip-end-to-end", action="store_true", help="skip the --rel-se 0.0025 command timing (minutes)")
    p.add_argument(
        "--numpy-full", action="store_true", help="run the NumPy end-to-end estimator instead of extrapolating"
    )
    p.add_argument("--out", help="also write the numbers as JSON to this file")
    p.add_argument("--scaling", action="store_true",
                   help="only the scaling table: samples/s and peak memory, d = 10^3 .. 10^7 (see above)")  # fmt: skip
    p.add_argument("--scaling-dims", type=_cli.int_list, metavar="D1,D2,...",
                   help="dimensions of --scaling (default 10^3 .. 10^7, and 10^8, ~10 GB, with >= 32 GB)")  # fmt: skip
    p.add_argument("--scaling-point", type=_cli.int_list, help=argparse.SUPPRESS)  # D,TRIALS: one row, as JSON
    p.add_argument("--compile", action="store_true",
                   help="only the JIT compile time of each kernel (cold cache) and its cached load time")  # fmt: skip
    p.add_argument("--compile-point", action="store_true", help=argparse.SUPPRESS)  # one pass, as JSON
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _main(args) -> int:
    if args.scaling_point:
        print(json.dumps(scaling_point(*args.scaling_point)))
        return 0
    if args.compile_point:
        print(json.dumps(compile_point()))
        return 0
    if args.compile:
        if args.out is not None:
            _cli.out_file(args.out)
        rows = bench_compile()
        print_compile(rows)
        if args.out:
            _cli.write_json({"compile": rows}, args.out)
        return 0
    if args.dims < 2 or args.trials < 16 or args.repeat < 1:
        raise _cli.UsageError("need --dims >= 2, --trials >= 16, --repeat >= 1")
    if args.scaling_dims is not None and (not args.scaling or min(args.scaling_dims) < 2):
        raise _cli.UsageError("--scaling-dims needs --scaling and dimensions >= 2")
    if args.out is not None:
        _cli.out_file(args.out)  # before minutes of benchmarking
    scaling = tuple(args.scaling_dims or default_scaling_dims()) if args.scaling else None
    if scaling:  # the 10^8 point peaks near 10 GB: about 100 bytes per dimension
        _cli.need_memory(100 * max(scaling), f"--scaling at d = {max(scaling)}")
    opts = Options(args.dims, args.trials, args.repeat, args.backend, args.skip_end_to_end, args.numpy_full, args.out,
                   scaling)  # fmt: skip
    if opts.scaling:
        rows = bench_scaling(opts.scaling)
        print(f"one-step estimator, sign sampler, B = 64, ~{SCALING_SAMPLES:.2g} samples per d (trials x d):")
        print_scaling(rows)
        if opts.out:
            _cli.write_json({"scaling": rows}, opts.out)
        return 0
    _cli.need_memory(8 * args.dims * args.dims * 3, f"--dims {args.dims} (dense H)")
    if opts.backend == "gpu":
        from sims.bench_gpu import bench_gpu, print_report

        report = {"gpu": bench_gpu(opts.dims, opts.trials, opts.repeat)}
        print_report(report["gpu"])
        if opts.out:
            Path(opts.out).write_text(json.dumps(report, indent=2) + "\n")
        return 0
    report: dict = {}
    r = report["rng"] = bench_rng(1 << 25, opts.repeat)
    print(f"random numbers ({r['threads']} threads): NumPy PCG64 {r['numpy_uniform_per_s'] / 1e6:.0f}M uniforms/s, "
          f"{r['numpy_normal_per_s'] / 1e6:.0f}M normals/s (1 thread); SplitMix64 {r['splitmix_pm1_per_s'] / 1e6:.0f}M "
          f"+-1 draws/s, {r['splitmix_normal_per_s'] / 1e6:.0f}M normals/s")  # fmt: skip
    print(f"\none step, d = {opts.dims}, {opts.trials} trials (samples = trials x d):")
    print(f"{'H':>8} {'B':>5} {'kernel M/s':>11} {'NumPy M/s':>10} {'NumPy32 M/s':>12} {'x NumPy':>8} {'x NumPy32':>9}")
    rows = report["onestep"] = bench_onestep(opts.dims, opts.trials, opts.repeat)
    for q in rows:
        rates = (q["kernel_samples_per_s"], q["numpy_samples_per_s"], q["numpy_f32_samples_per_s"])
        print(f"{q['hessian']:>8} {q['B']:>5} {rates[0] / 1e6:>11.0f} {rates[1] / 1e6:>10.0f} {rates[2] / 1e6:>12.0f} "
              f"{q['ratio_vs_numpy']:>8.1f} {q['ratio_vs_numpy_f32']:>9.1f}")  # fmt: skip
    best = max(q["kernel_samples_per_s"] for q in rows if q["hessian"] == "lowrank")
    print(
        f"best one-step kernel: {best / 1e6:.0f}M samples/s = {best / r['splitmix_pm1_per_s']:.0%} of the raw "
        f"+-1 draw rate ({r['splitmix_pm1_per_s'] / 1e6:.0f}M/s)"
    )
    if not opts.skip_end_to_end:
        e = report["end_to_end"] = bench_end_to_end(opts.dims, 0.0025, opts.numpy_full)
        numpy_s = e.get("numpy_seconds_measured", e["numpy_seconds_estimated"])
        how = "measured" if "numpy_seconds_measured" in e else "measured rate x trials needed"
        print(f"\nend to end, dense d = {opts.dims}, rel. s.e. {e['rel_se']} at B = 1 .. 16384:")
        print(
            f"  python -m sims.surge: {e['kernel_command_seconds']:.1f} s ({e['kernel_trials']:,} numerator / "
            f"{e['kernel_denominator_trials']:,} denominator trials)"
        )
        print(
            f"  plain NumPy: {numpy_s:.0f} s ({how}: {e['numpy_trials']:,} trials at "
            f"{e['numpy_seconds_per_trial'] * 1e6:.1f} us)"
        )
        print(f"  speed-up: {e['speedup']:.1f}x")
    try:
        from sims.bench_dynamics import bench_dynamics
    except ImportError:
        bench_dynamics = None
    if bench_dynamics is not None:
        report["dynamics"] = bench_dynamics()
        print("\nmulti-step dynamics:")
        print(json.dumps(report["dynamics"], indent=2))
    if opts.out:
        _cli.write_json(report, _cli.out_file(opts.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
