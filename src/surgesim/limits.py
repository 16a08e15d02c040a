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
from scipy import interpolate, optimize

from . import theory
from .correlated import noise_batch_size_correlated, optimal_lr_correlated
from .estimate import delta_method, estimate_batch_size
from .kernels import correlated as kc
from .problem import QuadraticProblem
from .rng import derive_key, normals, stream_key

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

_ADAM_TAG = 0xADA  # separates the Adam-history streams from every other stream


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


def ratio_estimate(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean(a) / mean(b), its delta-method standard error) from per-trial a, b (as ``estimate``)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"a and b must be 1-d of the same length >= 2, got {a.shape} and {b.shape}")
    bc = b - b[0]  # b varies little around tr(H): shift before taking variances
    st = {
        "n": a.size,
        "m": b.size,
        "ma": float(a.mean()),
        "mb": float(b.mean()),
        "va": float(a.var(ddof=1)),
        "vb": float(bc.var(ddof=1)),
        "cab": float(np.cov(a, bc, ddof=1)[0, 1]),
    }
    lr, se, _, _ = delta_method(st)
    return lr, se


def _grid(name: str, values, lo: float = 0.0) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= lo):
        raise ValueError(f"{name} must be a non-empty list of finite values > {lo:g}, got {arr}")
    return arr


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
    B = _grid("batch_sizes", batch_sizes, lo=0.999)
    scales = _grid("snr_scales", snr_scales)
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
    B = _grid("batch_sizes", batch_sizes, lo=0.999)
    rho = _grid("rhos", rhos)
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
    x = _grid("b_over_bound", b_over_bound)
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
    B = _grid("batch_sizes", batch_sizes, lo=0.999)
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


