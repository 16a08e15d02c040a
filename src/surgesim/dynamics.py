"""The paper's grid-search protocol (Li et al. 2024, Section 3.2-3.3) on a noisy quadratic.

For a grid of optimizers x batch sizes B x learning rates x seeds, every run starts from the same
theta0 and trains on L(theta) = 1/2 (theta - theta*)'H(theta - theta*) with batch-mean gradients
H(theta - theta*) + N(0, diag(sigma^2) / B) (``surgesim.kernels.dynamics``). For each target loss
it records the first step S at which L <= target, E = B S, and the further loss decrease
L(S) - L(S + further_steps) (the paper trains "the same number of steps" past the target and
colours that decrease, Figs 2-4). From these rows, per optimizer and target:

- the optimal learning rate per B, by two criteria: fewest steps to the target (seed-averaged S;
  the primary one, used for the peak and the curve fits) and largest further decrease, each with
  its spread over seeds (``surgesim.gridfit``);
- B_noise, S_min, E_min by eq 22 from the (S, E) pairs at the step-optimal learning rates, and
  eps_max by eq 23; the surge curve (eq 2) and the SGD curves (eq 24 form, alpha = 0.5, 1) fitted
  to the optima, compared by AIC (``surgesim.fit.compare_curves``);
- the empirical peak batch size (the B with the largest optimal learning rate), over all seeds
  and seed by seed;
- the theory's prediction at the states where the runs reached the target: each run's state gives
  mu = H(theta - theta*) and r = mu / sigma. The quantities the closed forms are built from (the
  off-diagonal sum of eq 14, S = sum mu_i^2 / sigma_i, and eq 9's numerator and denominator) are
  averaged over the runs at the step-optimal learning rates, then combined: B_noise by eq 14,
  eps_max by eq 16, eps_opt(B) by eq 9 (for SGD: eq 1 from mean G'G and G'HG). This is the
  theory of the ensemble of states at that loss; the mean state itself (theta averaged over runs)
  is not used because averaging cancels the fluctuating part of theta - theta*, which carries
  most of the off-diagonal sum, and its B_noise is then far too large (often infinite).

The problem's ``mu`` is the mean gradient at the start: theta0 - theta* = H^-1 mu, so the first
step of every run is exactly the one-step setting of ``surgesim.theory``.

The work is a list of independent deterministic tasks, one per (optimizer, batch size), each
running every learning rate and seed: ``Experiment.tasks()`` gives their JSON parameters and
``run_task(params, problem)`` their rows, so ``surgesim.sweep.run_sweep(run_task, tasks,
shared=problem)`` runs the same tasks on processes or Dask, resumably; ``run_experiment`` runs them
here, one after the other (each task is itself parallel over trajectories).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import special

from . import backend as backends
from .fit import CurveFit
from .gridfit import GridFit, fit_grid, optimal_lr_per_batch
from .hessian import Dense, Diagonal, Hessian
from .kernels import dynamics as cpu_kernels
from .kernels.dynamics import Optimizer, StepRule, trajectory_key
from .problem import QuadraticProblem, surge_problem
from .theory import fit_noise_batch_size, optimal_lr, sgd_optimal_lr

__all__ = [
    "Optimizer",
    "DEFAULT_OPTIMIZERS",
    "Experiment",
    "TargetResult",
    "initial_delta",
    "default_lr_grid",
    "default_problem",
    "default_experiment",
    "DEFAULT_BATCH_SIZES",
    "run_task",
    "run_experiment",
    "summarize",
    "summarize_arm",
    "path_noise_batch_size",
    "adam_prediction",
    "ROW_COLUMNS",
    "PATH_NOTE",
]

DEFAULT_OPTIMIZERS = {
    "sign": Optimizer("sign"),
    "adam": Optimizer("adam", 0.9, 0.999, 1e-8),
    "sgd": Optimizer("sgd"),
    "lion": Optimizer("lion", 0.9, 0.99),
}
"""The optimizers by name, with the paper's Adam (0.9, 0.999) and Lion's published betas."""

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


def initial_delta(problem: QuadraticProblem) -> np.ndarray:
    """theta0 - theta* = H^-1 mu: the start at which the mean gradient is the problem's mu.

    Diagonal and diagonal + low-rank H are solved in O(d k^2) (Woodbury identity); they need
    h > 0. Raises ValueError when H is singular.
    """
    H, mu = problem.hessian, problem.mu
    if isinstance(H, Dense):
        try:
            return np.linalg.solve(H.matrix, mu)
        except np.linalg.LinAlgError:
            raise ValueError("H is singular: theta0 = theta* + H^-1 mu is undefined") from None
    if np.any(H.h <= 0):
        raise ValueError(f"H's diagonal part must be > 0 to solve for theta0, min is {H.h.min():.3g}")
    if isinstance(H, Diagonal):
        return mu / H.h
    # (D + U U')^-1 mu = D^-1 mu - D^-1 U (I + U'D^-1 U)^-1 U'D^-1 mu
    U, dinv = H.factor, 1.0 / H.h
    small = np.eye(U.shape[1]) + (U.T * dinv) @ U
    y = dinv * mu
    return y - dinv * (U @ np.linalg.solve(small, U.T @ y))


def _diag_trace_lmax(H: Hessian) -> tuple[np.ndarray, float, float]:
    """diag(H), tr(H) and the largest eigenvalue (power iteration for the structured kinds)."""
    if isinstance(H, Dense):
        return H.diag(), H.trace(), float(np.linalg.eigvalsh(H.matrix)[-1])
    if isinstance(H, Diagonal):
        return H.diag(), H.trace(), float(H.h.max())
    x = np.ones(H.dim) / math.sqrt(H.dim)
    lam = 0.0
    for _ in range(500):
        y = H.matvec(x)
        new = float(np.linalg.norm(y))
        x = y / new
        if abs(new - lam) <= 1e-12 * new:
            break
        lam = new
    return H.diag(), H.trace(), new


def default_lr_grid(
    problem: QuadraticProblem, optimizer: Optimizer, batch_sizes: Sequence[float], n: int = 16
) -> np.ndarray:
    """A log grid of ``n`` learning rates that brackets the optima on ``problem``.

    Sign-like optimizers (sign, lion) span [min_B eq9 / 8, max_B eq9 * 2], eq 9 at the start;
    Adam, whose steps are shorter than sign's (its momentum averages the noise away), spans up to
    8 max_B eq9; SGD spans [min_B eq1 / 8, 2 / lambda_max] (eq 1; 2 / lambda_max is SGD's stability
    limit on a quadratic). The optima move to smaller learning rates as the loss falls, hence the
    wide lower margin.
    """
    if int(n) != n or n < 3:
        raise ValueError(f"n={n!r} learning rates: need an integer >= 3")
    b = np.asarray(batch_sizes, dtype=np.float64)
    if optimizer.name == "sgd":
        lo = float(np.min(sgd_optimal_lr(b, problem.mu, problem.sigma**2, problem.hessian))) / 8.0
        # SGD's stability limit on a quadratic; with momentum b1 (EMA form) 2 (1 + b1) / ((1 - b1) lambda_max)
        hi = 2.0 * (1.0 + optimizer.beta1) / ((1.0 - optimizer.beta1) * _diag_trace_lmax(problem.hessian)[2])
    else:
        eq9 = optimal_lr(b, problem.mu, problem.sigma, problem.hessian)
        lo = float(np.min(eq9)) / 8.0
        hi = float(np.max(eq9)) * (8.0 if optimizer.name == "adam" else 2.0)
    return np.geomspace(lo, hi, int(n))


def _int_tuple(name: str, values, lo: int) -> tuple[int, ...]:
    out = []
    for v in np.atleast_1d(np.asarray(values)).ravel():
        if not (np.isfinite(v) and float(v).is_integer() and v >= lo):
            raise ValueError(f"{name} must be integers >= {lo}, got {v!r}")
        out.append(int(v))
    if not out or len(set(out)) != len(out):
        raise ValueError(f"{name} must be non-empty and distinct, got {out}")
    return tuple(sorted(out))


@dataclass(frozen=True, eq=False)
class Experiment:
    """A grid search: optimizers x batch sizes x learning rates x seeds, with target losses.

    Args:
        problem: H, sigma and mu, the mean gradient at the start (theta0 - theta* = H^-1 mu).
        optimizers: the update rules; ``lrs[k]`` is optimizer k's learning-rate grid.
        batch_sizes: integers >= 1.
        target_fractions: target losses as fractions (0, 1) of the initial loss.
        further_steps: steps run past each target before the further decrease is read.
        max_steps: a target not reached after this many steps counts as not reached.
        seeds: runs per grid point; run r uses the stream (seed, B, r) (``trajectory_key``).
        seed: the experiment's seed.
        backend: "cpu", "gpu" or "auto" (``surgesim.backend``): where the kernels run; the same
            random streams on each, so results agree to floating-point rounding.
        optimal_arm: also run the per-step optimal-lr arm for sign and sgd (each step's lr the
            exact one-step optimum at its state and B: eq 9, eq 1 for SGD; CPU backend only).
    """

    problem: QuadraticProblem
    optimizers: tuple[Optimizer, ...]
    batch_sizes: tuple[int, ...]
    lrs: tuple[tuple[float, ...], ...]
    target_fractions: tuple[float, ...] = (0.5, 0.25, 0.125)
    further_steps: int = 50
    max_steps: int = 3000
    seeds: int = 8
    seed: int = 0
    backend: str = "cpu"
    optimal_arm: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.problem, QuadraticProblem):
            raise TypeError(f"problem must be a QuadraticProblem, got {type(self.problem).__name__}")
        opts = tuple(self.optimizers)
        if not opts or not all(isinstance(o, Optimizer) for o in opts):
            raise ValueError(f"optimizers must be a non-empty sequence of Optimizer, got {self.optimizers!r}")
        if len(set(opts)) != len(opts):
            raise ValueError(f"optimizers must be distinct, got {[o.label for o in opts]}")
        if len(self.lrs) != len(opts):
            raise ValueError(f"need one learning-rate grid per optimizer, got {len(self.lrs)} for {len(opts)}")
        lrs = []
        for o, grid in zip(opts, self.lrs, strict=True):
            g = np.asarray(grid, dtype=np.float64).ravel()
            if g.size < 1 or not np.all(np.isfinite(g)) or np.any(g <= 0) or np.unique(g).size != g.size:
                raise ValueError(f"learning rates of {o.label} must be distinct, finite and > 0, got {g}")
            lrs.append(tuple(float(x) for x in np.sort(g)))
        fr = np.asarray(self.target_fractions, dtype=np.float64).ravel()
        if fr.size < 1 or np.any(~(fr > 0)) or np.any(~(fr < 1)) or np.unique(fr).size != fr.size:
            raise ValueError(f"target_fractions must be distinct and in (0, 1), got {fr}")
        for name in ("further_steps", "max_steps", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 0:
                raise ValueError(f"{name}={v!r} must be an integer >= 0")
        if isinstance(self.seeds, bool) or int(self.seeds) != self.seeds or self.seeds < 1:
            raise ValueError(f"seeds={self.seeds!r} must be an integer >= 1")
        if self.optimal_arm and self.backend == "gpu" and self.arm_optimizers:
            raise ValueError("the per-step optimal-lr arm runs on the CPU backend only: use backend 'cpu' "
                             "or optimal_arm=False")  # fmt: skip
        object.__setattr__(self, "optimizers", opts)
        object.__setattr__(self, "lrs", tuple(lrs))
        object.__setattr__(self, "batch_sizes", _int_tuple("batch_sizes", self.batch_sizes, 1))
        object.__setattr__(self, "target_fractions", tuple(float(x) for x in np.sort(fr)[::-1]))
        delta0 = initial_delta(self.problem)
        object.__setattr__(self, "_delta0", delta0)
        object.__setattr__(self, "_initial_loss", 0.5 * float(delta0 @ self.problem.mu))

    @property
    def delta0(self) -> np.ndarray:
        return self._delta0.copy()

    @property
    def initial_loss(self) -> float:
        """L(theta0) = 1/2 mu'H^-1 mu."""
        return self._initial_loss

    @property
    def targets(self) -> tuple[float, ...]:
        """The target losses, largest first."""
        return tuple(f * self._initial_loss for f in self.target_fractions)

    @property
    def arm_optimizers(self) -> tuple[Optimizer, ...]:
        """The optimizers of the per-step optimal-lr arm (sign and sgd without momentum, if in ``optimizers``)."""
        arm = tuple(o for o in self.optimizers if o.name == "sign" or (o.name == "sgd" and o.beta1 == 0))
        return arm if self.optimal_arm else ()

    def tasks(self) -> list[dict]:
        """One JSON-serialisable parameter dict per (optimizer, batch size[, arm]), for ``run_task``."""
        common = {
            "seeds": self.seeds, "seed": self.seed, "targets": list(self.targets),
            "further_steps": self.further_steps, "max_steps": self.max_steps, "backend": self.backend,
        }  # fmt: skip

        def task(o: Optimizer, b: int, lrs, rule: str) -> dict:
            return {"optimizer": o.name, "beta1": o.beta1, "beta2": o.beta2, "eps": o.eps, "batch_size": b,
                    "lrs": list(lrs), "lr_rule": rule} | common  # fmt: skip

        grid = [task(o, b, lrs, "constant") for o, lrs in zip(self.optimizers, self.lrs, strict=True)
                for b in self.batch_sizes]  # fmt: skip
        return grid + [task(o, b, [1.0], "optimal") for o in self.arm_optimizers for b in self.batch_sizes]


