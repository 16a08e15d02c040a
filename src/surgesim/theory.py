"""Closed forms of Li et al. 2024 ("Surge Phenomenon in Optimal Learning Rate and Batch Size
Scaling", https://arxiv.org/abs/2405.14578) and McCandlish et al. 2018 ("An Empirical Model of
Large-Batch Training", https://arxiv.org/abs/1812.06162). Equation numbers are Li et al.'s.

Setting: per-example gradients of coordinate i are N(mu_i, sigma_i^2), independent across
coordinates; the update is V = sign(batch mean) and the loss is locally quadratic with Hessian H.
Write r_i = mu_i / sigma_i and

    off(r) = sum_{i != j} r_i r_j H_ij = r'Hr - sum_i r_i^2 H_ii        (the sum in eq 14)
    S      = sum_i mu_i^2 / sigma_i                                       (eq 13, 16, 19)

Every function takes B as a scalar or an array (returned in the same shape), mu and sigma of shape
(d,), and H as a dense (d, d) array or an operator from ``surgesim.hessian``; a diagonal plus
low-rank H costs O(d k) and is never densified. B must be >= 1 (B = inf gives the limit).
"""

from __future__ import annotations

import os

import numpy as np
from numpy.typing import ArrayLike
from scipy import special, stats

from .hessian import Hessian, as_hessian, finite_array

__all__ = [
    "sign_mean",
    "sign_mean_approx",
    "optimal_lr",
    "optimal_loss_improvement",
    "noise_batch_size",
    "peak_lr",
    "surge_lr",
    "large_batch_lr",
    "max_loss_improvement",
    "surge_loss_improvement",
    "validity_bound",
    "sgd_optimal_lr",
    "fit_noise_batch_size",
    "estimate_peak_lr",
    "curves",
    "constants",
    "curves_and_constants",
    "sign_moments",
    "optimal_lr_correlated",
    "noise_batch_size_correlated",
    "surge_lr_correlated",
]

_PI = np.pi


# --- input checks -------------------------------------------------------------------------------


def _mu_sigma(mu, sigma) -> tuple[np.ndarray, np.ndarray]:
    mu = finite_array("mu", mu, 1)
    sigma = finite_array("sigma", sigma, 1)
    if mu.shape != sigma.shape:
        raise ValueError(f"mu and sigma must have the same shape, got {mu.shape} and {sigma.shape}")
    if np.any(sigma <= 0):
        raise ValueError(f"sigma must be > 0, min is {sigma.min():.3g}")
    return mu, sigma


def _hessian(H, d: int) -> Hessian:
    op = as_hessian(H)
    if op.dim != d:
        raise ValueError(f"H has dimension {op.dim} but mu has {d}")
    return op


def _batch(B) -> np.ndarray:
    b = np.asarray(B, dtype=np.float64)
    if np.any(np.isnan(b)) or np.any(b < 1):
        raise ValueError(f"batch size B must be >= 1, got {np.min(b) if b.size else b}")
    return b


def _scaled(b: np.ndarray, r: np.ndarray) -> np.ndarray:
    """x = sqrt(B/2) r with shape b.shape + (d,); x = 0 where r = 0, also for B = inf."""
    with np.errstate(invalid="ignore"):
        x = np.sqrt(b / 2.0)[..., None] * r
    return np.where(r == 0, 0.0, x)


def _off_diagonal(r: np.ndarray, op: Hessian) -> float:
    """sum_{i != j} r_i r_j H_ij, the denominator of eq 14 (exactly 0 for a diagonal H)."""
    return op.quad_off_diagonal(r)


# --- eq 35 / 38 and eq 10 ------------------------------------------------------------------------


