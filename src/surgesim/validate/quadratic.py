"""The validation on a quadratic problem (``python -m sims.validate`` without ``--workload``): the
runs are ``surgesim.dynamics``' kernels (``quadratic_tasks`` for ``dynamics.run_task``), the
predictors are computed from the reference runs' states at each target (``quadratic_states``,
``QUADRATIC_PREDICTORS``), and ``QuadraticValidation`` runs the whole protocol.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .optimal_lr import validate_rows
from .options import ValidationOptions
from .predictors import PredictorFn, curve_rows
from .refinement import refinement
from .result import ValidationResult
from .stages import SweepStages, load_average, minutes

if TYPE_CHECKING:
    from ..problem import QuadraticProblem

__all__ = [
    "quadratic_tasks",
    "QuadraticStates",
    "quadratic_states",
    "q_b_simple",
    "q_b_crit",
    "q_eq14",
    "q_probe_sign",
    "probe_sign_curve",
    "q_probe_adam",
    "q_adam_predicted",
    "probe_rule_se",
    "QUADRATIC_PREDICTORS",
    "QuadraticValidation",
]


def quadratic_tasks(
    optimizer, lrs_by_batch: Mapping[float, Sequence[float]], targets: Sequence[float], seeds: int, *,
    further_steps: int, max_steps: int, seed: int = 0, backend: str = "cpu",
) -> list[dict]:  # fmt: skip
    """``surgesim.dynamics.run_task`` parameters: one task per batch size with its learning rates."""
    return [
        {"optimizer": optimizer.name, "beta1": optimizer.beta1, "beta2": optimizer.beta2, "eps": optimizer.eps,
         "batch_size": int(b), "lrs": [float(x) for x in lrs], "lr_rule": "constant", "seeds": int(seeds),
         "seed": int(seed), "targets": [float(t) for t in targets], "further_steps": int(further_steps),
         "max_steps": int(max_steps), "backend": backend}
        for b, lrs in sorted(lrs_by_batch.items())
    ]  # fmt: skip


@dataclass(frozen=True)
class QuadraticStates:
    """The reference runs' states at one target: ``delta`` (n, d) = theta - theta*, the problem
    and the runs' optimizer."""

    problem: QuadraticProblem
    delta: np.ndarray
    batch_grid: np.ndarray  # batch sizes over which probe-type peaks are searched
    optimizer: object = None  # the reference runs' optimizer (``kernels.dynamics.Optimizer``)


def quadratic_states(
    problem: QuadraticProblem, optimizer, batch_size: int, lr: float, targets: Sequence[float],
    seeds: int, *, max_steps: int, seed: int = 0, batch_grid: Sequence[float] = (1, 1e5),
) -> list[QuadraticStates | None]:  # fmt: skip
    """The reference runs (``seeds`` runs at (batch_size, lr), the grid's own random streams) and
    their states at each target (None where fewer than 2 runs reached it)."""
    from ..dynamics import initial_delta
    from ..kernels.dynamics import StepRule, run_trajectories, trajectory_key

    keys = np.array([trajectory_key(int(seed), int(batch_size), r) for r in range(seeds)], dtype=np.uint64)
    res = run_trajectories(
        problem.hessian, problem.sigma, initial_delta(problem), keys, np.full(seeds, float(lr)), int(batch_size),
        optimizer, np.asarray(targets, dtype=float), 0, int(max_steps), rule=StepRule("constant"),
    )  # fmt: skip
    grid = np.geomspace(max(1.0, min(batch_grid) / 4), max(batch_grid) * 4, 240)
    out: list[QuadraticStates | None] = []
    for j in range(len(targets)):
        ok = res.steps[:, j] >= 0
        out.append(QuadraticStates(problem, res.delta_at[ok, j], grid, optimizer) if ok.sum() >= 2 else None)
    return out


def _boot(fn: Callable[[np.ndarray], float], n: int, replicates: int = 200) -> tuple[float, float]:
    """fn(all indices) and its bootstrap s.e. over the n states (fixed generator)."""
    value = fn(np.arange(n))
    gen = np.random.default_rng(0)
    reps = np.array([fn(gen.integers(0, n, n)) for _ in range(replicates)])
    reps = reps[np.isfinite(reps)]
    se = float(np.std(reps, ddof=1) * math.sqrt(n / (n - 1))) if reps.size >= 2 else math.nan
    return float(value), se


def _q_parts(s: QuadraticStates) -> dict[str, np.ndarray]:
    from ..theory import sign_mean

    H, sigma = s.problem.hessian, s.problem.sigma
    mu = np.stack([H.matvec(d) for d in s.delta])
    r = mu / sigma
    hdiag = H.diag()
    num = np.empty((len(mu), s.batch_grid.size))
    den = np.empty_like(num)
    for i, m in enumerate(mu):
        E = sign_mean(s.batch_grid, m, sigma)  # (nb, d), eq 35
        num[i] = E @ m
        den[i] = (1 - E * E) @ hdiag + H.quad_rows(E)
    return {
        "grad_sq": np.sum(mu * mu, axis=1), "grad_hgrad": H.quad_rows(mu),
        "off": H.quad_rows(r) - (r * r) @ hdiag, "num": num, "den": den,
        "tr_sigma": np.sum(sigma**2), "tr_h_sigma": float(hdiag @ sigma**2), "tr_h": float(np.sum(hdiag)),
    }  # fmt: skip