def default_problem(dims: int = 256, seed: int = 0) -> QuadraticProblem:
    """The default problem: ``surge_problem(dims, seed)`` with |mu_i| / sigma_i log-uniform in
    (0.016, 0.05) * sqrt(256 / dims).

    H = diag(h) + U U' with positive factors along sign(mu), so eq 14's off-diagonal sum is large;
    the scaling of r = mu / sigma keeps B_noise at the start (~ 1 / (d r^2)) at about 20 whatever
    ``dims``, well below the validity bound pi / (2 r_max^2) (~ 600 at dims = 256, growing with
    dims).
    """
    if isinstance(dims, bool) or int(dims) != dims or dims < 2:
        raise ValueError(f"dims={dims!r} must be an integer >= 2")
    scale = math.sqrt(256.0 / dims)
    return surge_problem(int(dims), seed=seed, snr=(0.016 * scale, 0.05 * scale))


DEFAULT_BATCH_SIZES = tuple(int(round(2 ** (k / 2))) for k in range(6, 27))
"""8, 11, 16, ..., 8192 (half octaves): from well below the default problem's B_noise to past its
validity bound, fine enough to place the peak within a factor sqrt(2)."""


def default_experiment(
    problem: QuadraticProblem | None = None,
    optimizers: Sequence[str | Optimizer] = ("sign", "adam", "sgd"),
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    lr_points: int = 16,
    target_fractions: Sequence[float] = (0.5, 0.25, 0.125),
    further_steps: int = 50,
    max_steps: int = 3000,
    seeds: int = 16,
    seed: int = 0,
    backend: str = "cpu",
    optimal_arm: bool = True,
) -> Experiment:
    """The experiment of ``python -m sims.dynamics`` (its measured run time: README, "Multi-step dynamics").

    ``problem`` defaults to ``default_problem(256, seed)``; optimizers are names of
    ``DEFAULT_OPTIMIZERS`` or ``Optimizer`` objects; each gets ``default_lr_grid`` with
    ``lr_points`` learning rates. Targets 1/2, 1/4, 1/8 of the initial loss: over them eq 14's
    B_noise grows about 2x per target on the default problem.
    """
    if problem is None:
        problem = default_problem(256, seed)
    opts = []
    for o in optimizers:
        if isinstance(o, str) and o not in DEFAULT_OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(DEFAULT_OPTIMIZERS)}, got {o!r}")
        opts.append(DEFAULT_OPTIMIZERS[o] if isinstance(o, str) else o)
    Bs = _int_tuple("batch_sizes", batch_sizes, 1)
    lrs = tuple(tuple(default_lr_grid(problem, o, Bs, lr_points)) for o in opts)
    return Experiment(
        problem, tuple(opts), Bs, lrs, tuple(target_fractions), further_steps, max_steps, seeds, seed, backend,
        optimal_arm,
    )  # fmt: skip