def sign_mean(B, mu, sigma) -> np.ndarray:
    """E_i(B) = E[sign(batch mean_i)] = erf(sqrt(B/2) mu_i / sigma_i), eq 35/38 (exact).

    Returns shape ``np.shape(B) + (d,)``.

    >>> round(float(sign_mean(2.0, [1.0], [1.0])[0]), 12)  # erf(1)
    0.84270079295
    """
    mu, sigma = _mu_sigma(mu, sigma)
    return _erf_mean(_batch(B), mu / sigma)


def sign_mean_approx(B, mu, sigma) -> np.ndarray:
    """Eq 10: E_i(B) ~ r_i / sqrt(pi / (2B) + r_i^2), r_i = mu_i / sigma_i.

    Right slope at r = 0 and right limits; its largest absolute error against erf is about 0.108
    (in the variable x = sqrt(B/2) r it is erf(x) vs x / sqrt(x^2 + pi/4)).

    >>> round(float(sign_mean_approx(1.0, [1e-3], [1.0])[0] / 1e-3), 6)  # slope sqrt(2/pi)
    0.797884
    """
    mu, sigma = _mu_sigma(mu, sigma)
    return _approx_mean(_batch(B), mu / sigma)


def _erf_mean(b: np.ndarray, r: np.ndarray) -> np.ndarray:
    return special.erf(_scaled(b, r))


def _approx_mean(b: np.ndarray, r: np.ndarray) -> np.ndarray:
    # Written as x / sqrt(x^2 + pi/4) with x = sqrt(B/2) r; hypot does not overflow for huge x.
    x = _scaled(b, r)
    with np.errstate(invalid="ignore"):
        out = x / np.hypot(x, np.sqrt(_PI) / 2.0)
    return np.where(np.isinf(x), np.sign(x), out)


# --- eq 8 / 9 ------------------------------------------------------------------------------------


# Eq 8 / 9 are sums over coordinates of functions of (B, r_i): computed over blocks of batch sizes
# and coordinates, so no (batch sizes x d) array is built at large d. Each batch size's sums run
# over the same coordinate blocks whatever the other batch sizes, so a value does not depend on
# the grid it is computed in; for d <= _COORDS the sums are single einsums, as unblocked.
_ROWS = 64  # batch sizes per block
_COORDS = 1 << 14  # coordinates per block (diagonal and diagonal + low-rank H; dense H is not blocked)


def _numerator_denominator(b: np.ndarray, mu: np.ndarray, sigma: np.ndarray, op: Hessian, approx: bool = False,
                           r: np.ndarray | None = None, diag: np.ndarray | None = None):  # fmt: skip
    """G'E[V] and tr(H cov V) + E[V]'H E[V] of eq 6 with cov(V) = diag(1 - E^2) (eq 36), over the
    batch sizes ``b`` (any shape), E from eq 35 (or eq 10 with ``approx``). ``r`` = mu / sigma
    and ``diag`` = op.diag(), where the caller has them (shared by several passes: the same
    values as each block computes, and the same sums, which start from +0 whatever the sign of
    a zero diagonal entry)."""
    mean = _approx_mean if approx else _erf_mean
    flat = b.reshape(-1)
    num, den = np.empty(flat.shape), np.empty(flat.shape)
    d = mu.size
    # H = diag(h) + U U' + D (``HessianOperator``): a dense part needs every coordinate at once
    h, U, dense = op.diagonal_part(), op.low_rank_factor(), op.dense_part().size > 0
    for q in range(0, flat.size, _ROWS):
        rows = flat[q : q + _ROWS]
        # einsum, not BLAS: reproducible across thread counts
        if dense:
            E = mean(rows, mu / sigma if r is None else r)
            n = np.einsum("...i,i->...", E, mu)
            dn = np.einsum("...i,i->...", 1.0 - E * E, op.diag() if diag is None else diag) + op.quad_rows(E)
        else:
            n, s1, s2, proj = 0.0, 0.0, 0.0, 0.0
            for c in range(0, d, _COORDS):
                sl = slice(c, c + _COORDS)
                E = mean(rows, mu[sl] / sigma[sl] if r is None else r[sl])
                Uc = U[sl]
                n = n + np.einsum("...i,i->...", E, mu[sl])
                s1 = s1 + np.einsum("...i,i->...", 1.0 - E * E,
                                    h[sl] + np.einsum("ik,ik->i", Uc, Uc) if diag is None else diag[sl])  # fmt: skip
                s2 = s2 + np.einsum("...i,i->...", E * E, h[sl])
                proj = proj + np.einsum("...i,ik->...k", E, Uc)
            dn = s1 + (s2 + np.einsum("...k,...k->...", proj, proj))
        num[q : q + rows.size], den[q : q + rows.size] = n, dn
    return num.reshape(b.shape), den.reshape(b.shape)


