"""Sign updates under correlated gradient noise: exact E[V] and E[VV'] and Lemma 1's optimal
learning rate when per-example gradients are N(mu, Sigma) with a full covariance.

Li et al. 2024 (https://arxiv.org/abs/2405.14578) assume independent coordinates, so that
cov(V) = diag(1 - E^2) (eq 36). Here the batch mean is N(mu, Sigma / B) with any covariance.
Write s_i = sqrt(Sigma_ii), r_i = mu_i / s_i, h_i = sqrt(B) r_i and rho_ij = Sigma_ij / (s_i s_j).
Then (derivation: docs/correlated-noise.md)

    E[V_i]     = erf(h_i / sqrt(2))                           (eq 35, unchanged: marginals only)
    E[V_i V_j] = 1 - 2 P(X_i, X_j of opposite signs)
               = 1 - 4 (T(h_i, a_ij) + T(h_j, a_ji) + beta_ij),  a_ij = (h_j - rho_ij h_i) / (h_i sqrt(1 - rho_ij^2))

with Owen's T function T (scipy.special.owens_t) and beta_ij = 1/2 when h_i h_j < 0, else 0
(Owen 1956, "Tables for computing bivariate normal probabilities", Ann. Math. Stat. 27). Lemma 1
(eq 6) then gives eps_opt = mu'E[V] / tr(H E[VV']) exactly. For zero means E[V_i V_j] reduces to
the arcsine law (2/pi) asin(rho_ij) (Sheppard); expanding to first order in B gives the
correlated surge, eq 13 with tr(H) -> tr(H (2/pi) asin(R)) and a modified off-diagonal sum
(``surge_lr_correlated``, ``noise_batch_size_correlated``).

Sigma is given as a dense (d, d) covariance, a (d,) vector of variances (diagonal: the paper's
setting), or a pair (D, F) meaning Sigma = diag(D) + F F' (``Covariance``). A correlation of
exactly 0 means independence for jointly Gaussian coordinates, so such pairs cost nothing; a
diagonal H makes the correlations irrelevant to eps_opt (tr(H E[VV']) = tr(H)). Otherwise the cost
is O(d^2) Owen's T evaluations per batch size (about 0.2 s per batch size at d = 1000).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import special

from .hessian import Hessian, as_hessian, finite_array

__all__ = [
    "Covariance",
    "as_covariance",
    "sign_correlation",
    "orthant_probability",
    "sign_moments",
    "optimal_lr_correlated",
    "noise_batch_size_correlated",
    "surge_lr_correlated",
]

_PI = np.pi
_PAIR_BLOCK = 1 << 20  # (row, column) pairs handled at once: bounds the memory of the pair sums


# --- the covariance --------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Covariance:
    """A per-example gradient covariance: ``dense`` (d, d), or diag(``diag``) + ``factor`` ``factor``'.

    Build it with ``as_covariance``, which validates. ``sd`` holds s_i = sqrt(Sigma_ii) > 0.
    """

    sd: np.ndarray
    dense: np.ndarray | None = None
    diag: np.ndarray | None = None
    factor: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return self.sd.size

    @property
    def is_diagonal(self) -> bool:
        """True when every correlation is 0: the paper's independent setting."""
        if self.dense is not None:
            return not np.any(self.dense - np.diag(np.diagonal(self.dense)))
        return self.factor is None or not np.any(self.factor)

    def correlation_rows(self, i0: int, i1: int) -> np.ndarray:
        """Rows i0 .. i1 - 1 of the correlation matrix R = Sigma / (s s'), clipped to [-1, 1]."""
        rows = np.arange(i0, i1)
        if self.dense is not None:
            c = self.dense[i0:i1] / (self.sd[i0:i1, None] * self.sd[None, :])
        elif self.factor is not None:
            c = (self.factor[i0:i1] @ self.factor.T) / (self.sd[i0:i1, None] * self.sd[None, :])
        else:
            c = np.zeros((i1 - i0, self.dim))
        c = np.clip(c, -1.0, 1.0)
        c[rows - i0, rows] = 1.0
        return c

    def to_dense(self) -> np.ndarray:
        if self.dense is not None:
            return self.dense.copy()
        out = np.diag(self.sd * self.sd) if self.diag is None else np.diag(self.diag)
        if self.factor is not None:
            out = out + self.factor @ self.factor.T
        return out