def q_b_simple(s: QuadraticStates) -> tuple[float, float]:
    """McCandlish et al.'s B_simple = tr(Sigma) / |G|^2 over the ensemble of states (ratio of means)."""
    p = _q_parts(s)
    return _boot(lambda i: p["tr_sigma"] / np.mean(p["grad_sq"][i]), len(s.delta))


def q_b_crit(s: QuadraticStates) -> tuple[float, float]:
    """McCandlish et al.'s B_crit = tr(H Sigma) / G'HG over the ensemble of states."""
    p = _q_parts(s)
    return _boot(lambda i: p["tr_h_sigma"] / np.mean(p["grad_hgrad"][i]), len(s.delta))


def q_eq14(s: QuadraticStates) -> tuple[float, float]:
    """Eq 14, B_noise = pi tr(H) / (2 sum_{i != j} r_i r_j H_ij), the off-diagonal sum averaged
    over the states (``surgesim.dynamics``' ensemble theory); inf where it is <= 0."""
    p = _q_parts(s)
    return _boot(lambda i: math.pi * p["tr_h"] / (2 * np.mean(p["off"][i])) if np.mean(p["off"][i]) > 0 else math.inf,
                 len(s.delta))  # fmt: skip


def q_probe_sign(s: QuadraticStates) -> tuple[float, float]:
    """The peak over B of eq 9's lr*(B) = E[sum E_i mu_i] / E[denominator] over the states: on a
    quadratic with Gaussian noise, exactly what the sign probe measures (sims.probe --problem)."""
    p = _q_parts(s)
    return _boot(lambda i: float(s.batch_grid[np.argmax(p["num"][i].mean(0) / p["den"][i].mean(0))]), len(s.delta))


def probe_sign_curve(s: QuadraticStates) -> np.ndarray:
    """Eq 9's lr*(B) = E[sum E_i mu_i] / E[denominator] over the states, at ``s.batch_grid``: the
    curve whose peak is ``q_probe_sign``."""
    p = _q_parts(s)
    return p["num"].mean(0) / p["den"].mean(0)


def _adam_probe(s: QuadraticStates, peak: bool, replicates: int = 200) -> tuple[float, float]:
    """The multi-step Adam probe (``momentum.adam_noise_batch_size``: T = 4 real Adam steps from
    fresh buffers at the reference states, 12 batch sizes over the grid) and its s.e. by a
    parametric bootstrap of lr*_T(B) within its own s.e. (log-normal, independent per B)."""
    from ..momentum import RunState, adam_noise_batch_size, probe_prediction

    zero = np.zeros(s.problem.dim)
    states = [RunState(d, zero, zero, 0, math.nan) for d in s.delta]
    B = np.unique(np.round(np.geomspace(s.batch_grid[0] * 4, s.batch_grid[-1] / 4, 12))).astype(int)
    res = adam_noise_batch_size(s.problem, s.optimizer, states, B).probe
    rule = (lambda r: r.peak_batch_size) if peak else (lambda r: probe_prediction(r)[0])
    return float(rule(res)), probe_rule_se(res, rule, replicates)


def probe_rule_se(result, rule: Callable, replicates: int = 200, seed: int = 0) -> float:
    """The s.e. of ``rule(result)`` (a batch size computed from a multi-step probe's lr*(B)) by a
    parametric bootstrap: each lr*(B) redrawn log-normally with its own s.e. (``lr_log_se``),
    independently per B, the rule applied to each replicate, the spread of the finite ones."""
    gen = np.random.default_rng(seed)
    se = np.where(np.isfinite(result.lr_log_se), result.lr_log_se, 0.0)
    reps = np.array([rule(replace(result, lr_opt=result.lr_opt * np.exp(gen.normal(0.0, se))))
                     for _ in range(replicates)])  # fmt: skip
    reps = reps[np.isfinite(reps) & (reps > 0)]
    return float(np.std(reps, ddof=1)) if reps.size >= 2 else math.nan


def q_probe_adam(s: QuadraticStates) -> tuple[float, float]:
    """The peak over B of the optimal lr of T = 4 real Adam steps from fresh buffers (``_adam_probe``)."""
    return _adam_probe(s, peak=True)


def q_adam_predicted(s: QuadraticStates) -> tuple[float, float]:
    """Issue 21's Adam predictor (``momentum.adam_noise_batch_size``): eq 2 fitted to the optimal lr
    of T = 4 real Adam steps, the probe's peak where that fit fails (``_adam_probe``)."""
    return _adam_probe(s, peak=False)


QUADRATIC_PREDICTORS: dict[str, PredictorFn] = {
    "b_simple": q_b_simple,
    "b_crit": q_b_crit,
    "eq14": q_eq14,
    "probe_sign": q_probe_sign,
    "probe_adam": q_probe_adam,
    "adam_predicted": q_adam_predicted,
}
"""Predictors on the quadratic, by name: ``fn(states) -> (value, s.e.)`` at one target's states."""