def optimal_lr(B, mu, sigma, H, approx: bool = False) -> np.ndarray:
    """Eq 9: eps_opt(B) = sum_i E_i mu_i / (sum_i (1 - E_i^2) H_ii + sum_ij E_i E_j H_ij).

    Exact for sign updates with Gaussian per-example gradients on a quadratic (Lemma 1 + eq 35-36),
    with E_i = erf(sqrt(B/2) r_i), or with eq 10's approximation when ``approx=True``.

    >>> float(optimal_lr(1e12, [1.0, 1.0], [1.0, 1.0], [[1.0, 0.0], [0.0, 1.0]]))  # eq 17: 2/2
    1.0
    """
    mu, sigma = _mu_sigma(mu, sigma)
    op = _hessian(H, mu.size)
    num, den = _numerator_denominator(_batch(B), mu, sigma, op, approx)
    return num / den


def optimal_loss_improvement(B, mu, sigma, H) -> np.ndarray:
    """Eq 8: Delta L_opt(B) = (sum_i E_i mu_i)^2 / (2 (sum_i (1 - E_i^2) H_ii + sum_ij E_i E_j H_ij)).

    Equivalently eq 7, Delta L_opt = G'E[V] eps_opt / 2, with E_i exact (eq 35).
    """
    mu, sigma = _mu_sigma(mu, sigma)
    op = _hessian(H, mu.size)
    num, den = _numerator_denominator(_batch(B), mu, sigma, op)
    return 0.5 * num * num / den


# --- Theorem 3: eq 13-16 -------------------------------------------------------------------------


def noise_batch_size(mu, sigma, H) -> float:
    """Eq 14: B_noise = pi tr(H) / (2 sum_{i != j} r_i r_j H_ij), r = mu / sigma.

    Returns inf when the off-diagonal sum is <= 0 (e.g. diagonal H): then eq 9 rises monotonically
    in the regime of Theorem 3 and there is no surge. Meaningful when B_noise << validity_bound.

    >>> round(noise_batch_size([1.0, 1.0], [10.0, 10.0], [[1.0, 0.5], [0.5, 1.0]]), 9)  # 100 pi
    314.159265359
    """
    mu, sigma = _mu_sigma(mu, sigma)
    op = _hessian(H, mu.size)
    off = _off_diagonal(mu / sigma, op)
    return float(_PI * op.trace() / (2.0 * off)) if off > 0 else float(np.inf)


def peak_lr(mu, sigma, H) -> float:
    """Eq 16 (= eq 41): eps_max = sqrt(B_noise / (2 pi)) S / tr(H) = S / (2 sqrt(off tr(H))).

    The height of the surge at B = B_noise (Theorem 3, valid for B_noise << validity_bound).
    inf when B_noise is inf (no peak: the small-batch rise never turns).
    """
    mu, sigma = _mu_sigma(mu, sigma)
    op = _hessian(H, mu.size)
    off = _off_diagonal(mu / sigma, op)
    if off <= 0:
        return float(np.inf)
    s = float(np.sum(mu * mu / sigma))
    return s / (2.0 * np.sqrt(off * op.trace()))


