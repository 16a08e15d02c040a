"""The surge measured with statistics: the paper's protocol (Section 3.2-3.3, Li et al. 2024) at a
resolution that can decide, and the predictors scored against it (``python -m sims.validate``).

The data are runs, one row per (learning rate, batch size B, seed, target loss) with the further
loss decrease after the target (the score, larger is better) and the steps S to the target. Per
target loss and B, ``Table`` holds the scores as a matrix (learning rates x seeds). Everything is
estimated from the seed-mean score and its uncertainty from one bootstrap over seeds:

- **Replicates.** ``replicates`` resamples of the seed indices, drawn once per target and used
  jointly at every B (the seed fixes a run's initial weights at every B, so runs at different B
  are correlated through it; resampling the same seeds everywhere keeps that correlation). Each
  estimate below is recomputed in every replicate. With n seeds the bootstrap's spread is that of
  a sample of n with variance divided by n instead of n - 1: every replicate's deviation from the
  point estimate is multiplied by ``sqrt(n / (n - 1))`` (``inflation``) before it is used.
- **lr_opt(B)** is ``surgesim.fit.grid_optimum`` of the seed-mean score (a parabola in log lr
  through the best grid point and its neighbours); its s.e. is the standard deviation of
  log lr_opt over the replicates (``lr_opt_se`` = lr_opt x that, in learning-rate units) and its
  68% interval the 16% and 84% quantiles of the replicates in log lr.
- **The peak batch size** is the vertex of the parabola in (log B, log lr_opt) through the largest
  lr_opt and its two neighbours (at an end of the grid: that end, ``peak_interior`` False); its 68%
  interval the 16%/84% quantiles of the peak found, the same way, inside each replicate (so the
  interval includes the uncertainty of which B is the largest).
- **The surge test.** H0: no fall, lr_opt at the largest batch sizes is at least the lr_opt at any
  smaller B: D_B = log lr_opt(B) - mean of log lr_opt over the ``top`` largest batch sizes is
  <= 0 for every B outside that group. Statistic: T = max_B D_B, the fall in log lr from the peak
  (chosen as the maximum) to the top group. Its null law at the least favourable point of H0
  (D_B = 0 for every B) is that of max_B (D*_B - D_B) over the replicates (the peak chosen inside
  each replicate, so the selection of the maximum is in the null law); the one-sided p-value is
  (1 + #{replicates with that >= T}) / (1 + replicates). Small p: the optimal lr falls after its
  peak (the surge). Measured on synthetic curves with a plateau (tests/test_validate.py): with 4
  and 8 seeds it rejects less often than its level (conservative); a studentised max was liberal
  with 4 seeds (10% at 5%) and is not used. Under H0 with a strictly rising curve it is more
  conservative still.
- **Eq 22.** S(B) = the fewest seed-mean steps over learning rates, E = B S;
  ``surgesim.theory.fit_noise_batch_size`` gives B_noise and S_min, recomputed in each replicate
  for their s.e.

Predictors (B_simple, B_crit, eq 14, the probe's peaks, ...) are scored by ``score_predictor``:
the log ratio to the fitted B_noise with its s.e. by the delta method (independent errors).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = [
    "QUANTILES",
    "Table",
    "TargetValidation",
    "PredictorScore",
    "tables_from_rows",
    "bootstrap_indices",
    "validate_target",
    "refined_peak",
    "surge_test",
    "refine_lrs",
    "score_predictor",
    "scaled_curve",
    "VALIDATE_COLUMNS",
    "PREDICTOR_COLUMNS",
    "PREDICTOR_NAMES",
    "refinement",
    "validate_rows",
    "quadratic_tasks",
    "QuadraticStates",
    "quadratic_states",
    "QUADRATIC_PREDICTORS",
]

QUANTILES = (0.16, 0.84)
"""The 68% interval's quantiles (a normal's +-1 s.e.)."""

VALIDATE_COLUMNS = (
    "target_loss", "batch_size", "lr_opt", "lr_opt_se", "lr_opt_lo", "lr_opt_hi", "steps", "examples", "seeds",
)  # fmt: skip
PREDICTOR_COLUMNS = ("target_loss", "predictor", "value", "se", "log_ratio_to_fit", "log_ratio_se")
PREDICTOR_NAMES = ("b_simple", "b_crit", "eq14", "adam_predicted", "probe_sign", "probe_adam")


@dataclass(frozen=True)
class Table:
    """One batch size at one target: ``score[i, k]`` and ``steps[i, k]`` for learning rate ``lrs[i]``
    and seed ``seeds[k]`` (NaN: not reached, diverged, or not run)."""

    batch_size: float
    lrs: np.ndarray
    score: np.ndarray
    steps: np.ndarray
    seeds: tuple[int, ...]


def tables_from_rows(rows: Sequence[Mapping], target_loss: float) -> list[Table]:
    """Per batch size (ascending), the runs of one target as a ``Table``; seeds shared by all B."""
    sel = [r for r in rows if r["target_loss"] == target_loss]
    if not sel:
        raise ValueError(f"no run rows for target loss {target_loss:g}")
    seeds = tuple(sorted({int(r["seed"]) for r in sel}))
    col = {s: k for k, s in enumerate(seeds)}
    out = []
    for B in sorted({float(r["batch_size"]) for r in sel}):
        at = [r for r in sel if float(r["batch_size"]) == B]
        lrs = np.array(sorted({float(r["lr"]) for r in at}))
        row = {x: i for i, x in enumerate(lrs)}
        score = np.full((lrs.size, len(seeds)), np.nan)
        steps = np.full_like(score, np.nan)
        for r in at:
            i, k = row[float(r["lr"])], col[int(r["seed"])]
            score[i, k] = np.nan if r["further_decrease"] is None else float(r["further_decrease"])
            steps[i, k] = np.nan if r["steps"] is None else float(r["steps"])
        out.append(Table(B, lrs, score, steps, seeds))
    return out


def bootstrap_indices(n_seeds: int, replicates: int, seed: int = 0) -> np.ndarray:
    """(replicates, n_seeds) seed indices drawn with replacement from a fixed generator."""
    if n_seeds < 2:
        raise ValueError(f"the bootstrap needs at least 2 seeds, got {n_seeds}")
    if replicates < 20:
        raise ValueError(f"need at least 20 bootstrap replicates, got {replicates}")
    return np.random.default_rng(seed).integers(0, n_seeds, (replicates, n_seeds))


def _log_optima(lrs: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """log of ``surgesim.fit.grid_optimum(lrs, mean[:, r], maximize=True)`` for every column r of
    ``mean`` (learning rates x R), vectorised: the parabola in log lr through the best grid point
    and its neighbours, clamped to them; the grid point at an edge or where the parabola is not
    concave or a neighbour is NaN; NaN scores count as worst; NaN where none is finite."""
    order = np.argsort(lrs)
    x = np.log(np.asarray(lrs, dtype=float)[order])
    y = np.asarray(mean, dtype=float)[order]
    finite = np.isfinite(y)
    k = np.argmax(np.where(finite, y, -np.inf), axis=0)
    cols = np.arange(y.shape[1])
    out = x[k].astype(float)
    out[~finite.any(axis=0)] = np.nan
    inner = (k > 0) & (k < x.size - 1)
    if x.size >= 3 and inner.any():
        kk = np.clip(k, 1, x.size - 2)
        x0, x1, x2 = x[kk - 1], x[kk], x[kk + 1]
        y0, y1, y2 = y[kk - 1, cols], y[kk, cols], y[kk + 1, cols]
        with np.errstate(invalid="ignore", divide="ignore"):
            den = (x0 - x1) * (x0 - x2) * (x1 - x2)
            a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / den
            b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / den
            v = np.clip(-b / (2 * a), x0, x2)
        use = inner & np.isfinite(y0) & np.isfinite(y2) & (a < 0)
        out = np.where(use, v, out)
    return out


def _log_optimum(table: Table, cols: np.ndarray | None = None) -> float:
    s = table.score if cols is None else table.score[:, cols]
    return float(_log_optima(table.lrs, s.mean(axis=1)[:, None])[0])


def _min_steps(mean_steps: np.ndarray) -> np.ndarray:
    """Per column (replicate) of seed-mean steps (learning rates x R): the fewest finite > 0."""
    with np.errstate(invalid="ignore"):
        good = np.where(np.isfinite(mean_steps) & (mean_steps > 0), mean_steps, np.inf)
    out = good.min(axis=0)
    return np.where(np.isfinite(out), out, np.nan)


def _steps(table: Table) -> float:
    return float(_min_steps(table.steps.mean(axis=1)[:, None])[0])


def refined_peak(log_b: np.ndarray, log_lr: np.ndarray) -> tuple[float, bool]:
    """(log of the peak batch size, interior): the vertex of the parabola through the largest
    log lr and its two neighbours among the finite points (clamped to them; the largest point
    itself where the parabola is not concave or at an end of the grid)."""
    v, interior = _refined_peaks(np.asarray(log_b, float), np.atleast_2d(np.asarray(log_lr, float)))
    return float(v[0]), bool(interior[0])


def _refined_peaks(x: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``refined_peak`` for every row of Y (R, m), vectorised (NaN entries dropped per row)."""
    out = np.full(Y.shape[0], np.nan)
    interior = np.zeros(Y.shape[0], dtype=bool)
    finite = np.isfinite(Y)
    full = finite.all(axis=1)
    for r in np.flatnonzero(~full & finite.any(axis=1)):  # rare: rows with missing points
        v1, i1 = _refined_peaks(x[finite[r]], Y[r, finite[r]][None, :])
        out[r], interior[r] = v1[0], i1[0]
    if not full.any():
        return out, interior
    Yf = Y[full]
    k = np.argmax(Yf, axis=1)
    rows = np.arange(Yf.shape[0])
    v = x[k].astype(float)
    inner = (k > 0) & (k < x.size - 1)
    if x.size >= 3:
        kk = np.clip(k, 1, x.size - 2)
        x0, x1, x2 = x[kk - 1], x[kk], x[kk + 1]
        y0, y1, y2 = Yf[rows, kk - 1], Yf[rows, kk], Yf[rows, kk + 1]
        den = (x0 - x1) * (x0 - x2) * (x1 - x2)
        a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / den
        b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / den
        with np.errstate(invalid="ignore", divide="ignore"):
            vert = np.clip(-b / (2 * a), x0, x2)
        v = np.where(inner & (a < 0), vert, v)
    out[full], interior[full] = v, inner
    return out, interior


