"""Numba kernels for one sign-SGD step: per-trial a_t = mu'V_t and b_t = V_t'HV_t.

For a quadratic loss the one-step loss improvement at learning rate eps is exactly
dL_t(eps) = eps a_t - eps^2/2 b_t (eq 30-31), so the Monte Carlo argmax is mean(a) / mean(b).

Trial t of batch size B draws its random numbers from the stream ``derive_key(key_B, t)``,
``key_B = batch_key(seed, B)``; the counter is the coordinate (or the example-coordinate index),
so every V_t is a pure function of (seed, B, t, sampler): results do not depend on the thread count,
on how trials are split into calls, or on the order in which calls run.

Samplers (all give V_i = sign of the batch-mean gradient of coordinate i):

- ``SIGN``: one 64-bit word per coordinate against a threshold: the batch mean of B Gaussian
  per-example gradients is exactly N(mu_i, sigma_i^2 / B), so sign(batch mean) is -sign(x_i) with
  probability Phi(-|x_i|), x_i = sqrt(B) mu_i / sigma_i. The rare sign is drawn against a
  threshold of that (small, accurately computed) probability.
- ``BATCH_MEAN``: one normal per coordinate: g_i = mu_i + sigma_i / sqrt(B) z_i.
- ``PER_EXAMPLE``: B normals per coordinate, averaged (the faithful sampler, B times the cost;
  normal j = i * B + e is example e of coordinate i).

Hessians: ``h`` (d,) is diag(H) for diagonal and diagonal + low-rank H, ``Ut`` (k, d) the transposed
low-rank factor (k = 0 for diagonal H); for dense H the kernel writes V and b is a float32 GEMM outside.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import prange
from scipy import special
from threadpoolctl import threadpool_limits

from .._jit import jit, jit_inline, jit_parallel
from ..rng import derive_key, mix64, normal_pair, probability_threshold, random_bits

__all__ = [
    "SIGN",
    "BATCH_MEAN",
    "PER_EXAMPLE",
    "SAMPLERS",
    "batch_key",
    "sign_thresholds",
    "sample_signs",
    "trial_moments",
    "trial_signs",
    "quad_rows_f32",
    "row_moments",
    "DENSE_BLOCK",
]

SIGN, BATCH_MEAN, PER_EXAMPLE = 0, 1, 2
SAMPLERS = {"sign": SIGN, "batch_mean": BATCH_MEAN, "per_example": PER_EXAMPLE}

_CHUNK = 16  # trials per parallel work item (each owns one scratch row)
DENSE_BLOCK = 2048  # rows per sgemm in quad_rows_f32; dense b is computed in aligned blocks


@jit
def _batch_key(seed, batch_size):
    return derive_key(mix64(seed), batch_size)


def batch_key(seed: int, batch_size: int) -> np.uint64:
    """Stream key of batch size B under ``seed`` (0 <= seed < 2^64); trial t uses
    derive_key(batch_key, t)."""
    if int(seed) != seed or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2^64), got {seed}")
    return np.uint64(_batch_key(np.uint64(seed), np.uint64(batch_size)))


def sign_thresholds(B: float, mu: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the SIGN sampler: (threshold, rare) with P(V_i = rare_i) = Phi(-|x_i|) = word < threshold.

    x_i = sqrt(B) mu_i / sigma_i; rare_i = -sign(x_i) (-1 where x_i = 0, with probability 1/2).
    """
    x = np.sqrt(float(B)) * (np.asarray(mu, np.float64) / np.asarray(sigma, np.float64))
    q = special.ndtr(-np.abs(x))
    thr = _thresholds(q)
    rare = np.where(x >= 0, -1.0, 1.0).astype(np.float32)
    return thr, rare


@jit
def _thresholds(q):
    out = np.empty(q.shape[0], dtype=np.uint64)
    for i in range(q.shape[0]):
        out[i] = probability_threshold(q[i])
    return out