def surge_lr(B, mu, sigma, H) -> np.ndarray:
    """Eq 13 (= eq 2): eps_opt(B) ~ eps_max / (1/2 (sqrt(B_noise / B) + sqrt(B / B_noise))).

    Computed as the first line of eq 40, sqrt(2B/pi) S / (tr(H) + (2B/pi) off), which equals eq 2
    when off > 0 and gives the square-root rule eq 4 (no peak) when off <= 0 (clipped to 0, as
    B_noise = inf). Valid for B << validity_bound (Theorem 3). Divided through by sqrt(B) so that
    B = inf gives the limit (0, or inf without a peak).
    """
    mu, sigma = _mu_sigma(mu, sigma)
    op = _hessian(H, mu.size)
    b = _batch(B)
    return _surge_lr(b, *_invariants(mu, sigma, op))


def _invariants(mu: np.ndarray, sigma: np.ndarray, op: Hessian, r: np.ndarray | None = None,
                ) -> tuple[float, float, float]:  # fmt: skip
    """(off, S, tr H) of the module docstring: the three sums over the coordinates that eq 13-19
    share, each one pass (at d = 10^7 a pass costs a good part of a second: computed once);
    ``r`` = mu / sigma where the caller has it."""
    return _off_diagonal(mu / sigma if r is None else r, op), float(np.sum(mu * mu / sigma)), op.trace()


def _surge_lr(b: np.ndarray, off: float, s: float, trace: float) -> np.ndarray:
    sqrt_b = np.sqrt(b)
    den = trace / sqrt_b
    if off > 0:
        den = den + (2.0 / _PI) * off * sqrt_b
    with np.errstate(divide="ignore"):
        return np.sqrt(2.0 / _PI) * s / den


def large_batch_lr(mu, H) -> float:
    """Eq 17 (Theorem 4, B >> validity_bound): eps_opt = sum_i |mu_i| / sign(mu)' H sign(mu).

    This is eq 9 at B = inf, where E_i = sign(mu_i). A coordinate with mu_i = 0 exactly keeps a
    fair-coin sign (E_i = 0, variance 1) and adds its H_ii to the denominator, a term eq 17 omits
    because it assumes every mu_i != 0.

    >>> large_batch_lr([1.0, -2.0], [[2.0, 0.0], [0.0, 1.0]])
    1.0
    """
    mu = finite_array("mu", mu, 1)
    return _large_batch_lr(mu, _hessian(H, mu.size))


def _large_batch_lr(mu: np.ndarray, op: Hessian, diag: np.ndarray | None = None) -> float:
    """``large_batch_lr`` of checked arguments; ``diag`` = op.diag() where the caller has it."""
    s = np.sign(mu)
    return float(np.sum(np.abs(mu)) / (op.quad_rows(s) + np.dot(1.0 - s * s, op.diag() if diag is None else diag)))


# --- Theorem 5: eq 18-19 -------------------------------------------------------------------------


def max_loss_improvement(mu, sigma, H) -> float:
    """Eq 19: Delta L_max = (sum_i mu_i^2 / sigma_i)^2 / (2 off); inf when off <= 0."""
    mu, sigma = _mu_sigma(mu, sigma)
    op = _hessian(H, mu.size)
    off = _off_diagonal(mu / sigma, op)
    s = float(np.sum(mu * mu / sigma))
    return s * s / (2.0 * off) if off > 0 else float(np.inf)


def surge_loss_improvement(B, mu, sigma, H) -> np.ndarray:
    """Eq 18: Delta L_opt(B) ~ Delta L_max / (1 + B_noise / B) for B << validity_bound.

    Computed as the first line of eq 43 divided through by B, (S^2 / pi) / (tr(H) / B + (2/pi) off),
    finite when off <= 0 (clipped to 0, as B_noise = inf; then it grows linearly in B); B = inf
    gives the limit, eq 19.
    """
    mu, sigma = _mu_sigma(mu, sigma)
    op = _hessian(H, mu.size)
    b = _batch(B)
    return _surge_loss_improvement(b, *_invariants(mu, sigma, op))