def _none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


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
                "further_decrease": _none(res.loss_at[t, j] - res.loss_after[t, j]) if ok else None,
                "loss_at": _none(res.loss_at[t, j]), "loss_after": _none(res.loss_after[t, j]),
            }  # fmt: skip
            for name, values in theory.items():
                row[name] = _none(values[t * m + j]) if ok else None
            row["lr_rule"] = lr_rule
            row["path_s_min"] = _none(res.path_ds[t, j]) if ok else None
            row["path_e_min"] = _none(res.path_bds[t, j]) if ok else None
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


@dataclass(frozen=True)
class TargetResult:
    """Everything measured and predicted for one optimizer at one target loss.

    steps_fit / decrease_fit: ``surgesim.gridfit.GridFit`` of the grid with the fewest-steps and
    the largest-further-decrease criteria. decrease: (n_B, n_lr) seed-mean further decrease (nan
    where some seed did not reach the target), on ``batch_sizes`` x ``lrs``.
    seed_peaks: the peak batch size of each seed alone (nan where it has no optimum).
    predicted_*: the theory at the states where the runs at the step-optimal learning rates
    reached the target (module docstring); predicted_lr holds eq 9 (eq 1 for SGD) per batch size.
    path_noise_batch_size: eq 21's path average along those runs (``PATH_NOTE``).
    path_noise_batch_size_adam: for Adam, the package's predictor of its balance point along the
    run (``surgesim.momentum.adam_noise_batch_size``: the multi-step probe at the states where runs
    at the grid's peak batch size are halfway, in log loss, to the target; at the start state if no
    run has an optimum); nan for the other optimizers. path_noise_batch_size_adam_source: its
    ``AdamPrediction.source`` ("eq2_fit" or "probe_peak", prefixed "start:" for the fallback).
    optimal_arm: ``summarize_arm`` of the per-step optimal-lr arm (None without it).
    """

    optimizer: Optimizer
    target_fraction: float
    target_loss: float
    batch_sizes: np.ndarray
    lrs: np.ndarray
    decrease: np.ndarray
    steps_fit: GridFit
    decrease_fit: GridFit
    seed_peaks: np.ndarray
    predicted_noise_batch_size: float
    predicted_peak_lr: float
    predicted_lr: np.ndarray
    path_noise_batch_size: float = math.nan
    optimal_arm: dict | None = None
    path_noise_batch_size_adam: float = math.nan
    path_noise_batch_size_adam_source: str = ""

    @property
    def optimal_lr(self) -> np.ndarray:
        """(B, lr) pairs: the step-optimal learning rate per batch size (nan: none reached)."""
        return np.array([[o.batch_size, o.optimal_lr] for o in self.steps_fit.optima]).reshape(-1, 2)

    @property
    def peak_batch_size(self) -> float:
        return self.steps_fit.peak_batch_size

    @property
    def predicted_peak_batch_size(self) -> float:
        """The batch size where ``predicted_lr`` peaks (nan if it is nowhere finite)."""
        ok = np.isfinite(self.predicted_lr)
        return float(self.batch_sizes[ok][np.argmax(self.predicted_lr[ok])]) if ok.any() else math.nan

    @property
    def fitted_noise_batch_size(self) -> float:
        """B_noise by eq 22 (nan with fewer than two batch sizes that reached the target)."""
        return self.steps_fit.eq22[0] if self.steps_fit.eq22 else math.nan

    def as_dict(self) -> dict:
        """A JSON-ready entry (non-finite numbers as None)."""
        fs, fd = self.steps_fit, self.decrease_fit
        eq22 = fs.eq22 or (math.nan,) * 3

        def pairs(optima, attr):
            return [[o.batch_size, _none(getattr(o, attr))] for o in optima]

        return {
            "optimizer": self.optimizer.name, "beta1": self.optimizer.beta1, "beta2": self.optimizer.beta2,
            "label": self.optimizer.label, "target_fraction": self.target_fraction, "target_loss": self.target_loss,
            "fitted_noise_batch_size": _none(eq22[0]), "s_min": _none(eq22[1]), "e_min": _none(eq22[2]),
            "predicted_noise_batch_size": _none(self.predicted_noise_batch_size),
            "path_noise_batch_size": _none(self.path_noise_batch_size),
            "path_noise_batch_size_adam": _none(self.path_noise_batch_size_adam),
            "path_noise_batch_size_adam_source": self.path_noise_batch_size_adam_source or None,
            "peak_batch_size": _none(self.peak_batch_size),
            "predicted_peak_batch_size": _none(self.predicted_peak_batch_size),
            "seed_peak_batch_sizes": [_none(x) for x in self.seed_peaks],
            "optimal_lr": pairs(fs.optima, "optimal_lr"),
            "optimal_lr_log_se": pairs(fs.optima, "log_lr_se"),
            "optimal_lr_at_edge": [[o.batch_size, o.at_edge] for o in fs.optima],
            "steps": pairs(fs.optima, "steps"),
            "optimal_lr_decrease": pairs(fd.optima, "optimal_lr"),
            "optimal_lr_decrease_log_se": pairs(fd.optima, "log_lr_se"),
            "peak_batch_size_decrease": _none(fd.peak_batch_size),
            "peak_lr_eq23": _none(fs.peak_lr) if fs.source == "eq22" else None,
            "predicted_peak_lr": _none(self.predicted_peak_lr),
            "predicted_lr": [[float(b), _none(x)] for b, x in zip(self.batch_sizes, self.predicted_lr, strict=True)],
            "curves": {name: _curve_dict(c) for name, c in fs.curves.items()},
            "best_curve": fs.best_model,
            "optimal_lr_arm": self.optimal_arm,
        }  # fmt: skip


