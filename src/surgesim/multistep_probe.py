"""The multi-step probe on a noisy quadratic: the optimal learning rate of T real optimizer steps
from states of a run, per batch size (``multistep_probe``), its eq-2 B_noise, and the package's
Adam predictor built on it (``adam_noise_batch_size``, T = ``PROBE_STEPS``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .fit import fit_surge_curve
from .kernels.dynamics import Optimizer, run_trajectories
from .problem import QuadraticProblem
from .rng import derive_key, stream_key
from .run_states import RunState
from .theory import fit_noise_batch_size, optimal_lr

__all__ = [
    "ProbeResult",
    "AdamPrediction",
    "PROBE_STEPS",
    "probe_key",
    "probe_lr_grid",
    "multistep_probe",
    "probe_noise_batch_size",
    "probe_decrease_noise_batch_size",
    "adam_noise_batch_size",
    "probe_prediction",
]

_PROBE_TAG = 0x9B0E  # separates the probe's minibatch streams from the grid's


def probe_key(seed: int, batch_size: int, trial: int) -> np.uint64:
    """Stream key of the probe's trial ``trial`` at batch size B (distinct from the grid's streams)."""
    key_b = np.uint64(stream_key(np.uint64(seed), np.uint64(_PROBE_TAG), np.uint64(batch_size)))
    return np.uint64(derive_key(key_b, np.uint64(trial)))


@dataclass(frozen=True)
class ProbeResult:
    """``multistep_probe`` at one state: per batch size, the optimal learning rate of T steps.

    lr_opt, lr_log_se: (n_B,) the argmax over lr of the mean loss decrease after T steps and the
    standard error of its log (bootstrap over trials); at_edge: the argmax is at an end of
    ``lrs`` (a bound only); decrease: (n_B, n_lr) the mean loss decrease on ``lrs`` (-inf where a
    trial diverged).
    """

    batch_sizes: np.ndarray
    lrs: np.ndarray
    steps: int
    trials: int
    lr_opt: np.ndarray
    lr_log_se: np.ndarray
    at_edge: np.ndarray
    decrease: np.ndarray

    @property
    def peak_batch_size(self) -> float:
        """The batch size with the largest optimal learning rate (nan if none is finite)."""
        ok = np.isfinite(self.lr_opt)
        return float(self.batch_sizes[ok][np.argmax(self.lr_opt[ok])]) if ok.any() else math.nan


def probe_lr_grid(
    problem: QuadraticProblem, deltas: np.ndarray, batch_sizes: Sequence[float] | np.ndarray, n: int = 25
) -> np.ndarray:
    """A log grid of ``n`` learning rates around eq 9 at the states ``deltas`` ((d,) or (n, d)):
    [min eq9 / 16, max eq9 * 64] over states and batch sizes (T-step optima of momentum lie above
    one sign step's)."""
    b = np.asarray(batch_sizes, dtype=np.float64)
    lo, hi = np.inf, 0.0
    for delta in np.atleast_2d(np.asarray(deltas, dtype=np.float64)):
        eq9 = optimal_lr(b, problem.hessian.matvec(delta), problem.sigma, problem.hessian)
        lo, hi = min(lo, float(np.min(eq9))), max(hi, float(np.max(eq9)))
    return np.geomspace(lo / 16.0, hi * 64.0, int(n))


def _argmax_log(lrs: np.ndarray, dec: np.ndarray) -> tuple[float, bool]:
    """Argmax of dec over lrs, refined by a parabola in log lr through the best point and its
    neighbours; (lr, at_edge)."""
    if not np.any(np.isfinite(dec)):
        return math.nan, True
    k = int(np.argmax(np.where(np.isfinite(dec), dec, -np.inf)))
    if k == 0 or k == lrs.size - 1:
        return float(lrs[k]), True
    x = np.log(lrs[k - 1 : k + 2])
    y = dec[k - 1 : k + 2]
    if not np.all(np.isfinite(y)):
        return float(lrs[k]), False
    # vertex of the parabola through three points (x equally spaced on a log grid)
    h = x[1] - x[0]
    curv = y[0] - 2 * y[1] + y[2]
    shift = 0.5 * h * (y[0] - y[2]) / curv if curv < 0 else 0.0
    return float(np.exp(x[1] + np.clip(shift, -h, h))), False


def multistep_probe(
    problem: QuadraticProblem,
    optimizer: Optimizer,
    states: RunState | Sequence[RunState],
    batch_sizes: Sequence[int] | np.ndarray,
    steps: int,
    lrs: Sequence[float] | None = None,
    trials: int = 64,
    seed: int = 0,
    bootstrap: int = 200,
    fresh: bool = True,
) -> ProbeResult:
    """The optimal learning rate of T real optimizer steps from a state (or an ensemble of states), per B.

    From each state (``RunState``: theta - theta*, buffers m, v, steps taken) run T = ``steps``
    steps at learning rate lr on fresh minibatches of size B (buffers evolving), ``trials`` times
    per state, and take

        lr*(B) = argmax_lr  mean_{states, trials} [L(theta) - L(theta_T(lr))],

    found by a search in log lr on common random numbers: the same minibatches for every lr (trial
    r of state k at B uses the stream ``probe_key(seed + k, B, r)``), the mean decrease on the grid
    ``lrs`` (default ``probe_lr_grid``), refined by a parabola in log lr around the best grid
    point. ``fresh=True`` (default) starts the optimizer afresh at the state (m = v = 0, t = 0;
    Adam's first step is then sign(g), so T = 1 is Lemma 1's one step, eq 9); ``fresh=False``
    continues from the state's buffers, whose v was built at the run's own batch size, not at B.
    A learning rate at which some trial diverges scores -inf. The standard error of log lr* is the
    spread over ``bootstrap`` resamples of the states (each with all its trials), or of the trials
    with one state.
    """
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps={steps!r} must be an integer >= 1 (T optimizer steps)")
    if isinstance(trials, bool) or int(trials) != trials or trials < 2:
        raise ValueError(f"trials={trials!r} must be an integer >= 2")
    states = [states] if isinstance(states, RunState) else list(states)
    if not states:
        raise ValueError("need at least one state to probe")
    Bs = np.asarray(sorted(int(b) for b in batch_sizes), dtype=np.int64)
    if Bs.size < 1 or Bs[0] < 1:
        raise ValueError(f"batch_sizes must be integers >= 1, got {list(batch_sizes)}")
    deltas = np.array([st.delta for st in states])
    grid = probe_lr_grid(problem, deltas, Bs) if lrs is None else np.sort(np.asarray(lrs, dtype=np.float64))
    H, sigma = problem.hessian, problem.sigma
    T, n, nl, ns = int(steps), int(trials), grid.size, len(states)
    gen = np.random.default_rng(np.random.SeedSequence([int(seed), _PROBE_TAG]))
    if ns > 1:  # cluster bootstrap: whole states
        boot = [np.concatenate([np.arange(k * n, (k + 1) * n) for k in gen.integers(0, ns, ns)])
                for _ in range(int(bootstrap))]  # fmt: skip
    else:
        boot = [gen.integers(0, n, n) for _ in range(int(bootstrap))]
    lr_opt, lr_se, edge = np.full(Bs.size, np.nan), np.full(Bs.size, np.nan), np.zeros(Bs.size, dtype=bool)
    dec_all = np.full((Bs.size, nl), np.nan)
    for i, B in enumerate(Bs):
        per = np.empty((nl, ns * n))
        for k, st in enumerate(states):
            keys = np.array([probe_key(seed + k, int(B), r) for r in range(n)], dtype=np.uint64)
            res = run_trajectories(
                H, sigma, st.delta, np.tile(keys, nl), np.repeat(grid, n), float(B), optimizer,
                max_steps=T, min_steps=T, trace_steps=T + 1, m0=None if fresh else st.m,
                v0=None if fresh else st.v, start_step=0 if fresh else st.step,
            )  # fmt: skip
            final = res.trace[:, T].reshape(nl, n)  # nan where the run diverged before step T
            per[:, k * n : (k + 1) * n] = np.where(np.isfinite(final), res.trace[:, 0].reshape(nl, n) - final, -np.inf)
        dec = per.mean(axis=1)
        dec_all[i] = dec
        lr_opt[i], edge[i] = _argmax_log(grid, dec)
        if np.isfinite(lr_opt[i]) and len(boot) > 1:
            draws = np.array([_argmax_log(grid, per[:, b].mean(axis=1))[0] for b in boot])
            draws = draws[np.isfinite(draws)]
            lr_se[i] = float(np.std(np.log(draws), ddof=1)) if draws.size > 1 else math.nan
    return ProbeResult(Bs.astype(np.float64), grid, T, n * ns, lr_opt, lr_se, edge, dec_all)


def probe_noise_batch_size(result: ProbeResult) -> float:
    """B_noise of the probe: eq 2 (the surge curve) fitted to lr*(B) in log lr, over the batch sizes
    whose optimum is inside the lr grid; nan with fewer than 3 such points."""
    ok = np.isfinite(result.lr_opt) & ~result.at_edge
    if ok.sum() < 3:
        return math.nan
    return float(fit_surge_curve(result.batch_sizes[ok], result.lr_opt[ok]).noise_batch_size)


def _max_log(lrs: np.ndarray, dec: np.ndarray) -> float:
    """The largest value of dec over lrs, refined by the parabola in log lr of ``_argmax_log``."""
    if not np.any(np.isfinite(dec)):
        return math.nan
    k = int(np.argmax(np.where(np.isfinite(dec), dec, -np.inf)))
    if k == 0 or k == lrs.size - 1 or not np.all(np.isfinite(dec[k - 1 : k + 2])):
        return float(dec[k])
    y = dec[k - 1 : k + 2]
    curv = y[0] - 2 * y[1] + y[2]
    if curv >= 0:
        return float(y[1])
    t = np.clip(0.5 * (y[0] - y[2]) / curv, -1.0, 1.0)  # vertex in units of the grid step
    return float(y[1] - 0.25 * (y[0] - y[2]) * t)


def probe_decrease_noise_batch_size(result: ProbeResult) -> float:
    """B_noise from the probe's optimal loss decrease per batch size, the eq 18 / eq 20 form.

    With dL*(B) the largest mean decrease of T steps at batch size B, the steps and examples to
    make a given progress scale as S ~ 1 / dL*(B), E ~ B / dL*(B); eq 22 (``fit_noise_batch_size``)
    on these (S, E) pairs gives B_noise, exactly as the grid's fit does with measured steps:
    dL*(B) = dL_max / (1 + B_noise / B) (eq 18) makes S = S_min (1 + B_noise / B) (eq 20).
    nan with fewer than 2 positive decreases or a fit without a positive slope.
    """
    dmax = np.array([_max_log(result.lrs, row) for row in result.decrease])
    ok = np.isfinite(dmax) & (dmax > 0)
    if ok.sum() < 2:
        return math.nan
    S = 1.0 / dmax[ok]
    bn = fit_noise_batch_size(S, result.batch_sizes[ok] * S)[0]
    return float(bn) if np.isfinite(bn) and bn > 0 else math.nan



PROBE_STEPS = 4
"""T of the package's Adam predictor (``adam_noise_batch_size``), chosen on the momentum study
(``sims.momentum``): the probe's B_noise grows with T, and T = 4 is closest to the fitted eq-22
B_noise across beta1 (README, "Which batch size and learning rate for Adam on my network")."""


@dataclass(frozen=True)
class AdamPrediction:
    """``adam_noise_batch_size``: the predicted balance point and what it was computed from.

    noise_batch_size: the prediction; source: "eq2_fit" (eq 2 fitted to the probe's lr*(B)) or
    "probe_peak" (the probe's peak batch size, where the fit fails); probe: the ``ProbeResult``.
    """

    noise_batch_size: float
    source: str
    steps: int
    probe: ProbeResult


def adam_noise_batch_size(
    problem: QuadraticProblem,
    optimizer: Optimizer,
    states: RunState | Sequence[RunState],
    batch_sizes: Sequence[int] | np.ndarray,
    steps: int = PROBE_STEPS,
    trials: int = 8,
    seed: int = 0,
) -> AdamPrediction:
    """Adam's balance point predicted from the states of a run: the multi-step probe's B_noise.

    Over the states (``RunState``s, e.g. ``run_states`` halfway to the target), ``multistep_probe``
    with fresh buffers finds lr*_T(B) = argmax_lr E[L(theta) - L(theta_T)], T = ``steps`` real Adam
    steps (default ``PROBE_STEPS`` = 4) on fresh minibatches of size B, the mean over the states
    and ``trials`` minibatch sequences each; the prediction is eq 2 fitted to lr*_T(B):

        lr*_T(B) ~ eps_max / (1/2 (sqrt(B_adam / B) + sqrt(B / B_adam)))  ->  B_adam,

    or, where that fit fails (fewer than 3 optima inside the lr grid, or B_adam outside the batch
    sizes probed), the batch size with the largest lr*_T. T = 1 is sign-SGD's Lemma 1 (Adam's first
    step from fresh buffers is sign(g)), whose peak is eq 14 on average over the states.
    """
    res = multistep_probe(problem, optimizer, states, batch_sizes, int(steps), None, trials, seed, bootstrap=2)
    value, source = probe_prediction(res)
    return AdamPrediction(value, source, int(steps), res)


def probe_prediction(result: ProbeResult) -> tuple[float, str]:
    """``adam_noise_batch_size``'s rule on a probe result: eq 2's fit to lr*_T(B) where it lies
    inside the batch sizes probed ("eq2_fit"), else the probe's peak batch size ("probe_peak")."""
    bn = probe_noise_batch_size(result)
    if np.isfinite(bn) and result.batch_sizes.min() <= bn <= result.batch_sizes.max():
        return bn, "eq2_fit"
    return result.peak_batch_size, "probe_peak"