@jit_inline
def sample_signs(sampler, key, B, mu, sigma, thr, rare, row):
    """Fill ``row`` (d,) with V = sign(batch mean) for the trial whose stream key is ``key``."""
    d = row.shape[0]
    if sampler == SIGN:
        for i in range(d):
            r = rare[i]
            row[i] = r if random_bits(key, i) < thr[i] else -r
    elif sampler == BATCH_MEAN:
        scale = 1.0 / np.sqrt(np.float64(B))
        for m in range(d // 2):  # no branch in the loop body: it vectorises
            z0, z1 = normal_pair(key, m)
            row[2 * m] = np.sign(mu[2 * m] + sigma[2 * m] * scale * z0)
            row[2 * m + 1] = np.sign(mu[2 * m + 1] + sigma[2 * m + 1] * scale * z1)
        if d % 2:
            z0, _ = normal_pair(key, d // 2)
            row[d - 1] = np.sign(mu[d - 1] + sigma[d - 1] * scale * z0)
    else:  # PER_EXAMPLE: normal j = i * B + e, pairs (2m, 2m + 1) in order
        nb = np.int64(B)
        total = np.int64(d) * nb
        for i in range(d):
            row[i] = 0.0
        for m in range((total + 1) // 2):
            z0, z1 = normal_pair(key, m)
            j = 2 * m
            row[j // nb] += z0
            if j + 1 < total:
                row[(j + 1) // nb] += z1
        for i in range(d):
            # mean of B draws of N(mu, sigma^2): mu + sigma * sum(z) / B; sign only needs B * that
            row[i] = np.sign(nb * mu[i] + sigma[i] * row[i])


@jit_inline
def row_moments(row, mu, h, Ut):
    """(mu'v, v'Hv) for one sampled row v with H = diag(h) + Ut'Ut (k = Ut.shape[0] may be 0)."""
    a = 0.0
    b = 0.0
    for i in range(row.shape[0]):
        v = np.float64(row[i])
        a += mu[i] * v
        b += h[i] * v * v
    for j in range(Ut.shape[0]):
        u = Ut[j]
        p = 0.0
        for i in range(row.shape[0]):
            p += u[i] * row[i]
        b += p * p
    return a, b


@jit_parallel
def trial_moments(sampler, key_b, t0, B, mu, sigma, thr, rare, h, Ut, out_a, out_b, work):
    """a_t = mu'V_t and b_t = V_t'HV_t for trials t0 .. t0 + n - 1 (n = out_a.shape[0]).

    H = diag(h) + Ut' Ut with the low-rank factor given transposed, Ut of shape (k, d) and
    C-contiguous so that each projection is a contiguous, vectorised dot product (k may be 0).
    ``work`` is scratch of shape (ceil(n / 16), d), float32.
    """
    n = out_a.shape[0]
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    for c in prange(n_chunks):
        row = work[c]
        for t in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            key = derive_key(key_b, t0 + t)
            sample_signs(sampler, key, B, mu, sigma, thr, rare, row)
            out_a[t], out_b[t] = row_moments(row, mu, h, Ut)


@jit_parallel
def trial_signs(sampler, key_b, t0, B, mu, sigma, thr, rare, out_a, out_v):
    """a_t = mu'V_t and V_t itself (rows of ``out_v``, float32) for trials t0 .. t0 + n - 1."""
    n = out_a.shape[0]
    d = mu.shape[0]
    for t in prange(n):
        row = out_v[t]
        sample_signs(sampler, derive_key(key_b, t0 + t), B, mu, sigma, thr, rare, row)
        a = 0.0
        for i in range(d):
            a += mu[i] * np.float64(row[i])
        out_a[t] = a


@jit_parallel
def _row_dots(x, y, out):
    for t in prange(x.shape[0]):
        s = 0.0
        for i in range(x.shape[1]):
            s += np.float64(x[t, i]) * np.float64(y[t, i])
        out[t] = s


def quad_rows_f32(V: np.ndarray, H32: np.ndarray) -> np.ndarray:
    """V_t'HV_t for each row of V (float32, entries in {-1, 0, 1}) by float32 GEMMs.

    The rows are cut into blocks of ``DENSE_BLOCK`` and each block is one single-threaded sgemm,
    run concurrently on Numba's thread count: a multi-threaded BLAS call rounds differently for
    different thread counts and shapes, a fixed-shape single-threaded one always the same way, so
    the result of a row depends only on the block it is in (callers align blocks to trial
    indices). Each entry of VH is rounded to float32 (relative error ~1e-7, far below any Monte
    Carlo standard error); the final dot products are accumulated in float64.
    """
    n = V.shape[0]
    starts = range(0, n, DENSE_BLOCK)
    VH = np.empty_like(V)

    def gemm(s: int) -> None:
        np.matmul(V[s : s + DENSE_BLOCK], H32, out=VH[s : s + DENSE_BLOCK])

    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(numba.get_num_threads()) as pool:
        list(pool.map(gemm, starts))
    out = np.empty(n, dtype=np.float64)
    _row_dots(VH, V, out)
    return out