def non_gaussian_departure(
    problem: QuadraticProblem,
    laws: Mapping[str, float | None],
    batch_sizes: Sequence[int],
    *,
    rel_se: float = 0.02,
    max_draws: float = 2e8,
    min_trials: int = 64,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Monte Carlo optimal learning rate of sign-SGD with non-Gaussian per-example gradients
    (``laws``: name -> shape, see ``kernels.correlated.law_noise``; "gaussian" -> None runs the
    Gaussian per-example sampler of ``estimate`` as a control) against Gaussian eq 9.

    Per (law, B): N trials planned from the Gaussian theory so that the standard error is about
    ``rel_se`` of eq 9, N = var(a) / (rel_se mu'E)^2 with var(a) = sum_i mu_i^2 (1 - E_i^2), capped
    at ``max_draws`` / (B d) draws (the per-example sampler costs B d draws per trial). Rows hold
    lr_mc, its delta-method s.e., lr_gauss (eq 9), departure = lr_mc / lr_gauss - 1 and its s.e.
    """
    if not 0 < rel_se < 1:
        raise ValueError(f"rel_se must be in (0, 1), got {rel_se!r}")
    sizes = [int(b) for b in batch_sizes]
    if not sizes or any(b < 1 or b != bb for b, bb in zip(sizes, batch_sizes)):
        raise ValueError(f"batch_sizes must be integers >= 1, got {list(batch_sizes)}")
    mu, sigma, H = problem.mu, problem.sigma, problem.hessian
    d = problem.dim
    total = len(laws) * len(sizes)
    rows = []
    for law, shape in laws.items():
        if law == "gaussian":  # the control: onestep's faithful per-example Gaussian sampler
            if shape is not None:
                raise ValueError(f"gaussian has no shape parameter, got {shape!r}")
            label = "gaussian (control)"
        else:
            noise = kc.law_noise(law, sigma, shape)
            label = noise.label
        for B in sizes:
            E = theory.sign_mean(float(B), mu, sigma)
            lr_g = float(theory.optimal_lr(float(B), mu, sigma, H))
            want = float(np.sum(mu * mu * (1.0 - E * E))) / (rel_se * float(mu @ E)) ** 2
            cap = max(min_trials, int(max_draws // (B * d)))
            n = int(min(max(math.ceil(want), min_trials), cap))
            if law == "gaussian":
                e = estimate_batch_size(problem, B, seed=seed, trials=max(n, 2), sampler="per_example")
                lr, se = e.lr, e.lr_se
            else:
                lr, se = ratio_estimate(*kc.moments(noise, B, mu, H, n, seed))
            rows.append(
                {
                    "law": label,
                    "batch_size": B,
                    "trials": n,
                    "lr_mc": lr,
                    "lr_mc_se": se,
                    "lr_gauss": lr_g,
                    "departure": lr / lr_g - 1.0,
                    "departure_se": se / abs(lr_g),
                }
            )
            if progress is not None:
                progress(len(rows), total)
    return rows


# --- Adam against sign (Appendix A) --------------------------------------------------------------


def adam_update_moments(
    y, beta1: float, beta2: float, steps: int | None = None, samples: int = 1 << 14, seed: int = 0, groups: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate moments of one Adam update u = m_hat / sqrt(v_hat) (eq 25-27, eps_Adam = 0)
    in the frozen-gradient model: the last ``steps`` batch gradients of the coordinate are
    i.i.d. N(mu_i, sigma_i^2 / B) (the loss is not moved by the history), so in units of the
    batch noise, g = y + z with y = sqrt(B) mu_i / sigma_i, and

        m_hat = sum_k w1_k g_k,  v_hat = sum_k w2_k g_k^2,  w_k = (1 - beta) beta^k / (1 - beta^steps).

    Returns (f1, f2) of shape (groups, len(y)): E[u] and E[u^2] estimated on ``groups``
    independent groups of samples (their spread gives standard errors). Antithetic pairs (z, -z)
    make f1 exactly odd in y and keep its error proportional to y near 0. beta1 = beta2 = 0 gives
    u = sign(g): f1 = erf(y / sqrt 2), f2 = 1 (eq 29). As beta2 -> 1 with many steps, v_hat ->
    y^2 + 1 and u -> m_hat / sqrt(y^2 + 1) (eq 28): f1 -> y / sqrt(1 + y^2) and
    f2 -> (y^2 + c) / (y^2 + 1), c = (1 - beta1) / (1 + beta1).
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0 <= beta < 1:
            raise ValueError(f"{name}={beta!r} must be in [0, 1)")
    if steps is None:  # the history until the older weights have decayed below 1e-3
        steps = max(1, math.ceil(math.log(1e-3) / math.log(max(beta1, beta2))) if max(beta1, beta2) > 0 else 1)
    if int(steps) != steps or steps < 1 or samples < groups or groups < 2:
        raise ValueError(f"need steps >= 1 and samples >= groups >= 2, got {steps}, {samples}, {groups}")
    k = np.arange(int(steps))

    def weights(beta: float) -> np.ndarray:
        if beta == 0:
            return (k == 0).astype(np.float64)
        return (1.0 - beta) * beta**k / (1.0 - beta ** int(steps))

    w1, w2 = weights(beta1), weights(beta2)
    per = samples // groups
    chunk = max(1, min(per, (1 << 22) // int(steps)))
    blocks = -(-per // chunk)  # sample blocks per group: block (g, j) has stream derive_key(key, g * blocks + j)
    f1 = np.zeros((groups, y.size))
    f2 = np.zeros((groups, y.size))
    key = np.uint64(stream_key(np.uint64(seed), np.uint64(_ADAM_TAG), np.uint64(int(steps))))
    for g in range(groups):
        for s0 in range(0, per, chunk):
            n = min(chunk, per - s0)
            block = np.uint64(g * blocks + s0 // chunk)
            Z = normals(derive_key(key, block), n * int(steps)).reshape(n, int(steps))
            M, V1, V2 = Z @ w1, Z @ w2, (Z * Z) @ w2
            for sign in (1.0, -1.0):  # antithetic: -z has M -> -M, V1 -> -V1, V2 unchanged
                num = y[None, :] + sign * M[:, None]
                den = y[None, :] ** 2 + 2.0 * sign * y[None, :] * V1[:, None] + V2[:, None]
                u = num / np.sqrt(den)
                f1[g] += u.sum(axis=0)
                f2[g] += (u * u).sum(axis=0)
        f1[g] /= 2 * per
        f2[g] /= 2 * per
    return f1, f2


def adam_frozen_lr(
    problem: QuadraticProblem,
    batch_sizes,
    beta1: float,
    beta2: float,
    *,
    steps: int | None = None,
    samples: int = 1 << 14,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One-step optimal learning rate of Adam (eq 6 with V = u) in the frozen-gradient model of
    ``adam_update_moments``, and its standard error, per batch size:

        eps(B) = sum_i mu_i f1(y_i) / (sum_i H_ii (f2(y_i) - f1(y_i)^2) + f1'H f1),  y_i = sqrt(B) r_i

    (coordinates independent, as in eq 9). f1, f2 are tabulated on a log grid of |y| (f1 odd,
    f2 even) and interpolated by cubic splines in log |y|; the standard error is the spread over
    the sample groups. beta1 = beta2 = 0 reproduces eq 9. The model ignores the drift of the
    parameters during the history, so it isolates the effect of Adam's averaging.
    """
    B = _grid("batch_sizes", batch_sizes, lo=0.999)
    mu, H = problem.mu, problem.hessian
    r = np.abs(problem.snr)
    lo = max(float(r[r > 0].min(initial=1.0)) * 0.5, 1e-8)
    hi = float(math.sqrt(B.max()) * r.max()) * 2.0 + 1.0
    grid = np.geomspace(lo, hi, 240)
    f1, f2 = adam_update_moments(grid, beta1, beta2, steps, samples, seed)
    hdiag = H.diag()
    lrs = np.empty((f1.shape[0] + 1, B.size))
    for g, (t1, t2) in enumerate([(f1.mean(0), f2.mean(0))] + list(zip(f1, f2))):
        s1 = interpolate.CubicSpline(np.log(grid), t1 / grid)  # f1(y) / y: smooth, finite at 0
        s2 = interpolate.CubicSpline(np.log(grid), t2)
        for j, b in enumerate(B):
            y = np.sqrt(b) * r
            ly = np.log(np.clip(y, grid[0], grid[-1]))
            e1 = np.sign(problem.mu) * y * s1(ly)
            e2 = s2(ly)
            num = float(mu @ e1)
            den = float((e2 - e1 * e1) @ hdiag + H.quad_rows(e1))
            lrs[g, j] = num / den
    se = lrs[1:].std(axis=0, ddof=1) / math.sqrt(f1.shape[0])
    return lrs[0], se