def _curve_dict(c: CurveFit) -> dict:
    return {"noise_batch_size": _none(c.noise_batch_size), "peak_lr": _none(c.peak_lr), "rss": c.rss, "aic": c.aic}


def _column(rows: Sequence[Mapping], name: str) -> np.ndarray:
    return np.array([np.nan if r[name] is None else r[name] for r in rows], dtype=np.float64)


def _chosen(rows: Sequence[Mapping], fit: GridFit) -> np.ndarray:
    """Mask of the rows at each batch size's step-optimal learning rate (the grid point nearest
    to it in log lr) that reached the target."""
    lr, b = _column(rows, "lr"), _column(rows, "batch_size")
    chosen = np.zeros(len(rows), dtype=bool)
    for o in fit.optima:
        at_b = b == o.batch_size
        if np.isfinite(o.optimal_lr) and at_b.any():
            grid = np.unique(lr[at_b])
            nearest = grid[np.argmin(np.abs(np.log(grid / o.optimal_lr)))]
            chosen |= at_b & (lr == nearest)
    return chosen & np.isfinite(_column(rows, "steps"))


def path_noise_batch_size(rows: Sequence[Mapping]) -> float:
    """Eq 21's path average over an ensemble of runs: sum of their integrals of B_noise ds over
    the sum of their integrals of ds (``PATH_NOTE``); nan without path integrals."""
    e_min, s_min = _column(rows, "path_e_min"), _column(rows, "path_s_min")
    ok = np.isfinite(e_min) & np.isfinite(s_min)
    total = float(np.sum(s_min[ok]))
    return float(np.sum(e_min[ok])) / total if ok.any() and total > 0 else math.nan