def as_covariance(Sigma, d: int | None = None) -> Covariance:
    """Validate a covariance given as (d,) variances, a dense (d, d) matrix, a pair (D, F) with
    Sigma = diag(D) + F F', or a ``Covariance``; ``d`` (if given) is the required dimension.

    A dense Sigma must be symmetric (to 1e-10 of its largest entry) and positive semi-definite
    (smallest eigenvalue >= -1e-10 d max|Sigma|); D must be >= 0. Every variance must be > 0.

    >>> as_covariance(([1.0, 1.0], [[1.0], [1.0]])).correlation_rows(0, 1)  # rho = 1 / 2
    array([[1. , 0.5]])
    """
    if isinstance(Sigma, Covariance):
        cov = Sigma
    elif isinstance(Sigma, tuple | list) and len(Sigma) == 2 and np.ndim(Sigma[0]) == 1 and np.ndim(Sigma[1]) == 2:
        D = finite_array("Sigma's diagonal part D", Sigma[0], 1)
        F = finite_array("Sigma's factor F", Sigma[1], 2)
        if F.shape[0] != D.size:
            raise ValueError(f"Sigma's factor F must have shape ({D.size}, k), got {F.shape}")
        if np.any(D < 0):
            raise ValueError(f"Sigma's diagonal part D must be >= 0, min is {D.min():.3g} at index {int(np.argmin(D))}")
        cov = Covariance(sd=np.sqrt(D + np.einsum("ik,ik->i", F, F)), diag=D, factor=F)
    else:
        arr = np.asarray(Sigma, dtype=np.float64)
        if arr.ndim == 1:
            var = finite_array("Sigma (variances)", arr, 1)
            cov = Covariance(sd=np.sqrt(np.maximum(var, 0.0)), diag=var)
            if np.any(var <= 0):
                raise ValueError(
                    f"Sigma's variances must be > 0, min is {var.min():.3g} at index {int(np.argmin(var))}"
                )
        elif arr.ndim == 2:
            m = finite_array("Sigma", arr, 2)
            if m.shape[0] != m.shape[1]:
                raise ValueError(f"Sigma must be square, got shape {m.shape}")
            scale = max(float(np.max(np.abs(m))), np.finfo(float).tiny)
            asym = float(np.max(np.abs(m - m.T)))
            if asym > 1e-10 * scale:
                raise ValueError(
                    f"Sigma must be symmetric: max |Sigma - Sigma'| = {asym:.3g} (max |Sigma| = {scale:.3g})"
                )
            m = 0.5 * (m + m.T)
            lo = float(np.linalg.eigvalsh(m)[0])
            if lo < -1e-10 * scale * m.shape[0]:
                raise ValueError(f"Sigma must be positive semi-definite: smallest eigenvalue {lo:.3g}")
            cov = Covariance(sd=np.sqrt(np.maximum(np.diagonal(m), 0.0)), dense=m)
        else:
            raise TypeError(
                "Sigma must be (d,) variances, a (d, d) covariance or a pair (D, F) meaning "
                f"diag(D) + F F', got {type(Sigma).__name__} with shape {np.shape(Sigma)}"
            )
    if np.any(cov.sd <= 0):
        i = int(np.argmin(cov.sd))
        raise ValueError(f"Sigma's variances must be > 0, Sigma[{i}, {i}] = {cov.sd[i] ** 2:.3g}")
    if d is not None and cov.dim != d:
        raise ValueError(f"Sigma has dimension {cov.dim} but mu has {d}")
    return cov


# --- two coordinates: orthant probabilities ---------------------------------------------------------


