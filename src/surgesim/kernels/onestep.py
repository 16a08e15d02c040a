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

Memory and speed at large d (``trial_moments``): no scratch of size trials x d; a chunk of trials
walks the coordinates in cache-sized blocks, so each problem array streams from memory once per
chunk instead of once per trial. The kernel reads the problem's own float64 arrays in place (mu,
h, and the factor through the view ``factor.T``: no copies) plus the 64-bit sign thresholds and
float32 rare signs of ``sign_thresholds``: 12 bytes per coordinate beside the problem. The
thresholds stay 64-bit: a 32-bit threshold would change which signs a seed draws.
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
    "fill_signs",
    "sample_signs",
    "trial_moments",
    "trial_signs",
    "quad_rows_f32",
    "row_moments",
    "DENSE_BLOCK",
    "LEAF",
    "BLOCK",
]

SIGN, BATCH_MEAN, PER_EXAMPLE = 0, 1, 2
SAMPLERS = {"sign": SIGN, "batch_mean": BATCH_MEAN, "per_example": PER_EXAMPLE}

LEAF = 1024  # coordinates per partial sum: fixes the order of every float64 sum in trial_moments
BLOCK = 4096  # default coordinates per cache block in trial_moments (~70 bytes each: fits in L2)
_PASS_MAX = 64  # most trials that share one pass over the coordinate blocks
DENSE_BLOCK = 2048  # rows per sgemm in quad_rows_f32; dense b is computed in aligned blocks
_THRESHOLD_BLOCK = 1 << 16  # coordinates per block (one thread's task) in sign_thresholds


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
    Computed in blocks (no float64 temporaries of size d), on Numba's thread count at once (SciPy
    and NumPy release the GIL; each value is elementwise, so the same whatever the threads).
    """
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    thr = np.empty(mu.shape[0], dtype=np.uint64)
    rare = np.empty(mu.shape[0], dtype=np.float32)

    def block(s: int) -> None:
        x = np.sqrt(float(B)) * (mu[s : s + _THRESHOLD_BLOCK] / sigma[s : s + _THRESHOLD_BLOCK])
        thr[s : s + x.size] = _thresholds(special.ndtr(-np.abs(x)))
        rare[s : s + x.size] = np.where(x >= 0, -1.0, 1.0)

    starts = range(0, mu.shape[0], _THRESHOLD_BLOCK)
    if len(starts) == 1:
        block(0)
    else:
        with ThreadPoolExecutor(min(len(starts), numba.get_num_threads())) as pool:
            list(pool.map(block, starts))
    return thr, rare


@jit
def _thresholds(q):
    out = np.empty(q.shape[0], dtype=np.uint64)
    for i in range(q.shape[0]):
        out[i] = probability_threshold(q[i])
    return out


@jit_inline
def _fill_sign(key, thr, rare, i0, row):
    """SIGN sampler: one word per coordinate against its threshold (``fill_signs``)."""
    for m in range(row.shape[0]):
        r = rare[m]
        row[m] = r if random_bits(key, i0 + m) < thr[m] else -r


@jit_inline
def _fill_batch_mean(key, B, mu, sigma, i0, row):
    """BATCH_MEAN sampler: coordinate i is element i % 2 of Box-Muller pair i // 2."""
    n = row.shape[0]
    scale = 1.0 / np.sqrt(np.float64(B))
    j = 0
    if i0 % 2 == 1:
        _, z1 = normal_pair(key, i0 // 2)
        row[0] = np.sign(mu[0] + sigma[0] * scale * z1)
        j = 1
    for m in range((n - j) // 2):  # no branch in the loop body: it vectorises
        z0, z1 = normal_pair(key, (i0 + j) // 2 + m)
        row[j + 2 * m] = np.sign(mu[j + 2 * m] + sigma[j + 2 * m] * scale * z0)
        row[j + 2 * m + 1] = np.sign(mu[j + 2 * m + 1] + sigma[j + 2 * m + 1] * scale * z1)
    if (n - j) % 2:
        z0, _ = normal_pair(key, (i0 + n - 1) // 2)
        row[n - 1] = np.sign(mu[n - 1] + sigma[n - 1] * scale * z0)


@jit_inline
def _fill_per_example(key, B, mu, sigma, i0, row):
    """PER_EXAMPLE sampler: normal j = i * B + e (example e of coordinate i), pairs (2m, 2m + 1)."""
    n = row.shape[0]
    nb = np.int64(B)
    start = np.int64(i0) * nb
    end = start + np.int64(n) * nb
    for m in range(n):
        row[m] = 0.0
    for pair in range(start // 2, (end + 1) // 2):
        z0, z1 = normal_pair(key, pair)
        j = 2 * pair
        if j >= start:  # the first pair may begin in the previous coordinate
            row[j // nb - i0] += z0
        if j + 1 < end:
            row[(j + 1) // nb - i0] += z1
    for m in range(n):
        # mean of B draws of N(mu, sigma^2): mu + sigma * sum(z) / B; sign only needs B * that
        row[m] = np.sign(nb * mu[m] + sigma[m] * row[m])


@jit_inline
def fill_signs(sampler, key, B, mu, sigma, thr, rare, i0, row):
    """Fill ``row`` (n,) with V_i = sign(batch mean) of coordinates i = i0 .. i0 + n - 1 for the trial
    whose stream key is ``key``; mu, sigma, thr and rare are those coordinates' slices (n,). The
    counters are the coordinates' own (module docstring), whatever i0 and n.

    (Slices, not offset indices: LLVM vectorises ``x[m]`` but not ``x[i0 + m]``, whose index it
    cannot prove non-negative.) ``sampler`` is a run-time value here, so a caller compiles all three
    samplers; the kernels below are compiled per sampler instead (``_kernels``), with the sampler a
    compile-time constant, so a run compiles only the sampler it uses.
    """
    if sampler == SIGN:
        _fill_sign(key, thr, rare, i0, row)
    elif sampler == BATCH_MEAN:
        _fill_batch_mean(key, B, mu, sigma, i0, row)
    else:
        _fill_per_example(key, B, mu, sigma, i0, row)


@jit_inline
def sample_signs(sampler, key, B, mu, sigma, thr, rare, row):
    """Fill ``row`` (d,) with V = sign(batch mean) for the trial whose stream key is ``key``."""
    fill_signs(sampler, key, B, mu, sigma, thr, rare, 0, row)


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


def _compile_kernels(sampler: int):
    """The two parallel kernels of one sampler, with ``sampler`` a compile-time constant (a closure
    cell: Numba prunes the other samplers' branches before compiling, and its on-disk cache keys
    each closure by the cell's value). Built on first use by ``_kernels``: a run compiles the
    kernels of the sampler it uses, not all three (about 4x less compile time for the default run).
    """

    @jit_parallel
    def moments(key_b, t0, B, mu, sigma, thr, rare, h, Ut, out_a, out_b, block, per_pass):
        n = out_a.shape[0]
        d = mu.shape[0]
        k = Ut.shape[0]
        for item in prange((n + per_pass - 1) // per_pass):
            ta = item * per_pass
            nt = min(n, ta + per_pass) - ta
            # per work item, allocated once: the trials' running sums (mu'V, sum h V^2, Ut V), the
            # block of the factor made contiguous, and one leaf of signs
            acc = np.zeros((nt, 2 + k))
            ut = np.empty((k, block))
            row = np.empty(LEAF)
            for c0 in range(0, d, block):
                c1 = min(d, c0 + block)
                for j in range(k):
                    for i in range(c1 - c0):
                        ut[j, i] = Ut[j, c0 + i]
                for t in range(nt):
                    key = derive_key(key_b, t0 + ta + t)
                    for l0 in range(c0, c1, LEAF):
                        l1 = min(c1, l0 + LEAF)
                        v = row[: l1 - l0]
                        if sampler == SIGN:
                            _fill_sign(key, thr[l0:l1], rare[l0:l1], l0, v)
                        elif sampler == BATCH_MEAN:
                            _fill_batch_mean(key, B, mu[l0:l1], sigma[l0:l1], l0, v)
                        else:
                            _fill_per_example(key, B, mu[l0:l1], sigma[l0:l1], l0, v)
                        mu_l = mu[l0:l1]
                        h_l = h[l0:l1]
                        a = 0.0
                        b = 0.0
                        for i in range(l1 - l0):
                            a += mu_l[i] * v[i]
                            b += h_l[i] * v[i] * v[i]
                        acc[t, 0] += a
                        acc[t, 1] += b
                        for j in range(k):
                            u = ut[j, l0 - c0 : l1 - c0]
                            p = 0.0
                            for i in range(l1 - l0):
                                p += u[i] * v[i]
                            acc[t, 2 + j] += p
            for t in range(nt):
                b = acc[t, 1]
                for j in range(k):
                    b += acc[t, 2 + j] * acc[t, 2 + j]
                out_a[ta + t] = acc[t, 0]
                out_b[ta + t] = b

    @jit_parallel
    def signs(key_b, t0, B, mu, sigma, thr, rare, out_a, out_v):
        n = out_a.shape[0]
        d = mu.shape[0]
        for t in prange(n):
            row = out_v[t]
            key = derive_key(key_b, t0 + t)
            if sampler == SIGN:
                _fill_sign(key, thr, rare, 0, row)
            elif sampler == BATCH_MEAN:
                _fill_batch_mean(key, B, mu, sigma, 0, row)
            else:
                _fill_per_example(key, B, mu, sigma, 0, row)
            a = 0.0
            for i in range(d):
                a += mu[i] * np.float64(row[i])
            out_a[t] = a

    return moments, signs


_KERNELS: dict[int, tuple] = {}


def _kernels(sampler) -> tuple:
    """(moments, signs) kernels of ``sampler`` (SIGN, BATCH_MEAN or PER_EXAMPLE), built once."""
    code = int(sampler)
    if code not in (SIGN, BATCH_MEAN, PER_EXAMPLE):
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS.values())} (SAMPLERS), got {sampler!r}")
    if code not in _KERNELS:
        _KERNELS[code] = _compile_kernels(code)
    return _KERNELS[code]


def trial_moments(
    sampler, key_b, t0, B, mu, sigma, thr, rare, h, Ut, out_a, out_b, work=None, *,
    block: int = BLOCK, per_pass: int | None = None,
) -> None:  # fmt: skip
    """a_t = mu'V_t and b_t = V_t'HV_t for trials t0 .. t0 + n - 1 (n = out_a.shape[0]).

    H = diag(h) + Ut' Ut with the low-rank factor given transposed, Ut of shape (k, d), any
    layout (``factor.T``, a view, needs no copy; k may be 0). Cache blocking: each work item takes
    ``per_pass`` trials (default: the trials spread over Numba's threads, at most 64) through the
    coordinates ``block`` at a time (a multiple of ``LEAF``), so each problem array is read from
    memory once per pass, not once per trial; memory is O(per_pass k + block k) per thread,
    independent of n and d. Every float64 sum runs leaf by leaf (``LEAF`` coordinates, then the
    leaf sums in coordinate order), so results do not depend on ``block``, ``per_pass``, the
    thread count, or how trials are split into calls. ``work`` is ignored (the kernel needs no
    scratch; accepted for callers written against the earlier signature).
    """
    n = out_a.shape[0]
    if int(block) != block or block < LEAF or block % LEAF:
        raise ValueError(f"block must be a positive multiple of LEAF = {LEAF}, got {block}")
    if per_pass is None:
        per_pass = min(_PASS_MAX, max(1, -(-n // numba.get_num_threads())))
    if int(per_pass) != per_pass or per_pass < 1:
        raise ValueError(f"per_pass must be an integer >= 1, got {per_pass}")
    _kernels(sampler)[0](key_b, t0, B, mu, sigma, thr, rare, h, Ut, out_a, out_b, int(block), int(per_pass))


def trial_signs(sampler, key_b, t0, B, mu, sigma, thr, rare, out_a, out_v) -> None:
    """a_t = mu'V_t and V_t itself (rows of ``out_v``, float32) for trials t0 .. t0 + n - 1."""
    _kernels(sampler)[1](key_b, t0, B, mu, sigma, thr, rare, out_a, out_v)


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