def _predict(opt: Optimizer, problem: QuadraticProblem, rows: Sequence[Mapping], Bs: np.ndarray, chosen: np.ndarray):
    """Theory over the states of the ``chosen`` rows (module docstring): (B_noise, eps_max, eps_opt per B)."""
    H, sigma = problem.hessian, problem.sigma
    hdiag, trace, _ = _diag_trace_lmax(H)
    b = _column(rows, "batch_size")
    predicted = np.full(Bs.size, np.nan)
    if not chosen.any():
        return math.nan, math.nan, predicted
    mean = {k: _column(rows, k)[chosen].mean() for k in ("off_diagonal", "signal", "grad_sq", "grad_hgrad")}
    if opt.name == "sgd":
        # eq 1 (McCandlish et al.): B_noise = tr(H Sigma) / G'HG, eps_max = G'G / G'HG
        bn = float(np.dot(hdiag, sigma**2)) / mean["grad_hgrad"]
        peak = mean["grad_sq"] / mean["grad_hgrad"]
    else:
        # eq 14 and eq 16 with the ensemble's off-diagonal sum and S
        off = mean["off_diagonal"]
        bn = math.pi * trace / (2.0 * off) if off > 0 else math.inf
        peak = mean["signal"] / (2.0 * math.sqrt(off * trace)) if off > 0 else math.inf
    for i, B in enumerate(Bs):
        sel = chosen & (b == B)
        if sel.any():
            if opt.name == "sgd":
                g2, ghg = _column(rows, "grad_sq")[sel].mean(), _column(rows, "grad_hgrad")[sel].mean()
                predicted[i] = g2 / (ghg + float(np.dot(hdiag, sigma**2)) / B)
            else:
                predicted[i] = _column(rows, "eq9_numerator")[sel].mean() / _column(rows, "eq9_denominator")[sel].mean()
    return bn, peak, predicted