def _surge_loss_improvement(b: np.ndarray, off: float, s: float, trace: float) -> np.ndarray:
    off = max(off, 0.0)
    with np.errstate(divide="ignore"):
        return (s * s / _PI) / (trace / b + (2.0 / _PI) * off)


def validity_bound(mu, sigma) -> float:
    """min_i pi sigma_i^2 / (2 mu_i^2): Theorems 3 and 5 hold for B far below it (inf if mu = 0)."""
    mu, sigma = _mu_sigma(mu, sigma)
    return _validity_bound(mu / sigma)


def _validity_bound(r: np.ndarray) -> float:
    """``validity_bound`` from r = mu / sigma."""
    r2 = r**2
    m = float(r2.max())
    return _PI / (2.0 * m) if m > 0 else float(np.inf)


# --- McCandlish et al. (eq 1) --------------------------------------------------------------------


def sgd_optimal_lr(B: ArrayLike, G: ArrayLike, Sigma: ArrayLike, H: object) -> np.ndarray:
    """Eq 1 (McCandlish et al. 2018, eq 2.6-2.8): eps_opt(B) = eps_max / (1 + B_noise / B) for SGD,

    with eps_max = G'G / G'HG and B_noise = tr(H Sigma) / G'HG, where Sigma is the per-example
    gradient covariance: a (d, d) matrix, or a (d,) vector of variances for a diagonal one
    (for this package's problems, Sigma = sigma**2).
    """
    G = finite_array("G", G, 1)
    return _sgd_optimal_lr(B, G, Sigma, _hessian(H, G.size))


