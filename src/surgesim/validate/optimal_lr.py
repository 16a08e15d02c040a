"""The optimal learning rate per batch size at one target loss, measured with statistics: the
seed-mean score's optimum (a parabola in log lr), its s.e. and 68% interval from one bootstrap over
seeds, the peak batch size with its interval, the surge test and eq 22's fit (``eq22``), all as
``surgesim.validate``'s docstring states them; ``validate_target`` gathers them per target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .eq22 import eq22_with_se, min_steps

__all__ = [
    "QUANTILES",
    "VALIDATE_COLUMNS",
    "Table",
    "tables_from_rows",
    "bootstrap_indices",
    "log_optima",
    "refined_peak",
    "surge_test",
    "TargetValidation",
    "validate_target",
    "validate_rows",
    "finite_or_none",
]

QUANTILES = (0.16, 0.84)
"""The 68% interval's quantiles (a normal's +-1 s.e.)."""

VALIDATE_COLUMNS = (
    "target_loss", "batch_size", "lr_opt", "lr_opt_se", "lr_opt_lo", "lr_opt_hi", "steps", "examples", "seeds",
)  # fmt: skip


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


def log_optima(lrs: np.ndarray, mean: np.ndarray) -> np.ndarray:
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
    return float(log_optima(table.lrs, s.mean(axis=1)[:, None])[0])


def _steps(table: Table) -> float:
    return float(min_steps(table.steps.mean(axis=1)[:, None])[0])


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
    """(T, one-sided p-value) of the surge test (``surgesim.validate``'s docstring).

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
    """Everything ``validate_target`` estimates at one target loss (``surgesim.validate``'s docstring)."""

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
        f = finite_or_none
        return [
            {"target_loss": self.target_loss, "batch_size": float(b), "lr_opt": f(lr), "lr_opt_se": f(lr * se),
             "lr_opt_lo": f(lo), "lr_opt_hi": f(hi), "steps": f(s), "examples": f(b * s), "seeds": self.seeds}
            for b, lr, se, lo, hi, s in zip(self.batch_sizes, self.lr_opt, self.log_lr_se, self.lr_opt_lo,
                                            self.lr_opt_hi, self.steps, strict=True)
        ]  # fmt: skip


def finite_or_none(x: float | None) -> float | None:
    """A value for the CSV and JSON outputs: ``float(x)``, or None where x is None or not finite."""
    return float(x) if x is not None and np.isfinite(x) else None


def validate_target(
    tables: Sequence[Table], target_loss: float, *, replicates: int = 400, seed: int = 0, top: int | None = None
) -> TargetValidation:
    """The statistics of one target (``surgesim.validate``'s docstring) from its per-batch-size tables.

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
    raw = np.stack([log_optima(t.lrs, t.score[:, idx].mean(axis=2)) for t in tables], axis=1)
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
    S_boot = np.stack([min_steps(t.steps[:, idx].mean(axis=2)) for t in tables], axis=1)  # (R, m)
    bn, bn_se, s_min, s_min_se = eq22_with_se(B, S, S_boot, c)
    return TargetValidation(
        target_loss=float(target_loss), batch_sizes=B, lr_opt=np.exp(log_lr), log_lr_se=se, lr_opt_lo=lo,
        lr_opt_hi=hi, steps=S, seeds=n, peak_batch_size=float(np.exp(peak)) if np.isfinite(peak) else math.nan,
        peak_batch_size_ci=ci, peak_interior=interior, surge_statistic=t_stat, surge_p_value=p, top=top,
        noise_batch_size=bn, noise_batch_size_se=bn_se, s_min=s_min, s_min_se=s_min_se,
        replicates=int(replicates), log_lr_boot=boot,
    )  # fmt: skip


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