def summarize(experiment: Experiment, rows: Sequence[Mapping], adam_predictor: bool = True) -> list[TargetResult]:
    """One ``TargetResult`` per (optimizer, target), in the experiment's order; with
    ``adam_predictor``, each Adam result's ``path_noise_batch_size_adam`` (``adam_prediction``)."""
    out = []
    Bs = np.asarray(experiment.batch_sizes, dtype=np.float64)
    for opt, grid in zip(experiment.optimizers, experiment.lrs, strict=True):
        ident = (opt.name, opt.beta1, opt.beta2, opt.eps)
        mine = [r for r in rows if (r["optimizer"], r["beta1"], r["beta2"], r["eps"]) == ident]
        arm = [r for r in mine if r.get("lr_rule", "constant") == "optimal"]
        mine = [r for r in mine if r.get("lr_rule", "constant") == "constant"]
        lrs = np.asarray(grid)
        for frac, target in zip(experiment.target_fractions, experiment.targets, strict=True):
            sel = [r for r in mine if math.isclose(r["target_loss"], target, rel_tol=1e-12)]
            if not sel:
                raise ValueError(f"no rows for {opt.label} at target {target:.6g}")
            arm_rows = [r for r in arm if math.isclose(r["target_loss"], target, rel_tol=1e-12)]
            lr, b, seed = _column(sel, "lr"), _column(sel, "batch_size"), _column(sel, "seed")
            steps, dec = _column(sel, "steps"), _column(sel, "further_decrease")
            fs = fit_grid(lr, b, steps, seed=seed, steps=steps, maximize=False)
            fd = fit_grid(lr, b, dec, seed=seed, maximize=True)
            peaks = []
            for s in np.unique(seed):
                one = seed == s
                optima = optimal_lr_per_batch(lr[one], b[one], steps[one], maximize=False)
                ok = [o for o in optima if np.isfinite(o.optimal_lr)]
                peaks.append(max(ok, key=lambda o: o.optimal_lr).batch_size if ok else math.nan)
            heat = np.full((Bs.size, lrs.size), np.nan)
            for i, B in enumerate(Bs):
                for k, x in enumerate(lrs):
                    cell = (b == B) & (lr == x)
                    if cell.any():
                        heat[i, k] = dec[cell].mean()  # nan if any seed missed the target
            chosen = _chosen(sel, fs)
            bn, peak, pred = _predict(opt, experiment.problem, sel, Bs, chosen)
            path = path_noise_batch_size([r for r, c in zip(sel, chosen, strict=True) if c])
            res = TargetResult(opt, frac, target, Bs, lrs, heat, fs, fd, np.array(peaks), bn, peak, pred, path,
                               summarize_arm(arm_rows, Bs) if arm_rows else None)  # fmt: skip
            if adam_predictor and opt.name == "adam":
                value, source = adam_prediction(experiment, res)
                res = replace(res, path_noise_batch_size_adam=value, path_noise_batch_size_adam_source=source)
            out.append(res)
    return out


