"""The grid search's task: every learning rate and seed at one (optimizer, batch size), run by the
dynamics kernels (``surgesim.kernels.dynamics``), one row per run and target (``ROW_COLUMNS``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy import special

from .. import backend as backends
from ..hessian import Hessian
from ..kernels import dynamics as cpu_kernels
from ..kernels.dynamics import Optimizer, StepRule, trajectory_key
from ..problem import QuadraticProblem
from .problem import initial_delta
from .spec import Experiment

__all__ = ["ROW_COLUMNS", "PATH_NOTE", "finite_or_none", "run_task", "run_experiment"]

ROW_COLUMNS = (
    "optimizer", "beta1", "beta2", "eps", "lr", "batch_size", "seed", "target_loss", "steps",
    "examples", "further_decrease", "loss_at", "loss_after", "off_diagonal", "signal",
    "eq9_numerator", "eq9_denominator", "grad_sq", "grad_hgrad", "lr_rule", "path_s_min", "path_e_min",
)  # fmt: skip
"""Columns of a run row (one per run and target). steps, examples and the rest are None when the
target was not reached within ``max_steps``; further_decrease is also None when the run diverged
before its further steps. off_diagonal = sum_{i != j} r_i r_j H_ij (eq 14), signal =
sum_i mu_i^2 / sigma_i, eq9_* = eq 9's numerator sum_i E_i mu_i and denominator at the run's B,
grad_sq = mu'mu and grad_hgrad = mu'H mu (eq 1), all at the state where the target was reached.
lr_rule: "constant" (the grid) or "optimal" (the per-step optimal-lr arm: lr is 1, the multiplier
of eq 9 at each step's state, eq 1 for SGD). path_s_min, path_e_min: the integrals of ds and of
B_noise ds along the run's path to the target (eq 44-45, ``PATH_NOTE``)."""

PATH_NOTE = """Eq 44-45 along a recorded path: each step adds ds = dL / dL_max and B_noise ds, with dL the
step's loss decrease and dL_max (eq 19) and B_noise (eq 14) at the state before it, so that
ds = 2 off dL / S^2 and B_noise ds = pi tr(H) dL / S^2 (for SGD, McCandlish's dL_max =
|G|^4 / (2 G'HG) and B_noise = tr(H Sigma) / G'HG). The path average of eq 21 is
sum B_noise ds / sum ds, over the runs of an ensemble (E_min / S_min of eq 45)."""


def finite_or_none(x: float | None) -> float | None:
    """``x`` as a float, or None where it is None or not finite (JSON and CSV write None as empty)."""
    return float(x) if x is not None and np.isfinite(x) else None


def _state_quantities(H: Hessian, sigma: np.ndarray, B: float, delta: np.ndarray) -> dict[str, np.ndarray]:
    """Per row of delta (n, d): the closed forms' ingredients at that state (see ROW_COLUMNS)."""
    mu = H.matvec(delta)
    r = mu / sigma
    hdiag = H.diag()
    # E_i = erf(sqrt(B/2) r_i) (eq 35); eq 9 = sum E mu / (sum (1 - E^2) H_ii + E'HE)
    E = special.erf(np.sqrt(B / 2.0) * r)
    return {
        "off_diagonal": H.quad_rows(r) - (r * r) @ hdiag,
        "signal": np.sum(mu * mu / sigma, axis=-1),
        "eq9_numerator": np.sum(E * mu, axis=-1),
        "eq9_denominator": (1.0 - E * E) @ hdiag + H.quad_rows(E),
        "grad_sq": np.sum(mu * mu, axis=-1),
        "grad_hgrad": H.quad_rows(mu),
    }


def run_task(params: Mapping, problem: QuadraticProblem) -> list[dict]:
    """Run one task of ``Experiment.tasks()``: every learning rate and seed at one (optimizer, B).

    A pure function of (params, problem): the rows are identical whatever the thread count or the
    machine that runs the task. Returns one row per (learning rate, seed, target), ``ROW_COLUMNS``.
    """
    opt = Optimizer(str(params["optimizer"]), float(params["beta1"]), float(params["beta2"]), float(params["eps"]))
    B = int(params["batch_size"])
    lrs = np.asarray(params["lrs"], dtype=np.float64)
    n_seeds = int(params["seeds"])
    targets = np.asarray(params["targets"], dtype=np.float64)
    keys = np.array([trajectory_key(int(params["seed"]), B, r) for r in range(n_seeds)], dtype=np.uint64)
    lr_rule = str(params.get("lr_rule", "constant"))
    # trajectory (i, r) = learning rate i, seed r; runs that differ only in lr share their noise
    kernels = backends.dynamics_kernels(str(params.get("backend", "cpu")))
    on_cpu = kernels is cpu_kernels  # the GPU kernels have neither per-step rules nor path integrals
    if not on_cpu and lr_rule != "constant":
        raise ValueError("the per-step optimal-lr arm runs on the CPU backend only (use backend 'cpu')")
    args = (
        problem.hessian, problem.sigma, initial_delta(problem), np.tile(keys, lrs.size), np.repeat(lrs, n_seeds), B,
        opt, targets, int(params["further_steps"]), int(params["max_steps"]),
    )  # fmt: skip
    if on_cpu:
        res = kernels.run_trajectories(*args, rule=StepRule(lr_rule), path=True)
    else:
        res = kernels.run_trajectories(*args)
    T, m = res.steps.shape
    reached = res.steps >= 0
    theory = _state_quantities(problem.hessian, problem.sigma, float(B), np.nan_to_num(res.delta_at.reshape(T * m, -1)))
    rows = []
    for t in range(T):
        for j in range(m):
            ok = bool(reached[t, j])
            s = int(res.steps[t, j])
            row = {
                "optimizer": opt.name, "beta1": opt.beta1, "beta2": opt.beta2, "eps": opt.eps,
                "lr": float(lrs[t // n_seeds]), "batch_size": B, "seed": t % n_seeds, "target_loss": float(targets[j]),
                "steps": s if ok else None, "examples": s * B if ok else None,
                "further_decrease": finite_or_none(res.loss_at[t, j] - res.loss_after[t, j]) if ok else None,
                "loss_at": finite_or_none(res.loss_at[t, j]), "loss_after": finite_or_none(res.loss_after[t, j]),
            }  # fmt: skip
            for name, values in theory.items():
                row[name] = finite_or_none(values[t * m + j]) if ok else None
            row["lr_rule"] = lr_rule
            row["path_s_min"] = finite_or_none(res.path_ds[t, j]) if ok else None
            row["path_e_min"] = finite_or_none(res.path_bds[t, j]) if ok else None
            rows.append(row)
    return rows


def run_experiment(experiment: Experiment, progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """All rows of ``experiment``, task after task; ``progress(done, total)`` after each task."""
    tasks = experiment.tasks()
    rows: list[dict] = []
    if progress is not None:
        progress(0, len(tasks))
    for i, params in enumerate(tasks):
        rows.extend(run_task(params, experiment.problem))
        if progress is not None:
            progress(i + 1, len(tasks))
    return rows
