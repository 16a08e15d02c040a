"""Adam's balance point on a noisy quadratic: predictors of the fitted eq-22 B_noise with momentum.

Li et al. 2024's theory is sign-SGD (Adam with beta1 = beta2 = 0): the one-step optimal learning
rate (Lemma 1, eq 9) peaks at B_noise of eq 14, and the grid's fitted B_noise (eq 22) is eq 14's
path average (eq 21). With momentum the balance point moves; this module holds what was tried
against the grid (``sims.momentum``; the scores are in the README, "Which batch size and learning
rate for Adam on my network"):

- ``stationary_noise_batch_size``: the one-step optimum of an Adam step whose buffers are
  stationary at one state, (2 / pi) k B_noise(eq 14) with k = (1 - beta1) / (1 + beta1); wrong with
  momentum (30-100x low at beta1 = 0.9-0.95; its docstring says why).
- ``multistep_probe``: the optimal learning rate of T real optimizer steps from states of a run,
  per batch size, on fresh minibatches with the buffers evolving (T = 1 from fresh buffers is
  Lemma 1); ``probe_noise_batch_size``: eq 2 fitted to it. ``adam_noise_batch_size`` (T = 4) is
  the package's Adam predictor, ``sims.dynamics``' ``path_noise_batch_size_adam`` (1.1-1.6x the fit).
- ``large_batch_steps``: S_inf, the noise-free steps to a target. Momentum leaves E_min (the
  noise-dominated examples) unchanged and moves S_min to S_inf, so B_noise(beta1) =
  B_noise(0) S_inf(0) / S_inf(beta1) (the NQM argument, Zhang et al. 2019): 0.9-1.06x the fit.
- ``run_states``, ``probe_states_of``: the states (theta - theta*, m, v, step) where runs cross a loss.
- ``study_table``, ``bootstrap_grid_fit``: the study's rows, with bootstrap s.e. over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .fit import fit_surge_curve
from .kernels.dynamics import Optimizer, run_trajectories
from .problem import QuadraticProblem
from .rng import derive_key, stream_key
from .theory import noise_batch_size, optimal_lr

__all__ = [
    "ProbeResult",
    "RunState",
    "AdamPrediction",
    "stationary_noise_batch_size",
    "momentum_noise_fraction",
    "probe_key",
    "probe_lr_grid",
    "multistep_probe",
    "probe_noise_batch_size",
    "probe_decrease_noise_batch_size",
    "run_states",
    "adam_noise_batch_size",
    "PROBE_STEPS",
    "STUDY_OPTIMIZERS",
    "FAMILIES",
    "family_problem",
    "grid_fit_from_cube",
    "bootstrap_grid_fit",
    "probe_states_of",
    "study_table",
    "ratio_summary",
    "large_batch_steps",
    "large_batch_lr_grid",
    "STUDY_COLUMNS",
    "PREDICTOR_COLUMNS",
]

_PROBE_TAG = 0x9B0E  # separates the probe's minibatch streams from the grid's


def momentum_noise_fraction(beta1: float) -> float:
    """k = (1 - beta1) / (1 + beta1): the variance of a stationary EMA of independent noises, in
    units of one noise's variance (sum_j (1 - b)^2 b^(2j))."""
    if not 0.0 <= beta1 < 1.0:
        raise ValueError(f"beta1={beta1!r} must be in [0, 1)")
    return (1.0 - beta1) / (1.0 + beta1)


