"""Fits of Section 3.2 to grid-search results: the optimal learning rate per batch size, the
surge curve (eq 2), the SGD-style curves (eq 24 form), and B_noise from steps and examples (eq 22).

All curve fits are least squares in log learning rate (multiplicative errors), so a point at
1e-4 weighs as much as one at 1e-2, as the paper's log-axis figures suggest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

from .theory import estimate_peak_lr, fit_noise_batch_size

__all__ = [
    "CurveFit",
    "surge_curve",
    "sgd_curve",
    "fit_surge_curve",
    "fit_sgd_curve",
    "compare_curves",
    "grid_optimum",
    "fit_noise_batch_size",
    "estimate_peak_lr",
]


def surge_curve(B, noise_batch_size: float, peak_lr: float) -> np.ndarray:
    """Eq 2: eps_max / (1/2 (sqrt(B_noise / B) + sqrt(B / B_noise)))."""
    b = np.asarray(B, dtype=np.float64)
    return peak_lr / (0.5 * (np.sqrt(noise_batch_size / b) + np.sqrt(b / noise_batch_size)))


def sgd_curve(B, noise_batch_size: float, peak_lr: float, alpha: float = 1.0) -> np.ndarray:
    """Eq 24's form (eq 1 when alpha = 1): eps_max / (1 + B_noise / B)^alpha."""
    b = np.asarray(B, dtype=np.float64)
    return peak_lr / (1.0 + noise_batch_size / b) ** alpha


@dataclass(frozen=True)
class CurveFit:
    """A fitted curve: its parameters, residual sum of squares in log lr, and AIC."""

    model: str
    noise_batch_size: float
    peak_lr: float
    rss: float
    n: int
    aic: float
    residuals: np.ndarray

    def __call__(self, B) -> np.ndarray:
        if self.model == "surge":
            return surge_curve(B, self.noise_batch_size, self.peak_lr)
        alpha = float(self.model.split("_")[-1])
        return sgd_curve(B, self.noise_batch_size, self.peak_lr, alpha)


def _check_points(B, lr) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(B, dtype=np.float64).ravel()
    y = np.asarray(lr, dtype=np.float64).ravel()
    if b.shape != y.shape:
        raise ValueError(f"B and lr must have the same length, got {b.size} and {y.size}")
    keep = np.isfinite(b) & np.isfinite(y) & (y > 0) & (b > 0)
    b, y = b[keep], y[keep]
    if b.size < 3:
        raise ValueError(f"need at least 3 finite (B, lr > 0) points to fit a curve, got {b.size}")
    return b, y


def _fit(model: str, curve, b: np.ndarray, y: np.ndarray) -> CurveFit:
    logb, logy = np.log(b), np.log(y)

    def resid(p):
        return np.log(curve(b, np.exp(p[0]), np.exp(p[1]))) - logy

    # Start from several B_noise over the observed range: the log-space loss is not convex.
    best = None
    for log_bn in np.linspace(logb.min() - 1.0, logb.max() + 1.0, 9):
        x0 = np.array([log_bn, 0.0])
        x0[1] = -np.mean(resid(x0))  # exact optimum of log eps_max for this B_noise
        res = optimize.least_squares(resid, x0, method="lm")
        if best is None or res.cost < best.cost:
            best = res
    if best is None:  # the loop above runs 9 times
        raise RuntimeError("no least-squares fit was run")
    r = resid(best.x)
    rss = float(r @ r)
    n = b.size
    # AIC for Gaussian errors with unknown variance, k = 2 curve parameters (+ the variance).
    aic = n * np.log(max(rss, 1e-300) / n) + 2 * 3
    return CurveFit(model, float(np.exp(best.x[0])), float(np.exp(best.x[1])), rss, n, float(aic), r)


def fit_surge_curve(B, lr) -> CurveFit:
    """Least-squares fit of eq 2 to (B, optimal lr) points, in log lr."""
    b, y = _check_points(B, lr)
    return _fit("surge", surge_curve, b, y)


def fit_sgd_curve(B, lr, alpha: float = 1.0) -> CurveFit:
    """Least-squares fit of eps_max / (1 + B_noise/B)^alpha (alpha 1: SGD; 0.5: McCandlish's Adam)."""
    b, y = _check_points(B, lr)
    return _fit(f"sgd_alpha_{alpha:g}", lambda bb, bn, pk: sgd_curve(bb, bn, pk, alpha), b, y)


def compare_curves(B, lr) -> dict[str, CurveFit]:
    """The surge fit and the SGD fits with alpha = 0.5 and 1, keyed by model name."""
    fits = [fit_surge_curve(B, lr), fit_sgd_curve(B, lr, 0.5), fit_sgd_curve(B, lr, 1.0)]
    return {f.model: f for f in fits}


def grid_optimum(lr, score, maximize: bool = True) -> tuple[float, float]:
    """The learning rate that optimises ``score`` over one batch size's grid of learning rates.

    Interpolated in log lr by a parabola through the best grid point and its two neighbours
    (clamped to the grid; the grid point itself at an edge or where the parabola is not concave).

    Returns:
        (lr_opt, half_width): half_width is half the local grid spacing in log lr, as a
        resolution scale (multiplicative: the optimum is within lr_opt * exp(+-half_width) of the
        grid's own resolution).
    """
    lr = np.asarray(lr, dtype=np.float64).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if lr.shape != s.shape or lr.size == 0:
        raise ValueError(f"lr and score must be non-empty and of equal length, got {lr.size}, {s.size}")
    if np.any(lr <= 0):
        raise ValueError("learning rates must be > 0")
    order = np.argsort(lr)
    x, y = np.log(lr[order]), s[order] * (1.0 if maximize else -1.0)
    finite = np.isfinite(y)
    if not finite.any():
        return float("nan"), float("nan")
    y = np.where(finite, y, -np.inf)
    k = int(np.argmax(y))
    spacing = np.diff(x)
    half = 0.5 * float(np.median(spacing)) if spacing.size else float("nan")
    if 0 < k < x.size - 1 and np.all(np.isfinite(y[k - 1 : k + 2])):
        c = np.polyfit(x[k - 1 : k + 2], y[k - 1 : k + 2], 2)
        if c[0] < 0:
            xv = float(np.clip(-c[1] / (2 * c[0]), x[k - 1], x[k + 1]))
            return float(np.exp(xv)), half
    return float(np.exp(x[k])), half