def surge_test(log_lr: np.ndarray, boot: np.ndarray, top: int) -> tuple[float, float]:
    """(T, one-sided p-value) of the surge test (module docstring).

    Args:
        log_lr: (m,) log lr_opt per batch size, ascending B.
        boot: (R, m) the same in each bootstrap replicate (deviations already inflated).
        top: how many of the largest batch sizes form the top group.
    """
    m = log_lr.size
    if not 1 <= top < m:
        raise ValueError(f"top must be in [1, {m - 1}] for {m} batch sizes, got {top}")
    D = log_lr[: m - top] - np.mean(log_lr[m - top :])
    dev = boot[:, : m - top] - np.mean(boot[:, m - top :], axis=1, keepdims=True) - D
    ok = np.isfinite(D) & np.all(np.isfinite(dev), axis=0)
    if not ok.any():
        return math.nan, math.nan
    t = float(np.max(D[ok]))
    null = np.max(dev[:, ok], axis=1)
    return t, float((1.0 + np.count_nonzero(null >= t)) / (1.0 + null.size))


@dataclass(frozen=True)
class TargetValidation:
    """Everything ``validate_target`` estimates at one target loss (module docstring)."""

    target_loss: float
    batch_sizes: np.ndarray
    lr_opt: np.ndarray
    log_lr_se: np.ndarray
    lr_opt_lo: np.ndarray
    lr_opt_hi: np.ndarray
    steps: np.ndarray
    seeds: int
    peak_batch_size: float
    peak_batch_size_ci: tuple[float, float]
    peak_interior: bool
    surge_statistic: float
    surge_p_value: float
    top: int
    noise_batch_size: float
    noise_batch_size_se: float
    s_min: float
    s_min_se: float
    replicates: int
    log_lr_boot: np.ndarray = field(repr=False)  # (R, m) inflated replicates of log lr_opt

    @property
    def lr_opt_se(self) -> np.ndarray:
        """s.e. of lr_opt in learning-rate units (lr_opt x s.e. of log lr_opt)."""
        return self.lr_opt * self.log_lr_se

    @property
    def examples(self) -> np.ndarray:
        return self.batch_sizes * self.steps

    def rows(self) -> list[dict]:
        """``VALIDATE_COLUMNS`` rows, one per batch size."""
        return [
            {"target_loss": self.target_loss, "batch_size": float(b), "lr_opt": _f(lr), "lr_opt_se": _f(lr * se),
             "lr_opt_lo": _f(lo), "lr_opt_hi": _f(hi), "steps": _f(s), "examples": _f(b * s), "seeds": self.seeds}
            for b, lr, se, lo, hi, s in zip(self.batch_sizes, self.lr_opt, self.log_lr_se, self.lr_opt_lo,
                                            self.lr_opt_hi, self.steps, strict=True)
        ]  # fmt: skip