def stationary_noise_batch_size(mu, sigma, H, beta1: float) -> float:
    """Peak batch size of one Adam step with buffers stationary at one state (model (b)).

    Take m = mu + noise of variance k sigma^2 / B per coordinate (an EMA over many fresh minibatches
    of size B at a fixed state, k = (1 - beta1) / (1 + beta1)) and v = mu^2 + sigma^2 / B (beta2 -> 1),
    u = m / sqrt(v). Then E u_i = mu_i / s_i, Var u_i = k sigma_i^2 / (B s_i^2), s_i^2 = mu_i^2 + sigma_i^2 / B,
    and the one-step optimum E[mu'u] / E[u'Hu] is, for B << 1 / r_i^2 (s_i ~ sigma_i / sqrt(B)),

        eps(B) = sqrt(B) S / (k tr H + B off),   S = sum mu_i^2 / sigma_i, off of eq 14,

    which peaks at B = k tr(H) / off = (2 / pi) k B_noise(eq 14). With beta1 = 0 it is (2 / pi) eq 14
    (RMS-normalised SGD); with beta1 = 0.9, k = 0.053: 30x below sign-SGD's eq 14.

    Why it fails with momentum: the EMA is a linear filter of unit gain at zero frequency. The
    displacement summed over many steps carries the minibatch noise with the same variance as
    without momentum, because consecutive momentum steps reuse the same minibatches; one step
    sees only the per-step variance k, which the steps that follow do not average away.
    """
    return 2.0 / math.pi * momentum_noise_fraction(beta1) * float(noise_batch_size(mu, sigma, H))


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


def probe_lr_grid(problem: QuadraticProblem, deltas, batch_sizes: Sequence[float], n: int = 25) -> np.ndarray:
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
    states,
    batch_sizes: Sequence[int],
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
    from .theory import fit_noise_batch_size

    dmax = np.array([_max_log(result.lrs, row) for row in result.decrease])
    ok = np.isfinite(dmax) & (dmax > 0)
    if ok.sum() < 2:
        return math.nan
    S = 1.0 / dmax[ok]
    bn = fit_noise_batch_size(S, result.batch_sizes[ok] * S)[0]
    return float(bn) if np.isfinite(bn) and bn > 0 else math.nan


@dataclass(frozen=True)
class RunState:
    """A state of a run: theta - theta*, the optimizer's buffers, the steps taken, the loss."""

    delta: np.ndarray
    m: np.ndarray
    v: np.ndarray
    step: int
    loss: float


def run_states(
    problem: QuadraticProblem,
    optimizer: Optimizer,
    lr: float,
    batch_size: int,
    losses: Sequence[float],
    keys: Sequence[int],
    delta0: np.ndarray,
    max_steps: int = 100_000,
) -> list[list[RunState | None]]:
    """The states where each run (stream ``keys[r]``, the grid's ``trajectory_key``) first reaches
    each loss in ``losses``: [run][loss] -> RunState, None where not reached within ``max_steps``.

    Two passes of the same runs: one finds the step counts, the second stops there and returns the
    state with its buffers (bit-identical trajectories: same streams).
    """
    keys = np.asarray(keys, dtype=np.uint64)
    H, sigma = problem.hessian, problem.sigma
    first = run_trajectories(H, sigma, delta0, keys, lr, float(batch_size), optimizer, targets=np.asarray(losses),
                             max_steps=max_steps)  # fmt: skip
    out: list[list[RunState | None]] = []
    for r, key in enumerate(keys):
        row: list[RunState | None] = []
        for j in range(len(losses)):
            s = int(first.steps[r, j])
            if s < 0:
                row.append(None)
                continue
            res = run_trajectories(H, sigma, delta0, key[None], lr, float(batch_size), optimizer, max_steps=s,
                                   min_steps=s)  # fmt: skip
            d = res.delta[0]
            row.append(RunState(d, res.m[0], res.v[0], s, 0.5 * float(d @ H.matvec(d))))
        out.append(row)
    return out


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
    states,
    batch_sizes: Sequence[int],
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


# --- the momentum study: the grid's fit and peak with bootstrap standard errors over seeds -------

STUDY_OPTIMIZERS = (
    Optimizer("sign"), Optimizer("sgd"), Optimizer("sgd", 0.5), Optimizer("sgd", 0.9),
    *(Optimizer("adam", b1, b2, 1e-8) for b2 in (0.9, 0.999) for b1 in (0.0, 0.5, 0.8, 0.9, 0.95)),
)  # fmt: skip
"""The study's optimizers: sign-SGD, SGD with momentum 0, 0.5, 0.9, Adam with beta1 in
{0, 0.5, 0.8, 0.9, 0.95} x beta2 in {0.9, 0.999}."""

FAMILIES = ("lowrank", "powerlaw", "diagonal")


