"""The momentum study's grid fit: eq 22 and the peak batch size from a cube of steps to a target
(batch size x learning rate x seed), with bootstrap standard errors over seeds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..fit import grid_optimum
from ..theory import fit_noise_batch_size

__all__ = ["steps_cube", "grid_fit_from_cube", "bootstrap_grid_fit"]


def steps_cube(rows: Sequence[Mapping], lrs: np.ndarray, Bs: np.ndarray, n_seeds: int) -> np.ndarray:
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
    mean = cube.mean(axis=2)  # nan if any seed missed
    S = np.array([np.nanmin(row) if np.isfinite(row).any() else np.nan for row in mean])
    ok = np.isfinite(S) & (S > 0)
    bn = fit_noise_batch_size(S[ok], Bs[ok] * S[ok])[0] if ok.sum() >= 2 else math.nan
    lr_opt = np.array([grid_optimum(lrs, row, maximize=False)[0] for row in mean])
    fin = np.isfinite(lr_opt)
    peak = float(Bs[fin][np.argmax(lr_opt[fin])]) if fin.any() else math.nan
    return float(bn), peak


def bootstrap_grid_fit(
    cube: np.ndarray, lrs: np.ndarray, Bs: np.ndarray, resamples: int = 200, seed: int = 0
) -> tuple[float, float, float, float, float]:
    """``grid_fit_from_cube`` and its bootstrap standard errors over seeds (the seeds resampled
    with replacement, ``resamples`` times, from a fixed generator).

    Returns (B_noise, B_noise_se, peak, peak_se, log_peak_se); a resample whose fit is not finite
    and positive is dropped; the peak's spread is also given in log (the peak lives on a log grid).
    """
    bn, peak = grid_fit_from_cube(cube, lrs, Bs)
    n = cube.shape[2]
    gen = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB007]))
    fits = [grid_fit_from_cube(cube[:, :, gen.integers(0, n, n)], lrs, Bs) for _ in range(int(resamples))]
    bns = np.asarray([b for b, _ in fits])
    peaks = np.asarray([p for _, p in fits])
    bns = bns[np.isfinite(bns) & (bns > 0)]
    peaks = peaks[np.isfinite(peaks)]

    def sd(x: np.ndarray) -> float:
        return float(np.std(x, ddof=1)) if x.size >= 2 else math.nan

    return bn, sd(bns), peak, sd(peaks), sd(np.log(peaks)) if peaks.size >= 2 else math.nan