def _owens_t(h: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Owen's T(h, a), with T(+-inf, a) = 0 also where a is nan (a = inf / inf)."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(h), 0.0, special.owens_t(np.where(np.isinf(h), 0.0, h), np.nan_to_num(a, nan=0.0)))


def sign_correlation(h, k, rho) -> np.ndarray:
    """E[sign(Z1 + h) sign(Z2 + k)] for standard normals Z1, Z2 with correlation rho (broadcast).

    With P(Z1 > -h, Z2 > -k) = Phi2(h, k; rho) = (Phi(h) + Phi(k)) / 2 - T(h, a_h) - T(k, a_k) - beta
    (Owen 1956), a_h = (k - rho h) / (h sqrt(1 - rho^2)), a_k likewise, beta = 1/2 if h k < 0:

        E = 4 Phi2 - 2 Phi(h) - 2 Phi(k) + 1 = 1 - 4 (T(h, a_h) + T(k, a_k) + beta).

    At h = 0 (the limit h -> 0 of the same formula): E = 4 T(k, rho / sqrt(1 - rho^2)), which at
    k = 0 is Sheppard's arcsine law (2/pi) asin(rho). |rho| = 1 uses the degenerate laws
    (Z2 = +-Z1). Absolute error about 1e-16 (Owen's T is computed to double precision); h, k may
    be infinite (B = inf).

    >>> round(float(sign_correlation(0.0, 0.0, 0.5)), 12)  # (2/pi) asin(1/2) = 1/3
    0.333333333333
    """
    h, k, rho = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (h, k, rho)))
    if np.any(np.isnan(h)) or np.any(np.isnan(k)) or np.any(np.isnan(rho)):
        raise ValueError("h, k and rho must not be nan")
    if np.any(np.abs(rho) > 1):
        raise ValueError(f"rho must be in [-1, 1], got {rho[np.abs(rho) > 1].ravel()[0]!r}")
    inner = np.abs(rho) < 1
    q = np.sqrt(np.where(inner, 1.0 - rho * rho, 1.0))
    out = np.empty(h.shape)
    h0 = inner & (h == 0)
    k0 = inner & (k == 0) & ~h0
    gen = inner & ~h0 & ~k0
    out[h0] = 4.0 * _owens_t(k[h0], rho[h0] / q[h0])
    out[k0] = 4.0 * _owens_t(h[k0], rho[k0] / q[k0])
    hg, kg, rg, qg = h[gen], k[gen], rho[gen], q[gen]
    with np.errstate(invalid="ignore", over="ignore"):
        a_h = (kg - rg * hg) / (hg * qg)
        a_k = (hg - rg * kg) / (kg * qg)
    beta = np.where(np.signbit(hg) != np.signbit(kg), 0.5, 0.0)
    out[gen] = 1.0 - 4.0 * (_owens_t(hg, a_h) + _owens_t(kg, a_k) + beta)
    # Degenerate: rho = 1 means Z2 = Z1, the signs differ for Z between -max(h, k) and -min(h, k);
    # rho = -1 means Z2 = -Z1, they differ for Z > max(-h, k) or Z < min(-h, k).
    p1, m1 = rho >= 1, rho <= -1
    out[p1] = 1.0 - 2.0 * np.abs(special.ndtr(h[p1]) - special.ndtr(k[p1]))
    out[m1] = 1.0 - 2.0 * (special.ndtr(np.minimum(h[m1], -k[m1])) + special.ndtr(np.minimum(-h[m1], k[m1])))
    return out


def orthant_probability(h, k, rho) -> np.ndarray:
    """P(Z1 > -h, Z2 > -k) = Phi2(h, k; rho), the bivariate normal CDF, from ``sign_correlation``:
    P(V1 = V2 = +1) = E[(1 + V1)(1 + V2)] / 4 with V = sign(Z + (h, k)).

    >>> round(float(orthant_probability(0.0, 0.0, 0.0)), 12)
    0.25
    """
    return 0.25 * (
        1.0
        + special.erf(np.asarray(h, float) / np.sqrt(2.0))
        + special.erf(np.asarray(k, float) / np.sqrt(2.0))
        + sign_correlation(h, k, rho)
    )


# --- d coordinates ---------------------------------------------------------------------------------


def _mu(mu) -> np.ndarray:
    return finite_array("mu", mu, 1)


def _batch(B) -> np.ndarray:
    b = np.asarray(B, dtype=np.float64)
    if np.any(np.isnan(b)) or np.any(b < 1):
        raise ValueError(f"batch size B must be >= 1, got {np.min(b) if b.size else b}")
    return b


def _scaled(b: float, r: np.ndarray) -> np.ndarray:
    """h = sqrt(B) r, with h = 0 where r = 0 (also for B = inf)."""
    with np.errstate(invalid="ignore"):
        return np.where(r == 0, 0.0, np.sqrt(b) * r)