def family_problem(family: str, seed: int = 0) -> QuadraticProblem:
    """The study's problem families: ``lowrank``, the default problem of ``sims.dynamics`` (d = 256,
    H = diag + rank 4 positive along sign(mu)); ``powerlaw``, a dense H with eigenvalues k^-1
    in a random basis and mu = H (theta - theta*) for a random theta (d = 64, |mu| / sigma = 0.05
    on average: B_noise at the start about 40, like the low-rank family's 22); ``diagonal``, the
    low-rank family's diag(h) alone (d = 256: the Noisy Quadratic Model of Zhang et al. 2019; no
    surge for sign-SGD, eq 14 infinite)."""
    from .dynamics import default_problem
    from .problem import diagonal_problem, power_law_problem

    if family == "lowrank":
        return default_problem(256, seed)
    if family == "powerlaw":
        return power_law_problem(64, seed, snr=0.05)
    if family == "diagonal":
        return diagonal_problem(256, seed, snr=(0.016, 0.05))
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def _steps_cube(rows, lrs: np.ndarray, Bs: np.ndarray, n_seeds: int) -> np.ndarray:
    """(n_B, n_lr, n_seeds) steps to the target (nan: not reached) from one optimizer's rows at one target."""
    cube = np.full((Bs.size, lrs.size, n_seeds), np.nan)
    bi = {float(b): i for i, b in enumerate(Bs)}
    li = {float(x): k for k, x in enumerate(lrs)}
    for r in rows:
        if r.get("lr_rule", "constant") != "constant" or r["steps"] is None:
            continue
        cube[bi[float(r["batch_size"])], li[float(r["lr"])], int(r["seed"])] = r["steps"]
    return cube


def grid_fit_from_cube(cube: np.ndarray, lrs: np.ndarray, Bs: np.ndarray) -> tuple[float, float]:
    """(fitted eq-22 B_noise, peak batch size) of one grid, as ``surgesim.dynamics.summarize``
    computes them: per B the fewest seed-mean steps S over lr (nan where a seed missed the target)
    and the step-optimal lr (``grid_optimum``, parabola in log lr); eq 22 on (S, B S); the peak is
    the B with the largest step-optimal lr."""
    from .fit import grid_optimum
    from .theory import fit_noise_batch_size

    mean = cube.mean(axis=2)  # nan if any seed missed
    S = np.array([np.nanmin(row) if np.isfinite(row).any() else np.nan for row in mean])
    ok = np.isfinite(S) & (S > 0)
    bn = fit_noise_batch_size(S[ok], Bs[ok] * S[ok])[0] if ok.sum() >= 2 else math.nan
    lr_opt = np.array([grid_optimum(lrs, row, maximize=False)[0] for row in mean])
    fin = np.isfinite(lr_opt)
    peak = float(Bs[fin][np.argmax(lr_opt[fin])]) if fin.any() else math.nan
    return float(bn), peak


def bootstrap_grid_fit(cube: np.ndarray, lrs: np.ndarray, Bs: np.ndarray, resamples: int = 200, seed: int = 0):
    """``grid_fit_from_cube`` and its bootstrap standard errors over seeds (the seeds resampled
    with replacement, ``resamples`` times, from a fixed generator).

    Returns (B_noise, B_noise_se, peak, peak_se, log_peak_se); a resample whose fit is not finite
    and positive is dropped; the peak's spread is also given in log (the peak lives on a log grid).
    """
    bn, peak = grid_fit_from_cube(cube, lrs, Bs)
    n = cube.shape[2]
    gen = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB007]))
    bns, peaks = [], []
    for _ in range(int(resamples)):
        b, p = grid_fit_from_cube(cube[:, :, gen.integers(0, n, n)], lrs, Bs)
        bns.append(b)
        peaks.append(p)
    bns, peaks = np.asarray(bns), np.asarray(peaks)
    bns = bns[np.isfinite(bns) & (bns > 0)]
    peaks = peaks[np.isfinite(peaks)]

    def sd(x):
        return float(np.std(x, ddof=1)) if x.size >= 2 else math.nan

    return bn, sd(bns), peak, sd(peaks), sd(np.log(peaks)) if peaks.size >= 2 else math.nan


