"""Benchmark of the multi-step dynamics kernel (``surgesim.kernels.dynamics``) against the plain
vectorised NumPy implementation (``surgesim.reference.dynamics``), measured in the same run.

Work: T trajectories x n steps on the default kind of problem (``surgesim.surge_problem``,
H = diag(h) + U U' of rank 4), d = 1000. Rates are coordinate-updates per second (T x n x d / s).
The NumPy implementation draws its normals from NumPy's own PCG64 generator (its fastest, the fair
baseline; with the kernel's counter-based streams it would be slower still). Beside them: the
rate of generating the kernel's normals alone (``step_normals``, same threads, same streams: the
floor the kernel stands on) and of NumPy's normals alone. Best of ``repeat`` after a warm-up call.
Beside the constant-batch kernel, the same work with per-step rules (``StepRule``): a batch size
that doubles every 100 steps (``variable_batch``), the per-step optimal learning rate (eq 9 at each
state, ``optimal_lr``), the oracle schedule (B_t = B_noise at the state and eq 9, ``oracle``) and
the online one (running estimates, ``online``), each as its time per step relative to the constant
batch (``*_vs_constant``).

Every output column and key (meaning, unit, equation): docs/outputs.md.
"""

from __future__ import annotations

import numpy as np

from . import best_time

__all__ = ["bench_dynamics"]


def bench_dynamics(
    dims: int = 1000,
    trajectories: int = 64,
    steps: int = 2000,
    numpy_steps: int = 200,
    repeat: int = 3,
    optimizers: tuple[str, ...] = ("sign", "adam"),
) -> dict:
    """Timings of the kernel, the NumPy implementation and the normals alone (module docstring).

    NumPy runs ``numpy_steps`` steps (its rate per step does not depend on how many). Returns a
    dict: the work, then per optimizer ``kernel_s``, ``numpy_s``, the coordinate-update rates and
    their ratio, and ``kernel_vs_normals`` (normals-alone rate / kernel rate: 1 means the kernel
    costs no more than its random numbers). A ``dims`` below 2 or a ``trajectories``, ``steps`` or
    ``repeat`` below 1 is refused first: ValueError naming it as `key`.
    """
    for key, value, least in (("dims", dims, 2), ("trajectories", trajectories, 1), ("steps", steps, 1),
                              ("repeat", repeat, 1)):  # fmt: skip
        if value < least:
            raise ValueError(f"`{key}` must be >= {least}, got {value}")
    import numba

    from surgesim.dynamics import DEFAULT_OPTIMIZERS, initial_delta
    from surgesim.kernels.dynamics import (
        Optimizer,
        StepRule,
        run_trajectories,
        step_normals,
        trajectory_key,
    )
    from surgesim.problem import surge_problem
    from surgesim.reference.dynamics import run_trajectories as numpy_trajectories

    p = surge_problem(dims, seed=0)
    delta0 = initial_delta(p)
    keys = np.array([trajectory_key(0, 64, r) for r in range(trajectories)], dtype=np.uint64)
    T, d = trajectories, dims
    rank = p.hessian.low_rank_factor().shape[1]  # surge_problem: diagonal plus low rank
    out: dict = {"dims": d, "rank": rank, "trajectories": T, "steps": steps, "numpy_steps": numpy_steps,
                 "threads": numba.get_num_threads()}  # fmt: skip
    t = best_time(lambda: step_normals(keys, steps, d), repeat)
    out["normals_per_s"] = T * steps * d / t
    g = np.random.default_rng(0)
    t = best_time(lambda: g.standard_normal((T, d)), max(repeat, 20))
    out["numpy_normals_per_s"] = T * d / t
    lr = 1e-4  # small enough to stay near the start: no divergence, the same work at every step
    rules = {
        "variable_batch": (StepRule("constant", "geometric", interval=100, batch_factor=2.0), lr, 64.0),
        "optimal_lr": (StepRule("optimal"), 0.1, 64.0),
        "oracle": (StepRule("optimal", "noise", batch_max=8192.0), 0.1, 1.0),
        "online": (StepRule("estimated", "noise_estimated", batch_min=2.0, batch_max=8192.0), 0.1, 1.0),
    }
    for name in optimizers:
        opt = DEFAULT_OPTIMIZERS[name]

        def kernel(o: Optimizer = opt) -> object:
            return run_trajectories(p.hessian, p.sigma, delta0, keys, lr, 64, o, max_steps=steps, min_steps=steps)

        def numpy_run(o: Optimizer = opt) -> object:
            return numpy_trajectories(p.hessian, p.sigma, delta0, keys, lr, 64, o, numpy_steps,
                                      normals=np.random.default_rng(1))  # fmt: skip

        tk = best_time(kernel, repeat)
        tn = best_time(numpy_run, repeat)
        kernel_rate, numpy_rate = T * steps * d / tk, T * numpy_steps * d / tn
        out[name] = {
            "kernel_s": tk, "numpy_s": tn, "kernel_updates_per_s": kernel_rate, "numpy_updates_per_s": numpy_rate,
            "kernel_vs_numpy": kernel_rate / numpy_rate, "kernel_vs_normals": out["normals_per_s"] / kernel_rate,
        }  # fmt: skip
        for label, (rule, x, b) in rules.items():

            def ruled(o: Optimizer = opt, x: float = x, b: float = b, rule: StepRule = rule) -> object:
                return run_trajectories(p.hessian, p.sigma, delta0, keys, x, b, o, max_steps=steps, min_steps=steps,
                                        rule=rule)  # fmt: skip

            t = best_time(ruled, repeat)
            out[name][f"{label}_s"] = t
            out[name][f"{label}_vs_constant"] = t / tk
    return out
