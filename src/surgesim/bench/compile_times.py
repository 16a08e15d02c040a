"""JIT compile times: each workload's kernels compiled in a fresh process with an empty Numba
cache, then loaded from the on-disk cache by a second fresh process (``sims.bench --compile``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

__all__ = ["compile_point", "bench_compile", "print_compile"]


def _compile_workloads() -> dict[str, tuple[str, Callable[[], object]]]:
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
    """The table of ``bench_compile``: each workload, and its kernels compiling for 0.05 s or more."""
    print("JIT compile time per workload (fresh process, empty cache), and its load from the on-disk cache:")
    print(f"{'workload':<42} {'compile s':>9} {'cached s':>9}  used by")
    for r in rows:
        print(f"{r['workload']:<42} {r['seconds']:>9.2f} {r['cached_seconds']:>9.2f}  {r['used_by']}")
        for c in sorted(r["compiles"], key=lambda c: -c["seconds"]):
            if c["seconds"] >= 0.05:
                print(f"    {c['kernel']:<56} {c['seconds']:>6.2f}")