class QuadraticValidation:
    """The protocol on a quadratic problem: Adam's runs (``surgesim.dynamics``' kernels) at every
    batch size over a coarse grid of learning rates (``surgesim.dynamics.default_lr_grid`` unless
    given), then the refinement (``refinement``); the statistics per target (``validate_rows``);
    the predictors at the reference runs' states (the grid's middle B and lr, every seed) and the
    probe's lr*(B) curve (eq 9) scaled to the measured optimum.

    Construction checks the protocol against the problem (``surgesim.dynamics.Experiment``);
    ``run`` does the work, its runs resumable through the stores in the output directory."""

    def __init__(self, options: ValidationOptions, problem: QuadraticProblem) -> None:
        from ..dynamics import Experiment, Optimizer, default_lr_grid

        o = options
        self.started = time.perf_counter()
        self.options, self.problem = o, problem
        self.adam = Optimizer("adam", o.beta1, o.beta2, o.eps)
        self.experiment = Experiment(problem, (self.adam,), o.batch_sizes, ((1.0,),), o.targets, o.further_steps,
                                     o.max_steps, o.seeds, o.seed, "cpu", False)  # fmt: skip
        self.targets = self.experiment.targets  # absolute losses
        self.lrs = o.lrs or tuple(default_lr_grid(problem, self.adam, o.batch_sizes, o.lr_points))

    def run(
        self, store: Callable[[str], Path], *, connect_timeout: float | None = None,
        say: Callable[[str], None] | None = None,
    ) -> ValidationResult:  # fmt: skip
        """Run the protocol with its stores at ``store(NAME)`` (``coarse.sqlite``, ``refine.sqlite``);
        ``say`` receives the time estimate, printed before the grid."""
        from ..dynamics import run_task

        o, lrs, targets = self.options, self.lrs, self.targets
        stages = SweepStages(run_task, {"problem_sha256": self.problem.digest()}, store, scheduler=o.scheduler,
                             workers=1, shared=self.problem, connect_timeout=connect_timeout,
                             quiet=o.quiet)  # fmt: skip
        common = dict(further_steps=o.further_steps, max_steps=o.max_steps, seed=o.seed)
        coarse = quadratic_tasks(self.adam, {b: lrs for b in o.batch_sizes}, targets, o.seeds, **common)
        # The reference runs first (the predictors' states: the middle B and lr of the grid, every
        # seed): their time, per learning rate, scales to the estimate printed before the grid.
        b_ref, lr_ref = o.batch_sizes[(len(o.batch_sizes) - 1) // 2], lrs[(len(lrs) - 1) // 2]
        t0 = time.perf_counter()
        states = quadratic_states(self.problem, self.adam, b_ref, lr_ref, targets, o.seeds, max_steps=o.max_steps,
                                  seed=o.seed, batch_grid=o.batch_sizes)  # fmt: skip
        if say is not None:
            say(self._estimate(time.perf_counter() - t0))
        rows = stages(coarse, "coarse")
        extra = refinement(rows, targets, o.refine_points) if o.refine_points else {}
        rows = rows + stages(quadratic_tasks(self.adam, extra, targets, o.seeds, **common), "refine")
        results = validate_rows(rows, targets, replicates=o.replicates, seed=o.seed, top=o.top)
        measured: dict = {}
        curves: list[dict] = []
        if o.predictors:
            for t, s in zip(targets, states, strict=True):
                if s is not None:
                    measured[t] = {name: fn(s) for name, fn in QUADRATIC_PREDICTORS.items()}
            for t, s in zip(targets, states, strict=True):
                res = next((r for r in results if r.target_loss == t), None)
                if s is not None and res is not None:
                    curves += curve_rows(t, "probe_sign", s.batch_grid, probe_sign_curve(s), res)
        context = {"problem": o.problem or f"default d={self.problem.dim}",
                   "initial_loss": self.experiment.initial_loss,
                   "reference": {"batch_size": b_ref, "lr": lr_ref, "seeds": o.seeds},
                   "coarse_lrs": list(lrs)}  # fmt: skip
        return ValidationResult(o, rows, results, measured, curves, context, time.perf_counter() - self.started,
                                problem=self.problem)  # fmt: skip

    def _estimate(self, per_lr: float) -> str:
        """The line printed before the grid: its size and the time estimated from the reference runs."""
        o, lrs = self.options, self.lrs
        n_tasks = len(o.batch_sizes) * (len(lrs) + o.refine_points * len(self.targets))  # (B, lr) pairs, about
        return (f"quadratic d = {self.problem.dim}, Adam({o.beta1:g}, {o.beta2:g}): {len(o.batch_sizes)} batch "
                f"sizes x {len(lrs)} coarse lrs x {o.seeds} seeds, refined by {o.refine_points} per side; "
                f"targets {', '.join(f'{t:.4g}' for t in self.targets)}; estimated at most "
                f"{minutes(per_lr * n_tasks)} from the reference runs ({per_lr:.1f} s, Numba's compilation "
                f"included; load {load_average():.1f})")  # fmt: skip