ADAM_PROBE_STATES = 4
"""Runs whose halfway states ``adam_prediction`` probes (8 minibatch sequences each)."""


def adam_prediction(experiment: Experiment, result: TargetResult) -> tuple[float, str]:
    """(path_noise_batch_size_adam, source) of one Adam result: ``surgesim.momentum.adam_noise_batch_size``
    at the states of ``ADAM_PROBE_STATES`` runs at the grid's peak batch size, halfway in log loss
    to the target (``surgesim.momentum.probe_states_of``), over the experiment's batch sizes; at the
    start state (fresh buffers) when the grid has no optimum (source prefixed "start:")."""
    from . import momentum  # the predictor is built on this module's runs: imported here, not at the top

    states, _, _ = momentum.probe_states_of(experiment, result, (), ADAM_PROBE_STATES, experiment.seed)
    prefix = ""
    if not states:
        d0 = experiment.delta0
        zero = np.zeros_like(d0)
        states, prefix = [momentum.RunState(d0, zero, zero, 0, experiment.initial_loss)], "start:"
    pred = momentum.adam_noise_batch_size(experiment.problem, result.optimizer, states, experiment.batch_sizes,
                                          seed=experiment.seed)  # fmt: skip
    return pred.noise_batch_size, prefix + pred.source


def summarize_arm(rows: Sequence[Mapping], Bs: np.ndarray) -> dict:
    """The per-step optimal-lr arm at one target: seed-mean steps S per batch size (nan where a
    seed missed the target), E = B S, eq 22 on them, and the path average of its runs (eq 21)."""
    b, steps = _column(rows, "batch_size"), _column(rows, "steps")
    S = np.array([steps[b == B].mean() if np.any(b == B) else math.nan for B in Bs])
    ok = np.isfinite(S) & (S > 0)
    eq22 = fit_noise_batch_size(S[ok], Bs[ok] * S[ok]) if ok.sum() >= 2 else (math.nan,) * 3
    return {
        "fitted_noise_batch_size": _none(eq22[0]), "s_min": _none(eq22[1]), "e_min": _none(eq22[2]),
        "path_noise_batch_size": _none(path_noise_batch_size(rows)),
        "steps": [[float(B), _none(x)] for B, x in zip(Bs, S, strict=True)],
        "examples": [[float(B), _none(B * x)] for B, x in zip(Bs, S, strict=True)],
    }  # fmt: skip