def _sgd_optimal_lr(B: ArrayLike, G: np.ndarray, Sigma: ArrayLike, op: Hessian,
                    diag: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """``sgd_optimal_lr`` of a checked G and operator; ``diag`` = op.diag() where the caller has it."""
    Sig = np.asarray(Sigma, dtype=np.float64)
    if not np.all(np.isfinite(Sig)):
        raise ValueError("Sigma has non-finite values")
    if Sig.shape == (G.size,):
        if np.any(Sig < 0):
            raise ValueError("Sigma (variances) must be >= 0")
        tr_h_sigma = float(np.dot(op.diag() if diag is None else diag, Sig))
    elif Sig.shape == (G.size, G.size):
        tr_h_sigma = op.trace_product(Sig)  # O(d^2) dense, O(d^2 k) diagonal + low rank
    else:
        raise ValueError(f"Sigma must have shape ({G.size},) or ({G.size}, {G.size}), got {Sig.shape}")
    ghg = float(op.quad_rows(G))
    if ghg <= 0:
        raise ValueError(f"G'HG must be > 0 for the SGD rule, got {ghg:.3g}")
    eps_max = float(G @ G) / ghg
    b = _batch(B)
    return eps_max / (1.0 + (tr_h_sigma / ghg) / b)


def curves(B, mu, sigma, H) -> dict[str, np.ndarray]:
    """Every closed form against B, keyed as the columns of ``sims.surge``'s results.csv:
    lr_exact (eq 9), lr_erf_approx (eq 9 with eq 10), lr_surge (eq 2), lr_sgd (eq 1 with
    Sigma = sigma^2), dl_exact (eq 8), dl_surge (eq 18). Eq 8 and 9 share one pass over the
    coordinates (the same numerator and denominator)."""
    mu, sigma = _mu_sigma(mu, sigma)
    op = _hessian(H, mu.size)
    b = _batch(B)
    num, den = _numerator_denominator(b, mu, sigma, op)
    num_approx, den_approx = _numerator_denominator(b, mu, sigma, op, approx=True)
    sums = _invariants(mu, sigma, op)  # once for eq 2 and eq 18 (the same values they compute)
    return {
        "lr_exact": num / den,
        "lr_erf_approx": num_approx / den_approx,
        "lr_surge": _surge_lr(b, *sums),
        "lr_sgd": sgd_optimal_lr(B, mu, sigma**2, op),
        "dl_exact": 0.5 * num * num / den,
        "dl_surge": _surge_loss_improvement(b, *sums),
    }


def constants(mu, sigma, H) -> dict[str, float]:
    """The problem's constants, keyed as ``sims.surge``'s summary.json: noise_batch_size (eq 14),
    peak_lr (eq 16), large_batch_lr (eq 17), validity_bound and max_loss_improvement (eq 19),
    equal to the functions of those names, with the sums they share computed once."""
    mu, sigma = _mu_sigma(mu, sigma)
    op = _hessian(H, mu.size)
    off, s, trace = _invariants(mu, sigma, op)
    return {
        "noise_batch_size": float(_PI * trace / (2.0 * off)) if off > 0 else float(np.inf),
        "peak_lr": s / (2.0 * np.sqrt(off * trace)) if off > 0 else float(np.inf),
        "large_batch_lr": large_batch_lr(mu, op),
        "validity_bound": validity_bound(mu, sigma),
        "max_loss_improvement": s * s / (2.0 * off) if off > 0 else float(np.inf),
    }



def curves_and_constants(B, mu, sigma, H, *, strict: bool = False) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """``curves(B, mu, sigma, H)`` and ``constants(mu, sigma, H)`` at once, equal to them bit for
    bit: the input checks and the sums eq 13-19 share (off, S, tr H) are computed once, and the
    independent passes over the coordinates (eq 9 with eq 35, eq 9 with eq 10, eq 1 and eq 13-19,
    eq 17) run in parallel threads (NumPy and SciPy release the GIL in their loops; each pass is
    the same sequence of operations as alone, so the values do not depend on the threads).
    ``strict``: floating-point errors in the curves raise FloatingPointError (as under
    ``np.errstate(all="raise")``); the constants keep the caller's error state."""
    from concurrent.futures import ThreadPoolExecutor

    mu, sigma = _mu_sigma(mu, sigma)
    op = _hessian(H, mu.size)
    b = _batch(B)
    caller = np.geterr()
    curve_state = {"all": "raise"} if strict else caller

    def under(state, f, *args, **kwargs):  # the error state is per thread
        with np.errstate(**state):
            return f(*args, **kwargs)

    # r = mu / sigma and the diagonal of H, shared by the passes (at d = 10^7 six passes fewer);
    # where one raises, each pass computes its own, so that the error is the one it meets alone
    r = _or_none(under, curve_state, np.divide, mu, sigma)
    diag = _or_none(under, curve_state, op.diag)

    def sums_and_sgd():
        return _invariants(mu, sigma, op, r), _sgd_optimal_lr(B, mu, sigma**2, op, diag)

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        exact = pool.submit(under, curve_state, _numerator_denominator, b, mu, sigma, op, r=r, diag=diag)
        approx = pool.submit(under, curve_state, _numerator_denominator, b, mu, sigma, op, approx=True, r=r,
                             diag=diag)  # fmt: skip
        shared = pool.submit(under, curve_state, sums_and_sgd)
        large = pool.submit(under, caller, _large_batch_lr, mu, op, diag)
        bound = (pool.submit(under, caller, validity_bound, mu, sigma) if r is None
                 else pool.submit(under, caller, _validity_bound, r))  # fmt: skip
        (num, den), (num_approx, den_approx) = exact.result(), approx.result()
        sums, sgd = shared.result()
        large_batch, bound_value = large.result(), bound.result()
    with np.errstate(**curve_state):
        lines = {
            "lr_exact": num / den,
            "lr_erf_approx": num_approx / den_approx,
            "lr_surge": _surge_lr(b, *sums),
            "lr_sgd": sgd,
            "dl_exact": 0.5 * num * num / den,
            "dl_surge": _surge_loss_improvement(b, *sums),
        }
    off, s, trace = sums
    scalars = {
        "noise_batch_size": float(_PI * trace / (2.0 * off)) if off > 0 else float(np.inf),
        "peak_lr": s / (2.0 * np.sqrt(off * trace)) if off > 0 else float(np.inf),
        "large_batch_lr": large_batch,
        "validity_bound": bound_value,
        "max_loss_improvement": s * s / (2.0 * off) if off > 0 else float(np.inf),
    }
    return lines, scalars


def _or_none(f, *args):
    """``f(*args)``, or None where it raises a floating-point error."""
    try:
        return f(*args)
    except FloatingPointError:
        return None


# --- Section 3.2: estimating B_noise and eps_max from a grid (eq 22-24) ---------------------------


def fit_noise_batch_size(S, E) -> tuple[float, float, float]:
    """Eq 22: least-squares line 1/S = -B_noise (1/E) + 1/S_min through (1/E, 1/S) points.

    S and E are steps and examples to reach one target loss, one pair per batch size (at its
    optimal learning rate). Eq 20 (S/S_min - 1)(E/E_min - 1) = 1 rearranges to
    S_min/S + E_min/E = 1 (Appendix G), so B_noise = E_min/S_min is minus the slope.

    Returns:
        (B_noise, S_min, E_min).
    """
    S = np.asarray(S, dtype=np.float64).ravel()
    E = np.asarray(E, dtype=np.float64).ravel()
    if S.shape != E.shape:
        raise ValueError(f"S and E must have the same length, got {S.size} and {E.size}")
    if S.size < 2:
        raise ValueError(f"need at least 2 (S, E) points, got {S.size}")
    if not (np.all(np.isfinite(S)) and np.all(np.isfinite(E)) and np.all(S > 0) and np.all(E > 0)):
        raise ValueError("S and E must be finite and > 0")
    if np.ptp(1.0 / E) == 0:
        raise ValueError("all E are equal: the slope of 1/S on 1/E is undefined")
    fit = stats.linregress(1.0 / E, 1.0 / S)
    b_noise = -float(fit.slope)
    s_min = 1.0 / float(fit.intercept)
    return b_noise, s_min, b_noise * s_min


def estimate_peak_lr(B, lr, noise_batch_size, rule: str = "adam", alpha: float = 1.0) -> float:
    """Eq 23 (rule="adam"): E[eps_opt / 2 (sqrt(B_noise/B) + sqrt(B/B_noise))];
    eq 24 (rule="sgd"): E[eps_opt (1 + B_noise/B)^alpha] (alpha = 1: SGD, 0.5: McCandlish's Adam).

    B and lr are the grid's batch sizes and their optimal learning rates.
    """
    b = _batch(B).ravel()
    lr = np.asarray(lr, dtype=np.float64).ravel()
    if lr.shape != b.shape:
        raise ValueError(f"B and lr must have the same length, got {b.size} and {lr.size}")
    bn = float(noise_batch_size)
    if not (np.isfinite(bn) and bn > 0):
        raise ValueError(f"noise_batch_size must be finite and > 0, got {bn}")
    if rule == "adam":
        return float(np.mean(lr / 2.0 * (np.sqrt(bn / b) + np.sqrt(b / bn))))
    if rule == "sgd":
        return float(np.mean(lr * (1.0 + bn / b) ** alpha))
    raise ValueError(f"rule must be 'adam' or 'sgd', got {rule!r}")


# Correlated gradient noise (Lemma 1 with the exact E[V V'] of correlated signs): see
# surgesim.correlated and docs/correlated-noise.md.
from .correlated import (  # noqa: E402
    noise_batch_size_correlated,
    optimal_lr_correlated,
    sign_moments,
    surge_lr_correlated,
)