STUDY_COLUMNS = (
    "family", "optimizer", "label", "beta1", "beta2", "target_fraction", "target_loss",
    "fitted_noise_batch_size", "fitted_noise_batch_size_se", "peak_batch_size", "peak_batch_size_se",
    "peak_batch_size_log_se", "eq14_noise_batch_size", "path_noise_batch_size", "stationary_noise_batch_size",
    "probe_source_batch_size", "probe_source_lr",
)  # fmt: skip
"""Columns of ``study_table``'s rows (momentum.csv; docs/outputs.md)."""

PREDICTOR_COLUMNS = (
    "family", "optimizer", "label", "beta1", "beta2", "target_fraction", "predictor", "steps", "value",
    "fitted_noise_batch_size", "ratio_to_fit", "ratio_to_fit_se", "peak_batch_size", "ratio_to_peak",
)  # fmt: skip
"""Columns of ``study_table``'s predictor rows (predictors.csv; docs/outputs.md)."""


def _finite(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def probe_states_of(experiment, result, rows, n_states: int, seed: int = 0) -> tuple[list[RunState], int, float]:
    """The states a result's runs pass, for the probe: ``n_states`` runs (seeds 0 ..) at the grid's
    peak batch size and the grid learning rate nearest its step-optimal one, stopped where their
    loss first reaches sqrt(L0 L_target) (halfway in log loss from the start to the target).
    Returns (states, B, lr); no state when the grid has no finite optimum."""
    from .kernels.dynamics import trajectory_key

    optima = [o for o in result.steps_fit.optima if np.isfinite(o.optimal_lr)]
    if not optima:
        return [], 0, math.nan
    best = max(optima, key=lambda o: o.optimal_lr)
    lrs = np.asarray(result.lrs)
    lr = float(lrs[np.argmin(np.abs(np.log(lrs / best.optimal_lr)))])
    B = int(best.batch_size)
    loss = math.sqrt(experiment.initial_loss * result.target_loss)
    keys = [trajectory_key(seed, B, k) for k in range(n_states)]
    got = run_states(experiment.problem, result.optimizer, lr, B, [loss], keys, experiment.delta0,
                     max_steps=experiment.max_steps)  # fmt: skip
    return [s[0] for s in got if s[0] is not None], B, lr


def study_table(
    experiment, rows, results, family: str, bootstrap: int = 200, probe_steps: Sequence[int] = (1, 4, 16),
    probe_states: int = 4, probe_trials: int = 8, progress=None,
) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """The momentum study's rows for one family: (``STUDY_COLUMNS`` rows, ``PREDICTOR_COLUMNS`` rows).

    Per (optimizer, target) of ``results`` (``surgesim.dynamics.summarize``): the fitted eq-22
    B_noise and the peak batch size with bootstrap standard errors over seeds
    (``bootstrap_grid_fit``); eq 14 at the target states and eq 21's path average (from
    ``results``); for Adam the stationary-buffer model (``stationary_noise_batch_size``'s formula
    on eq 14's ensemble value); for sign and Adam the multi-step probe at each T of ``probe_steps``
    from ``probe_states_of``'s states (fresh buffers): its eq-2 B_noise (``probe``), its peak
    batch size (``probe_peak``) and its decrease-based B_noise (``probe_decrease``); for SGD and
    Adam with momentum the large-batch argument (``large_batch``: the fit without momentum times
    S_inf(without) / S_inf(with), ``large_batch_steps``), and for Adam (2 / pi) sign-SGD's fitted
    E_min / S_inf (``sign_emin``).
    """
    Bs = np.asarray(experiment.batch_sizes, dtype=np.float64)
    table, preds = [], []
    todo = [r for r in results]
    cache: dict = {}

    def sinf(o: Optimizer) -> np.ndarray:
        if o not in cache:
            grid = large_batch_lr_grid(experiment.problem, o)
            cache[o] = large_batch_steps(experiment.problem, o, experiment.targets, grid,
                                         max_steps=experiment.max_steps)
        return cache[o]

    def tj(r) -> int:
        return experiment.target_fractions.index(r.target_fraction)

    if progress is not None:
        progress(0, len(todo))
    for i, r in enumerate(todo):
        o = r.optimizer
        ident = (o.name, o.beta1, o.beta2, o.eps)
        mine = [x for x in rows if (x["optimizer"], x["beta1"], x["beta2"], x["eps"]) == ident
                and math.isclose(x["target_loss"], r.target_loss, rel_tol=1e-12)]  # fmt: skip
        cube = _steps_cube(mine, np.asarray(r.lrs), Bs, experiment.seeds)
        bn, bn_se, peak, peak_se, log_peak_se = bootstrap_grid_fit(cube, np.asarray(r.lrs), Bs, bootstrap,
                                                                   experiment.seed)  # fmt: skip
        eq14 = r.predicted_noise_batch_size
        stat = 2.0 / math.pi * momentum_noise_fraction(o.beta1) * eq14 if o.name == "adam" else math.nan
        base = {"family": family, "optimizer": o.name, "label": o.label, "beta1": o.beta1, "beta2": o.beta2,
                "target_fraction": r.target_fraction}  # fmt: skip
        states, src_b, src_lr = ([], 0, math.nan)
        if o.name in ("sign", "adam") and probe_steps:
            states, src_b, src_lr = probe_states_of(experiment, r, mine, probe_states, experiment.seed)
        table.append(base | {
            "target_loss": r.target_loss, "fitted_noise_batch_size": _finite(bn),
            "fitted_noise_batch_size_se": _finite(bn_se), "peak_batch_size": _finite(peak),
            "peak_batch_size_se": _finite(peak_se), "peak_batch_size_log_se": _finite(log_peak_se),
            "eq14_noise_batch_size": _finite(eq14), "path_noise_batch_size": _finite(r.path_noise_batch_size),
            "stationary_noise_batch_size": _finite(stat), "probe_source_batch_size": src_b or None,
            "probe_source_lr": _finite(src_lr),
        })  # fmt: skip

        def add(name: str, steps, value: float, fit=(bn, bn_se, peak, base)) -> None:
            preds.append(_predictor_row(name, steps, value, *fit))

        add("eq14", None, eq14)
        add("path_eq21", None, r.path_noise_batch_size)
        if o.name == "adam":
            add("stationary", 1, stat)
        # (d) E_min is not changed by momentum, S_min falls to the large-batch steps S_inf:
        # B(o) = B(anchor) S_inf(anchor) / S_inf(o), anchor = the same optimizer without momentum
        # (the NQM argument); for Adam also (2 / pi) E_min(sign) / S_inf(o), with sign's fitted E_min
        # (RMS-normalised steps at small B: E_min is 2 / pi of sign's, see README)
        if o.name in ("adam", "sgd"):
            s_inf = sinf(o)[tj(r)]
            anchor = next((x for x in results if x.optimizer.name == o.name and x.optimizer.beta1 == 0
                           and x.optimizer.beta2 == o.beta2 and x.target_fraction == r.target_fraction),
                          None)  # fmt: skip
            if anchor is not None and o.beta1 > 0:
                add("large_batch", None, anchor.fitted_noise_batch_size * sinf(anchor.optimizer)[tj(r)] / s_inf)
            sign = next((x for x in results if x.optimizer.name == "sign" and x.target_fraction == r.target_fraction),
                        None)  # fmt: skip
            if o.name == "adam" and sign is not None and sign.steps_fit.eq22:
                add("sign_emin", None, 2.0 / math.pi * sign.steps_fit.eq22[2] / s_inf)
        for T in probe_steps if states else ():
            res = multistep_probe(experiment.problem, o, states, Bs, int(T), None, probe_trials, experiment.seed,
                                  bootstrap=2)  # fmt: skip
            add("probe", int(T), probe_noise_batch_size(res))
            add("probe_peak", int(T), res.peak_batch_size)
            add("probe_decrease", int(T), probe_decrease_noise_batch_size(res))
        if progress is not None:
            progress(i + 1, len(todo))
    return table, preds


def _predictor_row(name: str, steps, value: float, bn: float, bn_se: float, peak: float, base: dict) -> dict:
    """One ``PREDICTOR_COLUMNS`` row: ``value`` scored against the fit ``bn`` (s.e. ``bn_se``) and the peak."""
    ok = np.isfinite(value) and value > 0 and np.isfinite(bn) and bn > 0
    ratio = value / bn if ok else math.nan
    return base | {
        "predictor": name, "steps": steps, "value": _finite(value), "fitted_noise_batch_size": _finite(bn),
        "ratio_to_fit": _finite(ratio), "ratio_to_fit_se": _finite(ratio * bn_se / bn) if ok else None,
        "peak_batch_size": _finite(peak),
        "ratio_to_peak": _finite(value / peak) if np.isfinite(value) and peak > 0 else None,
    }  # fmt: skip


def ratio_summary(preds: Sequence[dict]) -> list[dict]:
    """Per (predictor, T, optimizer name, beta1): the geometric mean of ratio_to_fit over families,
    beta2 values and targets, with the standard error of that mean (in log, as a factor), and the
    number of ratios (non-finite ones are counted apart as ``missing``)."""
    groups: dict[tuple, list] = {}
    for p in preds:
        key = (p["predictor"], p["steps"], p["optimizer"], p["beta1"])
        groups.setdefault(key, []).append(p["ratio_to_fit"])
    out = []
    for (name, steps, opt, b1), vals in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        v = np.array([x for x in vals if x is not None and x > 0], dtype=np.float64)
        logs = np.log(v)
        out.append({
            "predictor": name, "steps": steps, "optimizer": opt, "beta1": b1, "n": int(v.size),
            "missing": len(vals) - int(v.size), "ratio": _finite(np.exp(logs.mean())) if v.size else None,
            "ratio_se_factor": _finite(np.exp(logs.std(ddof=1) / math.sqrt(v.size))) if v.size >= 2 else None,
        })  # fmt: skip
    return out


def large_batch_lr_grid(problem: QuadraticProblem, optimizer: Optimizer, n: int = 60) -> np.ndarray:
    """Learning rates for ``large_batch_steps``: for SGD a log grid of 4 decades up to its stability
    limit 2 (1 + b1) / ((1 - b1) lambda_max); otherwise 4 decades around eq 9 at B = 10^6."""
    from .dynamics import _diag_trace_lmax

    if optimizer.name == "sgd":
        hi = 2.0 * (1.0 + optimizer.beta1) / ((1.0 - optimizer.beta1) * _diag_trace_lmax(problem.hessian)[2])
        return np.geomspace(hi / 1e4, hi, int(n))
    e9 = float(optimal_lr(1e6, problem.mu, problem.sigma, problem.hessian))
    return np.geomspace(e9 / 100.0, e9 * 100.0, int(n))


def large_batch_steps(
    problem: QuadraticProblem, optimizer: Optimizer, target_losses: Sequence[float], lrs: Sequence[float],
    batch_size: float = 1e14, max_steps: int = 20_000,
) -> np.ndarray:  # fmt: skip
    """S_inf: the fewest steps to each target loss at batch size ``batch_size`` (default 1e14: the
    gradient noise is sigma * 1e-7, negligible) over the learning rates ``lrs``, from the problem's
    start (theta0 - theta* = H^-1 mu, fresh buffers); nan where no lr reaches a target.

    The large-batch side of eq 20: S(B) -> S_min as B -> inf, so with E_min unchanged the ratio
    S_inf(a) / S_inf(b) of two optimizers is the ratio of their critical batch sizes E_min / S_min
    (the NQM argument of Zhang et al. 2019, https://arxiv.org/abs/1907.04164, for momentum).
    """
    from .dynamics import initial_delta

    lrs = np.asarray(lrs, dtype=np.float64)
    keys = np.zeros(lrs.size, dtype=np.uint64)
    tg = np.asarray(target_losses, dtype=np.float64)
    res = run_trajectories(problem.hessian, problem.sigma, initial_delta(problem), keys, lrs, float(batch_size),
                           optimizer, targets=tg, max_steps=max_steps)  # fmt: skip
    steps = np.where(res.steps >= 0, res.steps, np.iinfo(np.int64).max).min(axis=0).astype(np.float64)
    steps[steps == np.iinfo(np.int64).max] = np.nan
    return steps
