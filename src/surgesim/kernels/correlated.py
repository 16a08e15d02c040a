"""Numba kernels for one sign-SGD step beyond the paper's noise model: per-trial a_t = mu'V_t and
b_t = V_t'HV_t (as ``onestep.trial_moments``) for

- correlated Gaussian noise (``gaussian_noise``): the batch mean is exactly N(mu, Sigma / B),
  drawn as mu + (c * z + L w) / sqrt(B) with Sigma = diag(c^2) + L L' (a diagonal + low-rank pair
  (D, F) gives c = sqrt(D), L = F; a dense Sigma its Cholesky factor, or an eigen-factor when
  it is singular). Normal i of z is element i % 2 of Box-Muller pair i // 2, as in
  ``onestep``'s BATCH_MEAN sampler, so a diagonal Sigma reproduces that sampler's signs exactly;
  w follows in the next ceil(k / 2) pairs (from pair 0 when c = 0).
- non-Gaussian per-example gradients (``law_noise``): g_e = mu_i + sigma_i s_i W_ie for the B
  examples e of coordinate i, W standardised (mean 0, variance 1), s_i = sign(mu_i) (+1 at 0):

  * ``student_t``: Student's t with nu > 2 degrees of freedom, scaled by sqrt((nu - 2) / nu)
    (Bailey's polar method, Math. Comp. 62 (1994) 779-781: exact for any real nu, 4/pi pairs of
    uniforms per draw, from its own sub-stream ``derive_key(key, j)``);
  * ``laplace``: Laplace with scale 1/sqrt(2), by inversion of one uniform;
  * ``two_point``: sqrt((1 - p)/p) with probability p, else -sqrt(p/(1 - p)): sparse spikes
    along sign(mu_i) on a small opposite background (skewness (1 - 2p)/sqrt(p (1 - p))).

  Draw j = i * B + e is word j of the trial's stream (index as ``onestep``'s PER_EXAMPLE), so
  the cost is B d draws per trial: at d = 1000, B = 1000 and 10,000 trials, 10^10 draws (minutes).
  The direction s_i matters only for the skewed two-point law (the others are symmetric).

Trial t of batch size B uses the stream ``derive_key(onestep.batch_key(seed, B), t)``: results
are pure functions of (seed, B, t, noise model), whatever the thread count or the chunking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import prange
from numpy.typing import ArrayLike

from .._jit import jit, jit_inline, jit_parallel
from ..correlated import as_covariance
from ..hessian import as_hessian
from ..rng import derive_key, normal_pair, probability_threshold, random_bits, uniform
from .onestep import batch_key, quad_rows_f32, row_moments

__all__ = [
    "GAUSSIAN",
    "STUDENT_T",
    "LAPLACE",
    "TWO_POINT",
    "LAWS",
    "Noise",
    "gaussian_noise",
    "law_noise",
    "law_moments",
    "law_samples",
    "moments",
    "signs",
]

GAUSSIAN, STUDENT_T, LAPLACE, TWO_POINT = 0, 1, 2, 3
LAWS = {"student_t": STUDENT_T, "laplace": LAPLACE, "two_point": TWO_POINT}
DEFAULT_SHAPE = {"student_t": 3.0, "laplace": 0.0, "two_point": 0.01}

_CHUNK = 16  # trials per parallel work item (each owns one scratch row)
_BLOCK = 1 << 14  # trials per kernel call (bounds the scratch memory)
_SQRT_HALF = np.sqrt(0.5)
_TWO_M53 = 2.0**-53
_S11 = np.uint64(11)


@dataclass(frozen=True, eq=False)
class Noise:
    """A noise model for the kernels. Build it with ``gaussian_noise`` or ``law_noise``.

    ``mode``: GAUSSIAN or a law code; ``shape``: nu (student_t), p (two_point), unused otherwise;
    ``c`` (d,): the diagonal noise scale (GAUSSIAN: sqrt of Sigma's diagonal part; laws: sigma);
    ``L`` (d, k): the correlated factor (k = 0 for laws); ``lower``: L is lower triangular.
    """

    mode: int
    shape: float
    c: np.ndarray
    L: np.ndarray
    lower: bool
    label: str

    @property
    def dim(self) -> int:
        return self.c.size


def gaussian_noise(Sigma) -> Noise:
    """Correlated Gaussian per-example gradients with covariance Sigma (any form accepted by
    ``surgesim.correlated.as_covariance``): the batch mean is drawn as N(mu, Sigma / B) exactly."""
    cov = as_covariance(Sigma)
    d = cov.dim
    if cov.is_diagonal:
        return Noise(GAUSSIAN, 0.0, cov.sd.copy(), np.zeros((d, 0)), False, "gaussian (diagonal)")
    if cov.dense is None:
        if cov.diag is None or cov.factor is None:
            raise ValueError("a correlated Covariance without its dense form needs diag and factor (as_covariance)")
        return Noise(GAUSSIAN, 0.0, np.sqrt(cov.diag), np.ascontiguousarray(cov.factor), False, "gaussian (D, F)")
    try:
        L = np.linalg.cholesky(cov.dense)
        lower = True
    except np.linalg.LinAlgError:  # singular: any L with L L' = Sigma will do
        w, Q = np.linalg.eigh(cov.dense)
        L = Q * np.sqrt(np.maximum(w, 0.0))
        lower = False
    return Noise(GAUSSIAN, 0.0, np.zeros(d), np.ascontiguousarray(L), lower, "gaussian (dense)")


def law_noise(law: str, sigma, shape: float | None = None) -> Noise:
    """Independent non-Gaussian per-example gradients with standard deviations ``sigma`` (d,):
    ``law`` in LAWS, ``shape`` = nu > 2 (student_t, default 3) or p in (0, 1) (two_point,
    default 0.01); laplace has no shape."""
    if law not in LAWS:
        raise ValueError(f"law must be one of {sorted(LAWS)}, got {law!r}")
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.ndim != 1 or sigma.size == 0 or not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
        raise ValueError(f"sigma must be a non-empty 1-d array of finite values > 0, got shape {sigma.shape}")
    s = DEFAULT_SHAPE[law] if shape is None else float(shape)
    if law == "student_t" and not (s > 2 and np.isfinite(s)):
        raise ValueError(f"student_t needs nu > 2 (finite variance), got nu = {s!r}")
    if law == "two_point" and not 0 < s < 1:
        raise ValueError(f"two_point needs p in (0, 1), got p = {s!r}")
    if law == "laplace" and shape is not None:
        raise ValueError(f"laplace has no shape parameter, got {shape!r}")
    label = {"student_t": f"student-t (nu = {s:g})", "laplace": "laplace", "two_point": f"two-point (p = {s:g})"}[law]
    return Noise(LAWS[law], s, np.ascontiguousarray(sigma), np.zeros((sigma.size, 0)), False, label)


def law_moments(law: str, shape: float | None = None) -> dict[str, float]:
    """Mean, variance, skewness and excess kurtosis of a standardised law W (exact; kurtosis inf
    for student_t with nu <= 4)."""
    law_noise(law, [1.0], shape)  # validates
    s = DEFAULT_SHAPE[law] if shape is None else float(shape)
    if law == "student_t":
        return {"mean": 0.0, "var": 1.0, "skew": 0.0, "excess_kurtosis": 6.0 / (s - 4.0) if s > 4 else np.inf}
    if law == "laplace":
        return {"mean": 0.0, "var": 1.0, "skew": 0.0, "excess_kurtosis": 3.0}
    pq = s * (1.0 - s)
    return {"mean": 0.0, "var": 1.0, "skew": (1.0 - 2.0 * s) / math.sqrt(pq), "excess_kurtosis": (1.0 - 6.0 * pq) / pq}


# --- kernels ---------------------------------------------------------------------------------------


@jit_inline
def _open_uniform(bits):
    """A double in (0, 1) from the top 53 bits of a word: (k + 1/2) 2^-53."""
    return (np.float64(bits >> _S11) + 0.5) * _TWO_M53


@jit_inline
def law_draw(law, shape, thr, key, j):
    """Standardised draw number j of stream ``key`` (``thr``: the two-point threshold of p)."""
    if law == LAPLACE:
        u = _open_uniform(random_bits(key, j))
        if u < 0.5:
            return np.log(2.0 * u) * _SQRT_HALF
        return -np.log(2.0 - 2.0 * u) * _SQRT_HALF
    if law == TWO_POINT:
        if random_bits(key, j) < thr:
            return np.sqrt((1.0 - shape) / shape)
        return -np.sqrt(shape / (1.0 - shape))
    # STUDENT_T, Bailey's polar method: (U, V) uniform in the unit disc, W = U^2 + V^2,
    # T = U sqrt(nu (W^(-2/nu) - 1) / W); standardised by sqrt((nu - 2) / nu).
    kj = derive_key(key, j)
    c = np.uint64(0)
    while True:
        u = 2.0 * uniform(kj, c) - 1.0
        v = 2.0 * uniform(kj, c + np.uint64(1)) - 1.0
        c += np.uint64(2)
        w = u * u + v * v
        if 0.0 < w <= 1.0:
            return u * np.sqrt((shape - 2.0) * (w ** (-2.0 / shape) - 1.0) / w)


@jit_inline
def _gaussian_signs(key, B, mu, c, L, lower, z, row):
    """row = sign(mu + (c * zd + L w) / sqrt(B)) (module docstring for the stream layout)."""
    d = mu.shape[0]
    k = L.shape[1]
    scale = 1.0 / np.sqrt(np.float64(B))
    has_diag = False
    for i in range(d):
        if c[i] != 0.0:
            has_diag = True
            break
    off = (d + 1) // 2 if has_diag else 0
    for m in range((k + 1) // 2):
        w0, w1 = normal_pair(key, off + m)
        z[2 * m] = w0
        if 2 * m + 1 < k:
            z[2 * m + 1] = w1
    for i in range(0, d, 2):
        z0 = 0.0
        z1 = 0.0
        if has_diag:
            z0, z1 = normal_pair(key, i // 2)
        for q in range(2):
            ii = i + q
            if ii >= d:
                break
            x = mu[ii] + c[ii] * scale * (z0 if q == 0 else z1)
            if k > 0:
                acc = 0.0
                top = min(k, ii + 1) if lower else k
                for m in range(top):
                    acc += L[ii, m] * z[m]
                x += scale * acc
            row[ii] = np.sign(x)


@jit_inline
def _law_signs(law, shape, key, B, mu, sigma, row):
    """row = sign(batch mean of B per-example draws mu_i + sigma_i s_i W_ie)."""
    d = mu.shape[0]
    nb = np.int64(B)
    thr = probability_threshold(shape) if law == TWO_POINT else np.uint64(0)
    for i in range(d):
        acc = 0.0
        for e in range(nb):
            acc += law_draw(law, shape, thr, key, np.int64(i) * nb + e)
        s = -1.0 if mu[i] < 0.0 else 1.0
        row[i] = np.sign(nb * mu[i] + sigma[i] * s * acc)  # sign of B times the batch mean


@jit_inline
def _signs_into(mode, shape, key, B, mu, c, L, lower, z, row):
    if mode == GAUSSIAN:
        _gaussian_signs(key, B, mu, c, L, lower, z, row)
    else:
        _law_signs(mode, shape, key, B, mu, c, row)


@jit_parallel
def _trial_moments(mode, shape, key_b, t0, B, mu, c, L, lower, h, Ut, out_a, out_b, work, zwork):
    """a_t = mu'V_t, b_t = V_t'(diag(h) + Ut'Ut)V_t for trials t0 .. t0 + n - 1 (Ut: (k, d),
    C-contiguous, as in ``onestep.trial_moments``)."""
    n = out_a.shape[0]
    for ch in prange((n + _CHUNK - 1) // _CHUNK):
        row = work[ch]
        z = zwork[ch]
        for t in range(ch * _CHUNK, min(n, (ch + 1) * _CHUNK)):
            _signs_into(mode, shape, derive_key(key_b, t0 + t), B, mu, c, L, lower, z, row)
            out_a[t], out_b[t] = row_moments(row, mu, h, Ut)


@jit_parallel
def _trial_signs(mode, shape, key_b, t0, B, mu, c, L, lower, out_v, zwork):
    """V_t (rows of ``out_v``, float32) for trials t0 .. t0 + n - 1."""
    n = out_v.shape[0]
    for ch in prange((n + _CHUNK - 1) // _CHUNK):
        z = zwork[ch]
        for t in range(ch * _CHUNK, min(n, (ch + 1) * _CHUNK)):
            _signs_into(mode, shape, derive_key(key_b, t0 + t), B, mu, c, L, lower, z, out_v[t])


@jit
def _fill_law(law, shape, key, out):
    thr = probability_threshold(shape) if law == TWO_POINT else np.uint64(0)
    for j in range(out.shape[0]):
        out[j] = law_draw(law, shape, thr, key, j)


# --- Python wrappers ---------------------------------------------------------------------------------


def _check(noise: Noise, B, mu, trials: int, start: int) -> tuple[int, np.ndarray]:
    if isinstance(B, bool | np.bool_) or not float(B).is_integer() or B < 1:
        raise ValueError(f"batch size B must be an integer >= 1, got {B!r}")
    if noise.mode != GAUSSIAN and B > 1 << 20:
        raise ValueError(f"per-example laws draw B values per coordinate; B = {B} is too large")
    mu = np.ascontiguousarray(mu, dtype=np.float64)
    if mu.shape != (noise.dim,) or not np.all(np.isfinite(mu)):
        raise ValueError(f"mu must be finite with shape ({noise.dim},), got shape {mu.shape}")
    if int(trials) != trials or trials < 1 or int(start) != start or start < 0:
        raise ValueError(f"trials must be an integer >= 1 and start >= 0, got {trials!r}, {start!r}")
    return int(B), mu


def _scratch(noise: Noise, n: int) -> np.ndarray:
    return np.empty(((n + _CHUNK - 1) // _CHUNK, max(noise.L.shape[1], 1)))


def signs(noise: Noise, B: int, mu, trials: int, seed: int, start: int = 0) -> np.ndarray:
    """V for trials start .. start + trials - 1, shape (trials, d), float32 (entries -1, 0, 1)."""
    B, mu = _check(noise, B, mu, trials, start)
    key = batch_key(seed, B)
    out = np.empty((int(trials), noise.dim), dtype=np.float32)
    for s in range(0, int(trials), _BLOCK):
        m = min(_BLOCK, int(trials) - s)
        _trial_signs(
            noise.mode,
            noise.shape,
            key,
            np.uint64(start + s),
            B,
            mu,
            noise.c,
            noise.L,
            noise.lower,
            out[s : s + m],
            _scratch(noise, m),
        )
    return out


def moments(
    noise: Noise, B: int, mu: ArrayLike, H: object, trials: int, seed: int, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-trial (a, b) = (mu'V_t, V_t'HV_t) for trials start .. start + trials - 1.

    The one-step loss change at learning rate eps is eps a_t - eps^2/2 b_t exactly (eq 30-31),
    so mean(a) / mean(b) estimates eps_opt (eq 6). A dense H goes through a float32 GEMM
    (``onestep.quad_rows_f32``); diagonal and diagonal + low-rank H are summed in the kernel.
    """
    B, mu = _check(noise, B, mu, trials, start)
    op = as_hessian(H)
    if op.dim != noise.dim:
        raise ValueError(f"H has dimension {op.dim} but the noise model has {noise.dim}")
    n = int(trials)
    dense = op.dense_part()  # H = diag(h) + U U' + D: a dense H by a float32 GEMM, the others in the kernel
    if dense.size:
        H32 = dense.astype(np.float32)
        a, b = np.empty(n), np.empty(n)
        for s in range(0, n, _BLOCK):
            V = signs(noise, B, mu, min(_BLOCK, n - s), seed, start + s)
            a[s : s + V.shape[0]] = V.astype(np.float64) @ mu
            b[s : s + V.shape[0]] = quad_rows_f32(V, H32)
        return a, b
    h = op.diagonal_part()
    Ut = np.ascontiguousarray(op.low_rank_factor().T)
    key = batch_key(seed, B)
    a, b = np.empty(n), np.empty(n)
    for s in range(0, n, _BLOCK):
        m = min(_BLOCK, n - s)
        work = np.empty(((m + _CHUNK - 1) // _CHUNK, noise.dim), dtype=np.float32)
        _trial_moments(
            noise.mode,
            noise.shape,
            key,
            np.uint64(start + s),
            B,
            mu,
            noise.c,
            noise.L,
            noise.lower,
            h,
            Ut,
            a[s : s + m],
            b[s : s + m],
            work,
            _scratch(noise, m),
        )
    return a, b


def law_samples(law: str, n: int, seed: int, shape: float | None = None) -> np.ndarray:
    """n standardised draws W of a law (the per-example kernels' own sampler), from the stream
    ``derive_key(seed, law code)``: for testing the samplers against their laws."""
    noise = law_noise(law, [1.0], shape)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    out = np.empty(int(n))
    _fill_law(noise.mode, noise.shape, np.uint64(derive_key(np.uint64(seed), np.uint64(noise.mode))), out)
    return out
