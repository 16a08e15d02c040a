"""Eq 22 of the validation: the noise batch size B_noise and the fewest steps S_min fitted to the
steps S(B) to one target, with standard errors from the bootstrap over seeds (``surgesim.validate``).

S(B) is the fewest seed-mean steps over the learning rates run at B (``min_steps``); the fit is
``surgesim.theory.fit_noise_batch_size``'s least-squares line 1/S = -B_noise (1/E) + 1/S_min with
E = B S (eq 20 rearranged, Appendix G), vectorised over bootstrap replicates (``fit_eq22``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["min_steps", "fit_eq22", "eq22_with_se"]


def min_steps(mean_steps: np.ndarray) -> np.ndarray:
    """Per column (replicate) of seed-mean steps (learning rates x R): the fewest finite > 0."""
    with np.errstate(invalid="ignore"):
        good = np.where(np.isfinite(mean_steps) & (mean_steps > 0), mean_steps, np.inf)
    out = good.min(axis=0)
    return np.where(np.isfinite(out), out, np.nan)


def fit_eq22(B: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq 22 (``surgesim.theory.fit_noise_batch_size``'s least-squares line of 1/S on 1/E) for each
    row of S (R, m), vectorised: (B_noise, S_min) per row; rows with fewer than 2 finite S > 0
    give NaN."""
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


def eq22_with_se(
    B: np.ndarray, S: np.ndarray, S_boot: np.ndarray, inflation: float
) -> tuple[float, float, float, float]:
    """(B_noise, its s.e., S_min, its s.e.): eq 22 fitted to S(B) (m,) and refitted in each
    bootstrap replicate of it (``S_boot``, (R, m)); each replicate's deviation from the point fit is
    multiplied by ``inflation`` (sqrt(n / (n - 1)) for n seeds) and the s.e. is the standard
    deviation of the finite ones (NaN with fewer than 2)."""
    point = fit_eq22(B, S[None, :])
    bn, s_min = float(point[0][0]), float(point[1][0])
    fits = np.stack(fit_eq22(B, S_boot), axis=1)
    dev = inflation * (fits - np.array([bn, s_min]))
    ok = np.all(np.isfinite(dev), axis=1)
    bn_se, s_min_se = np.std(dev[ok], axis=0, ddof=1) if ok.sum() >= 2 else (math.nan, math.nan)
    return bn, float(bn_se), s_min, float(s_min_se)