def _hessian(H, d: int) -> Hessian:
    op = as_hessian(H)
    if op.dim != d:
        raise ValueError(f"H has dimension {op.dim} but mu has {d}")
    return op


def _correlated_pairs(cov: Covariance, op: Hessian | None) -> Iterator[tuple[np.ndarray, ...]]:
    """Blocks of pairs i < j with rho_ij != 0 (and H_ij != 0 when ``op`` is given):
    (i, j, rho_ij, H_ij) as flat arrays (H_ij = 1 when ``op`` is None)."""
    d = cov.dim
    if cov.is_diagonal or (op is not None and op.is_diagonal):
        return
    rows = max(1, _PAIR_BLOCK // d)
    for i0 in range(0, d - 1, rows):
        i1 = min(d, i0 + rows)
        R = cov.correlation_rows(i0, i1)
        keep = (np.arange(d)[None, :] > np.arange(i0, i1)[:, None]) & (R != 0)
        Hr = None
        if op is not None:
            Hr = op.rows(i0, i1)
            keep &= Hr != 0
        ii, jj = np.nonzero(keep)
        if ii.size:
            yield ii + i0, jj, R[ii, jj], (np.ones(ii.size) if Hr is None else Hr[ii, jj])


def sign_moments(B, mu, Sigma) -> tuple[np.ndarray, np.ndarray]:
    """(E[V] (d,), E[VV'] (d, d)) for V = sign(batch mean), batch mean ~ N(mu, Sigma / B).

    E[V_i] = erf(sqrt(B/2) mu_i / s_i) (eq 35 with s_i = sqrt(Sigma_ii)); the diagonal of E[VV']
    is 1; off the diagonal E[V_i V_j] = ``sign_correlation(h_i, h_j, rho_ij)``, h = sqrt(B) mu / s,
    and E[V_i] E[V_j] where rho_ij = 0. With a diagonal Sigma this is the paper's eq 35-36:
    cov(V) = diag(1 - E^2). One batch size B >= 1 (B = inf gives the limit).

    >>> E, M = sign_moments(1.0, [0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]])
    >>> round(float(M[0, 1]), 12)  # arcsine law: (2/pi) asin(1/2) = 1/3
    0.333333333333
    """
    mu = _mu(mu)
    cov = as_covariance(Sigma, mu.size)
    b = _batch(B)
    if b.ndim != 0:
        raise ValueError(f"sign_moments takes one batch size, got shape {b.shape}")
    h = _scaled(float(b), mu / cov.sd)
    E = special.erf(h / np.sqrt(2.0))
    M = np.outer(E, E)
    np.fill_diagonal(M, 1.0)
    for i, j, rho, _ in _correlated_pairs(cov, None):
        M[i, j] = M[j, i] = sign_correlation(h[i], h[j], rho)
    return E, M


def optimal_lr_correlated(B, mu, Sigma, H) -> np.ndarray:
    """Lemma 1 (eq 6) with correlated signs: eps_opt(B) = mu'E[V] / tr(H E[VV']), exactly.

    tr(H E[VV']) = sum_i (1 - E_i^2) H_ii + E'HE + sum_{i != j} H_ij cov(V_i, V_j): eq 9's
    denominator plus the sign covariances of correlated pairs (``sign_moments``). Equals
    ``theory.optimal_lr`` (eq 9) when Sigma is diagonal (with sigma = sqrt(diag Sigma)), and does
    not depend on the correlations at all when H is diagonal. Vectorised over B (any shape).

    >>> float(optimal_lr_correlated(1e12, [1.0, 1.0], [[1.0, 0.9], [0.9, 1.0]], np.eye(2)))  # eq 17
    1.0
    """
    mu = _mu(mu)
    cov = as_covariance(Sigma, mu.size)
    op = _hessian(H, mu.size)
    b = _batch(B)
    flat = b.ravel()
    r = mu / cov.sd
    hdiag = op.diag()
    E = np.stack([special.erf(_scaled(x, r) / np.sqrt(2.0)) for x in flat])  # (nB, d)
    num = E @ mu
    den = (1.0 - E * E) @ hdiag + op.quad_rows(E)
    for i, j, rho, hij in _correlated_pairs(cov, op):
        for n, x in enumerate(flat):
            hb = _scaled(x, r)
            c = sign_correlation(hb[i], hb[j], rho) - E[n, i] * E[n, j]
            den[n] += 2.0 * np.dot(hij, c)
    return (num / den).reshape(b.shape)


def _small_batch_terms(mu, Sigma, H) -> tuple[float, float, float]:
    """(A, C, S) of the small-B expansion tr(H E[VV']) = A + B C + O(B^2), mu'E[V] = sqrt(2B/pi) S:

    A = tr(H) + (2/pi) sum_{i != j} H_ij asin(rho_ij)                       (arcsine law)
    C = (1/pi) sum_{i != j} H_ij (2 r_i r_j - rho_ij (r_i^2 + r_j^2)) / sqrt(1 - rho_ij^2)
    S = sum_i mu_i r_i = sum_i mu_i^2 / s_i                                 (as in eq 13)
    """
    mu = _mu(mu)
    cov = as_covariance(Sigma, mu.size)
    op = _hessian(H, mu.size)
    r = mu / cov.sd
    a = op.trace()
    c = 2.0 / _PI * op.quad_off_diagonal(r)  # the rho = 0 terms: (2/pi) sum_{i != j} H_ij r_i r_j
    for i, j, rho, hij in _correlated_pairs(cov, op):
        if np.any(np.abs(rho) >= 1):
            raise ValueError(
                "the small-B expansion needs |rho_ij| < 1 wherever H_ij != 0 (it is not "
                "analytic at |rho| = 1); use optimal_lr_correlated"
            )
        ri, rj = r[i], r[j]
        w = hij / np.sqrt(1.0 - rho * rho)
        a += 2.0 * (2.0 / _PI) * np.dot(hij, np.arcsin(rho))
        # the pair's term minus the rho = 0 term already in c (both counted twice: i < j and j < i)
        c += 2.0 / _PI * np.sum(w * (2.0 * ri * rj - rho * (ri * ri + rj * rj)) - 2.0 * hij * ri * rj)
    return float(a), float(c), float(np.sum(mu * r))


def noise_batch_size_correlated(mu, Sigma, H) -> float:
    """Eq 14 with correlated noise: B_noise = A / C, the peak of ``surge_lr_correlated``.

    A = tr(H (2/pi) asin(R)) and C = (1/pi) sum_{i != j} H_ij (2 r_i r_j - rho_ij (r_i^2 + r_j^2))
    / sqrt(1 - rho_ij^2), r_i = mu_i / sqrt(Sigma_ii). With rho = 0 this is eq 14,
    pi tr(H) / (2 sum_{i != j} r_i r_j H_ij). inf when C <= 0 (no peak in the small-B regime).
    Valid when B_noise r_i^2 << 1 - rho_ij^2 as well as << 1 (docs/correlated-noise.md).

    >>> round(noise_batch_size_correlated([1.0, 1.0], [100.0, 100.0], [[1.0, 0.5], [0.5, 1.0]]), 9)  # eq 14
    314.159265359
    """
    a, c, _ = _small_batch_terms(mu, Sigma, H)
    return a / c if c > 0 else float(np.inf)


def surge_lr_correlated(B, mu, Sigma, H) -> np.ndarray:
    """Eq 13 with correlated noise: eps_opt(B) ~ sqrt(2B/pi) S / (A + B C) for small B, i.e.
    eps_max / (1/2 (sqrt(B_noise / B) + sqrt(B / B_noise))) with B_noise = A / C and
    eps_max = sqrt(2/pi) S / (2 sqrt(A C)).

    A, C as in ``noise_batch_size_correlated``, S = sum_i mu_i^2 / s_i. C <= 0 is clipped to 0
    (B_noise = inf, the square-root rule eq 4), as ``theory.surge_lr`` does. Equals eq 13 when
    Sigma is diagonal.
    """
    a, c, s = _small_batch_terms(mu, Sigma, H)
    sqrt_b = np.sqrt(_batch(B))
    den = a / sqrt_b + (c * sqrt_b if c > 0 else 0.0)
    with np.errstate(divide="ignore"):
        return np.sqrt(2.0 / _PI) * s / den
