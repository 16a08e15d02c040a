"""Monte Carlo departures from the paper's assumptions (the part of ``surgesim.limits`` that samples):
per-example gradients that are not Gaussian, and Adam in place of sign.

- ``non_gaussian_departure``: Monte Carlo optimal learning rate with Student-t, Laplace and sparse
  two-point per-example gradients against Gaussian eq 9, over B (where the CLT takes over);
- ``adam_update_moments`` / ``adam_frozen_lr``: one Adam step from moments accumulated on a frozen
  gradient distribution, against sign (Appendix A's approximation);
- ``ratio_estimate``: mean(a) / mean(b) with its delta-method standard error (eq 6 from trials).

Relative errors are signed, approx / reference - 1. Everything is computed; nothing is printed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import interpolate

from . import theory
from .estimate import delta_method, estimate_batch_size
from .kernels import correlated as kc
from .problem import QuadraticProblem
from .rng import derive_key, normals, stream_key

__all__ = ["ratio_estimate", "positive_grid", "non_gaussian_departure", "adam_update_moments", "adam_frozen_lr"]

_ADAM_TAG = 0xADA  # separates the Adam-history streams from every other stream


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


def positive_grid(name: str, values, lo: float = 0.0) -> np.ndarray:
    """``values`` as a flat float64 array; ValueError naming ``name`` unless non-empty, finite and > lo."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= lo):
        raise ValueError(f"{name} must be a non-empty list of finite values > {lo:g}, got {arr}")
    return arr


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
    B = positive_grid("batch_sizes", batch_sizes, lo=0.999)
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
