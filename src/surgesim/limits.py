"""Where the paper's theory holds: regime maps of its approximations and of its assumptions.

Li et al. 2024 (https://arxiv.org/abs/2405.14578) derive eq 9 (exact for sign updates with
independent Gaussian per-example gradients), then approximate it by eq 10 (erf replaced by an
algebraic function) and eq 2 / 13 (first order in B, valid for B << validity_bound), and locate
the surge's peak at eq 14's B_noise. Each function below measures one of these steps against the
one it replaces, over batch sizes and problems:

- ``erf_error_map``: eq 9 with eq 10 against exact eq 9, over (B, mu/sigma);
- ``surge_error_map``: closed-form surge eq 2 against exact eq 9, over (B, mu/sigma);
- ``family_errors``: both, per problem family, with the B ranges where they stay within a tolerance;
- ``peak_batch_size`` / ``peak_table``: where eq 9 peaks, against eq 14's B_noise and eq 16's height;
- ``surge_bound_map``: eq 2 against eq 9 over (B, B_noise) in units of the validity bound;
- ``correlation_error_map``: eq 9 (independent coordinates) against the exact correlated theory
  (``surgesim.correlated``), over (B, correlation);
- ``non_gaussian_departure``: Monte Carlo optimal learning rate with Student-t, Laplace and sparse
  two-point per-example gradients against Gaussian eq 9, over B (where the CLT takes over);
- ``adam_update_moments`` / ``adam_frozen_lr``: one Adam step from moments accumulated on a frozen
  gradient distribution, against sign (Appendix A's approximation).

Relative errors are signed, approx / reference - 1. Everything is computed; nothing is printed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from . import theory
from .correlated import noise_batch_size_correlated, optimal_lr_correlated
from .departures import adam_frozen_lr, adam_update_moments, non_gaussian_departure, positive_grid, ratio_estimate
from .problem import QuadraticProblem

__all__ = [
    "RegimeMap",
    "relative_error",
    "failure_interval",
    "converged_from",
    "ratio_estimate",
    "scaled_problem",
    "aligned_correlation",
    "erf_error_map",
    "surge_error_map",
    "correlation_error_map",
    "first_peak",
    "peak_batch_size",
    "peak_table",
    "surge_bound_map",
    "family_errors",
    "non_gaussian_departure",
    "adam_update_moments",
    "adam_frozen_lr",
]


@dataclass(frozen=True)
class RegimeMap:
    """A relative error ``z`` (ny, nx) over batch sizes ``x`` (nx,) and a problem parameter ``y``
    (ny,); ``lines`` maps a label to a batch size per y (e.g. B_noise) for overlays."""

    name: str
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    ylabel: str
    zlabel: str
    lines: Mapping[str, np.ndarray] = field(default_factory=dict)

    def rows(self) -> list[dict]:
        return [
            {"map": self.name, "batch_size": float(b), "y": float(y), "rel_error": float(e)}
            for y, zr in zip(self.y, self.z)
            for b, e in zip(self.x, zr)
        ]


def relative_error(approx, exact) -> np.ndarray:
    """approx / exact - 1 (signed)."""
    return np.asarray(approx, dtype=np.float64) / np.asarray(exact, dtype=np.float64) - 1.0


def failure_interval(B, err, tol: float) -> tuple[float, float]:
    """(first, last) batch size of the grid where |err| > tol; (nan, nan) if |err| <= tol on the
    whole grid. Below ``first`` the approximation is within tol on the grid."""
    B = np.asarray(B, dtype=np.float64)
    bad = ~(np.abs(np.asarray(err, dtype=np.float64)) <= tol)
    if not bad.any():
        return math.nan, math.nan
    idx = np.flatnonzero(bad)
    return float(B[idx[0]]), float(B[idx[-1]])


def converged_from(B, err, tol: float) -> float:
    """The smallest grid batch size from which |err| <= tol up to the end of the grid (inf when
    the last point fails): where a departure has died out, e.g. by the CLT."""
    B = np.asarray(B, dtype=np.float64)
    bad = np.flatnonzero(~(np.abs(np.asarray(err, dtype=np.float64)) <= tol))
    if bad.size == 0:
        return float(B[0])
    return float(B[bad[-1] + 1]) if bad[-1] + 1 < B.size else math.inf


def scaled_problem(problem: QuadraticProblem, snr_scale: float) -> QuadraticProblem:
    """The same problem with mu multiplied by ``snr_scale`` (every mu_i / sigma_i scales alike):
    B_noise (eq 14) and the validity bound scale as 1 / snr_scale^2."""
    return QuadraticProblem(problem.mu * float(snr_scale), problem.sigma, problem.hessian)


def aligned_correlation(problem: QuadraticProblem, rho: float, aligned: bool = True, seed: int = 0):
    """A rank-one correlated noise with the problem's marginal variances, as a pair (D, F):
    Sigma = (1 - rho) diag(sigma^2) + rho (sigma * s)(sigma * s)', so rho_ij = rho s_i s_j, with
    s = sign(mu) (``aligned``: the noise moves all signs along the gradient's sign pattern, the
    direction the surge problems' curvature couples) or random signs (seeded)."""
    if not 0 <= rho <= 1:
        raise ValueError(f"rho must be in [0, 1], got {rho!r}")
    if aligned:
        s = np.where(problem.mu < 0, -1.0, 1.0)
    else:
        s = np.random.default_rng(np.random.SeedSequence([seed, 0xC0])).choice([-1.0, 1.0], problem.dim)
    sig = problem.sigma
    return (1.0 - rho) * sig * sig, (np.sqrt(rho) * sig * s)[:, None]


def _map(name, problem, batch_sizes, snr_scales, approx: Callable, zlabel: str) -> RegimeMap:
    B = positive_grid("batch_sizes", batch_sizes, lo=0.999)
    scales = positive_grid("snr_scales", snr_scales)
    z = np.empty((scales.size, B.size))
    for k, f in enumerate(scales):
        p = scaled_problem(problem, f)
        z[k] = relative_error(approx(B, p), theory.optimal_lr(B, p.mu, p.sigma, p.hessian))
    r_med = float(np.median(np.abs(problem.snr)))
    bn = theory.noise_batch_size(problem.mu, problem.sigma, problem.hessian)
    vb = theory.validity_bound(problem.mu, problem.sigma)
    return RegimeMap(
        name,
        B,
        scales * r_med,
        z,
        "median |mu_i| / sigma_i",
        zlabel,
        {"B_noise (eq 14)": bn / scales**2, "validity bound": vb / scales**2},
    )


def erf_error_map(problem: QuadraticProblem, batch_sizes, snr_scales) -> RegimeMap:
    """Relative error of eq 9 evaluated with eq 10 against exact eq 9, over B and mu scaled by
    each of ``snr_scales``. It vanishes as B -> 0 (same slope sqrt(2/pi) at 0) and as B -> inf
    (same limit sign(mu)); in between it is set by x = sqrt(B/2) mu_i / sigma_i ~ 1."""
    return _map(
        "erf_in_eq9",
        problem,
        batch_sizes,
        snr_scales,
        lambda B, p: theory.optimal_lr(B, p.mu, p.sigma, p.hessian, approx=True),
        "eq 9 with eq 10 vs eq 9",
    )


def surge_error_map(problem: QuadraticProblem, batch_sizes, snr_scales) -> RegimeMap:
    """Relative error of the closed-form surge eq 2 (= eq 13) against exact eq 9, over B and mu
    scaled by each of ``snr_scales``: vanishes as B -> 0, fails beyond the validity bound (eq 2
    decays to 0 where eq 9 tends to eq 17)."""
    return _map(
        "surge_vs_eq9",
        problem,
        batch_sizes,
        snr_scales,
        lambda B, p: theory.surge_lr(B, p.mu, p.sigma, p.hessian),
        "eq 2 vs eq 9",
    )


def correlation_error_map(problem: QuadraticProblem, batch_sizes, rhos, aligned: bool = True) -> RegimeMap:
    """Relative error of eq 9, which assumes independent coordinates (using the marginal sigma),
    against the exact optimal learning rate with correlated noise (``optimal_lr_correlated``),
    for the rank-one correlation ``aligned_correlation(problem, rho, aligned)``.

    Costs O(d^2) Owen's T evaluations per (B, rho): about 0.2 s each at d = 1000.
    """
    B = positive_grid("batch_sizes", batch_sizes, lo=0.999)
    rho = positive_grid("rhos", rhos)
    if np.any(rho > 1):
        raise ValueError(f"rhos must be in (0, 1], got max {rho.max()!r}")
    mu, sigma, H = problem.mu, problem.sigma, problem.hessian
    indep = theory.optimal_lr(B, mu, sigma, H)
    z = np.empty((rho.size, B.size))
    bn = np.empty(rho.size)
    for k, r in enumerate(rho):
        Sigma = aligned_correlation(problem, r, aligned)
        z[k] = relative_error(indep, optimal_lr_correlated(B, mu, Sigma, H))
        bn[k] = noise_batch_size_correlated(mu, Sigma, H) if r < 1 else math.nan
    return RegimeMap(
        "independence_vs_correlated" + ("" if aligned else "_random"),
        B,
        rho,
        z,
        "correlation rho" + (" (along sign(mu))" if aligned else " (random signs)"),
        "eq 9 (independent) vs exact correlated",
        {"B_noise, correlated": bn, "B_noise (eq 14)": np.full(rho.size, theory.noise_batch_size(mu, sigma, H))},
    )


# --- the peak ------------------------------------------------------------------------------------


def first_peak(y) -> int | None:
    """Index of the first interior local maximum of a sampled curve (None if it has none)."""
    y = np.asarray(y, dtype=np.float64)
    up = np.flatnonzero((y[1:-1] >= y[:-2]) & (y[1:-1] > y[2:])) + 1
    return int(up[0]) if up.size else None


def peak_batch_size(problem: QuadraticProblem, b_max: float = 1e12, points: int = 600) -> tuple[float, float]:
    """(B_peak, eps_opt(B_peak)): the first interior local maximum of exact eq 9 over real
    B in [1, b_max] (log grid of ``points``, refined by bounded Brent in log B); (nan, nan) when
    eq 9 has none on the grid (monotone, e.g. a diagonal H)."""
    mu, sigma, H = problem.mu, problem.sigma, problem.hessian
    logb = np.linspace(0.0, math.log(b_max), points)
    k = first_peak(theory.optimal_lr(np.exp(logb), mu, sigma, H))
    if k is None:
        return math.nan, math.nan
    res = optimize.minimize_scalar(
        lambda t: -float(theory.optimal_lr(math.exp(t), mu, sigma, H)),
        bounds=(logb[k - 1], logb[k + 1]),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return math.exp(res.x), -float(res.fun)


def peak_table(problems: Mapping[str, QuadraticProblem]) -> list[dict]:
    """For each named problem: eq 14's B_noise, the validity bound, the peak of exact eq 9
    (``peak_batch_size``), eq 16's eps_max, and the ratios B_peak / B_noise, lr_peak / eps_max.

    Scaling mu scales B_noise, the bound and B_peak alike (all go as 1 / r^2), so what moves the
    ratios is B_noise / validity_bound, set by the dimension and the curvature's structure.
    """
    rows = []
    for name, p in problems.items():
        bn = theory.noise_batch_size(p.mu, p.sigma, p.hessian)
        vb = theory.validity_bound(p.mu, p.sigma)
        bp, lp = peak_batch_size(p)
        em = theory.peak_lr(p.mu, p.sigma, p.hessian)
        rows.append(
            {
                "problem": name,
                "dims": p.dim,
                "noise_batch_size": bn,
                "validity_bound": vb,
                "bnoise_over_bound": bn / vb,
                "peak_batch_size": bp,
                "peak_lr": lp,
                "eps_max_eq16": em,
                "peak_over_bnoise": bp / bn,
                "peak_lr_over_eps_max": lp / em,
            }
        )
    return rows


def surge_bound_map(problems: Sequence[QuadraticProblem], b_over_bound) -> RegimeMap:
    """Relative error of eq 2 against exact eq 9 over (B / validity_bound, B_noise / validity_bound):
    the two dimensionless numbers that decide whether the closed-form surge holds. Each problem
    gives one row (sorted by B_noise / bound; problems without a finite B_noise are skipped)."""
    x = positive_grid("b_over_bound", b_over_bound)
    rows = []
    for p in problems:
        bn = theory.noise_batch_size(p.mu, p.sigma, p.hessian)
        vb = theory.validity_bound(p.mu, p.sigma)
        if not (math.isfinite(bn) and math.isfinite(vb)):
            continue
        B = np.maximum(x * vb, 1.0)
        err = relative_error(
            theory.surge_lr(B, p.mu, p.sigma, p.hessian), theory.optimal_lr(B, p.mu, p.sigma, p.hessian)
        )
        rows.append((bn / vb, np.where(x * vb >= 1.0, err, np.nan)))
    if not rows:
        raise ValueError("no problem has a finite B_noise and validity bound")
    rows.sort(key=lambda t: t[0])
    y = np.array([t[0] for t in rows])
    return RegimeMap(
        "surge_vs_eq9_by_bound",
        x,
        y,
        np.stack([t[1] for t in rows]),
        "B_noise / validity bound",
        "eq 2 vs eq 9",
        {"B = B_noise": y},
    )


def family_errors(
    problems: Mapping[str, QuadraticProblem], batch_sizes, tols: Sequence[float] = (0.05, 0.2)
) -> list[dict]:
    """Per named problem: the relative errors of eq 10 (in eq 9) and of eq 2 against exact eq 9
    over ``batch_sizes``, and for each tolerance the first and last grid B where they exceed it,
    also in units of B_noise (eq 14) and of the validity bound."""
    B = positive_grid("batch_sizes", batch_sizes, lo=0.999)
    out = []
    for name, p in problems.items():
        mu, sigma, H = p.mu, p.sigma, p.hessian
        exact = theory.optimal_lr(B, mu, sigma, H)
        errs = {
            "erf": relative_error(theory.optimal_lr(B, mu, sigma, H, approx=True), exact),
            "surge": relative_error(theory.surge_lr(B, mu, sigma, H), exact),
        }
        bn = theory.noise_batch_size(mu, sigma, H)
        vb = theory.validity_bound(mu, sigma)
        row = {
            "problem": name,
            "dims": p.dim,
            "noise_batch_size": bn,
            "validity_bound": vb,
            "batch_sizes": B,
            "err_erf": errs["erf"],
            "err_surge": errs["surge"],
            "max_abs_err_erf": float(np.max(np.abs(errs["erf"]))),
            "max_abs_err_surge_below_bnoise": float(np.max(np.abs(errs["surge"][B <= bn]), initial=0.0)),
        }
        for which, e in errs.items():
            for tol in tols:
                first, last = failure_interval(B, e, tol)
                row[f"{which}_fails_from_{tol:g}"] = first
                row[f"{which}_fails_until_{tol:g}"] = last
                row[f"{which}_fails_from_{tol:g}_over_bound"] = first / vb
        out.append(row)
    return out


# --- non-Gaussian per-example gradients (Monte Carlo) ---------------------------------------------