def _f(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _fit22(B: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq 22 (``surgesim.theory.fit_noise_batch_size``'s least-squares line of 1/S on 1/E) for each
    row of S (R, m), vectorised; rows with fewer than 2 finite S > 0 give NaN."""
    S = np.atleast_2d(S)
    ok = np.isfinite(S) & (S > 0)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(ok, 1.0 / (B * S), 0.0)
        y = np.where(ok, 1.0 / S, 0.0)
        mx, my = x.sum(axis=1) / n, y.sum(axis=1) / n
        sxx = np.where(ok, (x - mx[:, None]) ** 2, 0.0).sum(axis=1)
        sxy = np.where(ok, (x - mx[:, None]) * (y - my[:, None]), 0.0).sum(axis=1)
        slope = sxy / sxx
        bn = -slope
        s_min = 1.0 / (my - slope * mx)
    bad = (n < 2) | ~(sxx > 0)
    return np.where(bad, np.nan, bn), np.where(bad, np.nan, s_min)


def validate_target(
    tables: Sequence[Table], target_loss: float, *, replicates: int = 400, seed: int = 0, top: int | None = None
) -> TargetValidation:
    """The statistics of one target (module docstring) from its per-batch-size tables.

    ``top``: the size of the largest-batch group of the surge test (default: 2 with 6 or more
    batch sizes, else 1).
    """
    tables = sorted(tables, key=lambda t: t.batch_size)
    m = len(tables)
    if m < 3:
        raise ValueError(f"need at least 3 batch sizes, got {m}")
    n = len(tables[0].seeds)
    if any(t.seeds != tables[0].seeds for t in tables):
        raise ValueError("every batch size must have the same seeds")
    top = (2 if m >= 6 else 1) if top is None else int(top)
    idx = bootstrap_indices(n, replicates, seed)
    c = math.sqrt(n / (n - 1))
    B = np.array([t.batch_size for t in tables])
    logb = np.log(B)
    log_lr = np.array([_log_optimum(t) for t in tables])
    S = np.array([_steps(t) for t in tables])
    raw = np.stack([_log_optima(t.lrs, t.score[:, idx].mean(axis=2)) for t in tables], axis=1)
    boot = log_lr + c * (raw - log_lr)  # NaN where a replicate or the point has no optimum
    with np.errstate(invalid="ignore"):
        se = np.array([np.nanstd(boot[:, j], ddof=1) if np.isfinite(boot[:, j]).sum() >= 2 else math.nan
                       for j in range(m)])  # fmt: skip
    lo = np.array([np.exp(np.nanquantile(boot[:, j], QUANTILES[0])) if np.isfinite(boot[:, j]).any() else math.nan
                   for j in range(m)])  # fmt: skip
    hi = np.array([np.exp(np.nanquantile(boot[:, j], QUANTILES[1])) if np.isfinite(boot[:, j]).any() else math.nan
                   for j in range(m)])  # fmt: skip
    peak, interior = refined_peak(logb, log_lr)
    peaks = _refined_peaks(logb, boot)[0]
    peaks = peaks[np.isfinite(peaks)]
    ci = tuple(float(np.exp(q)) for q in np.quantile(peaks, QUANTILES)) if peaks.size else (math.nan, math.nan)
    t_stat, p = surge_test(log_lr, boot, top)
    point = _fit22(B, S[None, :])
    bn, s_min = float(point[0][0]), float(point[1][0])
    S_boot = np.stack([_min_steps(t.steps[:, idx].mean(axis=2)) for t in tables], axis=1)  # (R, m)
    fits = np.stack(_fit22(B, S_boot), axis=1)
    dev = c * (fits - np.array([bn, s_min]))
    ok = np.all(np.isfinite(dev), axis=1)
    bn_se, s_min_se = np.std(dev[ok], axis=0, ddof=1) if ok.sum() >= 2 else (math.nan, math.nan)
    return TargetValidation(
        target_loss=float(target_loss), batch_sizes=B, lr_opt=np.exp(log_lr), log_lr_se=se, lr_opt_lo=lo,
        lr_opt_hi=hi, steps=S, seeds=n, peak_batch_size=float(np.exp(peak)) if np.isfinite(peak) else math.nan,
        peak_batch_size_ci=ci, peak_interior=interior, surge_statistic=t_stat, surge_p_value=p, top=top,
        noise_batch_size=bn, noise_batch_size_se=float(bn_se), s_min=s_min, s_min_se=float(s_min_se),
        replicates=int(replicates), log_lr_boot=boot,
    )  # fmt: skip


def refine_lrs(lrs: Sequence[float], mean_score: Sequence[float], points: int = 1) -> list[float]:
    """Learning rates to add around the best of one batch size's grid (larger score is better):
    ``points`` geometrically spaced points between the best and each neighbour, or beyond it by
    one grid step at an end of the grid. NaN scores count as worst; none finite: nothing."""
    x = np.log(np.asarray(lrs, dtype=float))
    order = np.argsort(x)
    x, y = x[order], np.asarray(mean_score, dtype=float)[order]
    if not np.isfinite(y).any() or x.size < 2:
        return []
    k = int(np.nanargmax(np.where(np.isfinite(y), y, -np.inf)))
    step = float(np.median(np.diff(x)))
    lo = x[k - 1] if k > 0 else x[k] - step
    hi = x[k + 1] if k < x.size - 1 else x[k] + step
    f = np.arange(1, points + 1) / (points + 1)
    new = np.concatenate([x[k] + (lo - x[k]) * f, x[k] + (hi - x[k]) * f])
    if k == 0:
        new = np.append(new, lo)
    if k == x.size - 1:
        new = np.append(new, hi)
    return [float(v) for v in np.exp(new)]


@dataclass(frozen=True)
class PredictorScore:
    """One predictor at one target: its value (a batch size) with s.e., and
    log(value / fitted B_noise) with its s.e. (delta method, independent errors)."""

    name: str
    value: float
    se: float
    log_ratio_to_fit: float
    log_ratio_se: float

    def as_dict(self) -> dict:
        return {k: _f(getattr(self, k)) for k in ("value", "se", "log_ratio_to_fit", "log_ratio_se")}


def score_predictor(name: str, value: float, se: float, fit: float, fit_se: float) -> PredictorScore:
    """Var(log(v / f)) = (se_v / v)^2 + (se_f / f)^2; NaN where either is not finite and > 0."""
    if value is None or fit is None or not (np.isfinite(value) and value > 0 and np.isfinite(fit) and fit > 0):
        return PredictorScore(name, _nan(value), _nan(se), math.nan, math.nan)
    ratio = math.log(value / fit)
    rse = math.sqrt((_nan(se) / value) ** 2 + (_nan(fit_se) / fit) ** 2)
    return PredictorScore(name, float(value), _nan(se), ratio, rse)


def _nan(x) -> float:
    return math.nan if x is None else float(x)


def scaled_curve(
    curve_b: Sequence[float], curve_lr: Sequence[float], grid_b: Sequence[float], grid_lr: Sequence[float]
) -> tuple[np.ndarray, float]:
    """A predicted lr*(B) curve scaled to the measured optimum at one batch size: the grid batch
    size nearest (in log B) to the middle of the range both cover, where the curve is interpolated
    linearly in (log B, log lr). Returns (the curve x factor at ``curve_b``, the reference B)."""
    cb, cl = np.asarray(curve_b, float), np.asarray(curve_lr, float)
    gb, gl = np.asarray(grid_b, float), np.asarray(grid_lr, float)
    ok_c = np.isfinite(cl) & (cl > 0)
    ok_g = np.isfinite(gl) & (gl > 0) & (gb >= cb[ok_c].min(initial=np.inf)) & (gb <= cb[ok_c].max(initial=-np.inf))
    if ok_c.sum() < 2 or not ok_g.any():
        return np.full(cb.shape, np.nan), math.nan
    order = np.argsort(cb[ok_c])
    xs, ys = np.log(cb[ok_c][order]), np.log(cl[ok_c][order])
    cand = gb[ok_g]
    mid = 0.5 * (math.log(cand.min()) + math.log(cand.max()))
    j = int(np.argmin(np.abs(np.log(cand) - mid)))
    b_ref = float(cand[j])
    factor = float(gl[ok_g][j]) / float(np.exp(np.interp(math.log(b_ref), xs, ys)))
    return cl * factor, b_ref


PredictorFn = Callable[..., tuple[float, float]]
"""A predictor: called with keyword arguments of its context, returns (value, s.e.)."""


# --- the protocol's bookkeeping --------------------------------------------------------------


def refinement(rows: Sequence[Mapping], targets: Sequence[float], points: int = 1) -> dict[float, list[float]]:
    """The refinement stage: per batch size, the learning rates to add around each target's best
    seed-mean score (``refine_lrs``; one run serves every target), those already run left out."""
    out: dict[float, list[float]] = {}
    for t in targets:
        sel = [r for r in rows if r["target_loss"] == t]
        if not sel:
            continue
        for table in tables_from_rows(sel, t):
            mean = table.score.mean(axis=1)
            new = out.setdefault(table.batch_size, [])
            for lr in refine_lrs(table.lrs, mean, points):
                if not np.any(np.isclose(lr, table.lrs, rtol=1e-9)) and not np.any(np.isclose(lr, new, rtol=1e-9)):
                    new.append(lr)
    return {b: sorted(v) for b, v in out.items() if v}


def validate_rows(
    rows: Sequence[Mapping], targets: Sequence[float], *, replicates: int = 400, seed: int = 0, top: int | None = None
) -> list[TargetValidation]:
    """``validate_target`` for every target (in the order given) that has runs at 3 or more batch sizes."""
    out = []
    for t in targets:
        sel = [r for r in rows if r["target_loss"] == t]
        if len({r["batch_size"] for r in sel}) >= 3:
            out.append(validate_target(tables_from_rows(sel, t), t, replicates=replicates, seed=seed, top=top))
    return out


# --- the quadratic problem -------------------------------------------------------------------


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

    problem: object
    delta: np.ndarray
    batch_grid: np.ndarray  # batch sizes over which probe-type peaks are searched
    optimizer: object = None  # the reference runs' optimizer (``dynamics.Optimizer``)


def quadratic_states(
    problem, optimizer, batch_size: int, lr: float, targets: Sequence[float], seeds: int, *,
    max_steps: int, seed: int = 0, batch_grid: Sequence[float] = (1, 1e5),
) -> list[QuadraticStates | None]:  # fmt: skip
    """The reference runs (``seeds`` runs at (batch_size, lr), the grid's own random streams) and
    their states at each target (None where fewer than 2 runs reached it)."""
    from .dynamics import initial_delta
    from .kernels.dynamics import StepRule, run_trajectories, trajectory_key

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
    from .theory import sign_mean

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


def _adam_probe(s: QuadraticStates, peak: bool, replicates: int = 200) -> tuple[float, float]:
    """The multi-step Adam probe (``momentum.adam_noise_batch_size``: T = 4 real Adam steps from
    fresh buffers at the reference states, 12 batch sizes over the grid) and its s.e. by a
    parametric bootstrap of lr*_T(B) within its own s.e. (log-normal, independent per B)."""
    from .momentum import RunState, adam_noise_batch_size, probe_prediction

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
