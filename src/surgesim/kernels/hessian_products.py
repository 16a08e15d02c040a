"""Hessian products of the dynamics kernels (``surgesim.kernels.dynamics``): H = diag(h) + U U' as
``DIAG_LOWRANK`` (h (d,), ut = U' (k, d)) or ``DENSE`` (hd (d, d))."""

from __future__ import annotations

import numpy as np

from .._jit import jit, jit_exact, jit_inline
from ..hessian import HessianOperator

__all__ = ["DIAG_LOWRANK", "DENSE", "hessian_arrays", "off_diagonal_products"]

DIAG_LOWRANK, DENSE = 0, 1


def hessian_arrays(H: HessianOperator) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(kind, h, ut, hd) for the kernel: diag(h) + ut'ut, or hd dense (unused arrays are empty),
    from the operator's parts H = diag(h) + U U' + D (``HessianOperator``)."""
    if not isinstance(H, HessianOperator):
        raise TypeError(f"H must be a Hessian operator (Dense, Diagonal, DiagonalPlusLowRank), got {type(H).__name__}")
    empty1, empty2 = np.zeros(0), np.zeros((0, 0))
    hd = H.dense_part()
    if hd.size:
        return DENSE, empty1, empty2, np.ascontiguousarray(hd)
    return DIAG_LOWRANK, H.diagonal_part(), np.ascontiguousarray(H.low_rank_factor().T), empty2


@jit_exact
def off_diagonal_products(x, factor, carry, out):  # pragma: no cover - compiled
    """out[i, k] = y_ik (carry_k + sum_{j < i} y_jk) with y_ik = x_i factor_ik, over the rows of
    one block, and carry_k += sum_i y_ik: the terms of ``surgesim.hessian.low_rank_off_diagonal``
    in one pass, each the same IEEE operations as NumPy's ``y * cumsum(...)`` (no fastmath)."""
    n, k = factor.shape
    for i in range(n):
        for c in range(k):
            y = x[i] * factor[i, c]
            out[i, c] = y * carry[c]
            carry[c] = carry[c] + y


@jit_inline
def _refresh(kind, h, ut, hd, delta, gm, p):
    """gm = H delta (and p = U'delta for low rank); returns the loss 1/2 delta'H delta.

    Low-rank factors go four at a time (k = 4 costs one pass for U'delta and one for H delta
    instead of eight), the remaining k mod 4 one at a time.
    """
    d = delta.shape[0]
    if kind == DENSE:
        for i in range(d):
            s = 0.0
            for j in range(d):
                s += hd[i, j] * delta[j]
            gm[i] = s
    else:
        for i in range(d):
            gm[i] = h[i] * delta[i]
        k = ut.shape[0]
        for c in range(0, k - k % 4, 4):
            s0 = s1 = s2 = s3 = 0.0
            for i in range(d):
                x = delta[i]
                s0 += ut[c, i] * x
                s1 += ut[c + 1, i] * x
                s2 += ut[c + 2, i] * x
                s3 += ut[c + 3, i] * x
            p[c], p[c + 1], p[c + 2], p[c + 3] = s0, s1, s2, s3
            for i in range(d):
                gm[i] += ut[c, i] * s0 + ut[c + 1, i] * s1 + ut[c + 2, i] * s2 + ut[c + 3, i] * s3
        for c in range(k - k % 4, k):
            s0 = 0.0
            for i in range(d):
                s0 += ut[c, i] * delta[i]
            p[c] = s0
            for i in range(d):
                gm[i] += ut[c, i] * s0
    loss = 0.0
    for i in range(d):
        loss += delta[i] * gm[i]
    return 0.5 * loss


@jit
def _quad(kind, h, ut, hd, x):
    """x'Hx: O(d k) for diag(h) + U U', O(d^2) dense."""
    d = x.shape[0]
    s = 0.0
    if kind == DENSE:
        for i in range(d):
            a = 0.0
            for j in range(d):
                a += hd[i, j] * x[j]
            s += a * x[i]
        return s
    for i in range(d):
        s += h[i] * x[i] * x[i]
    for c in range(ut.shape[0]):
        a = 0.0
        for i in range(d):
            a += ut[c, i] * x[i]
        s += a * a
    return s


@jit
def _off_diagonal(kind, ut, hd, x):
    """sum_{i != j} x_i x_j H_ij, eq 14's sum, summed without the diagonal (0 for a diagonal H)."""
    d = x.shape[0]
    s = 0.0
    if kind == DENSE:
        for i in range(d):
            a = 0.0
            for j in range(d):
                a += hd[i, j] * x[j]
            s += (a - hd[i, i] * x[i]) * x[i]
        return s
    for c in range(ut.shape[0]):
        a = 0.0
        b = 0.0
        for i in range(d):
            y = ut[c, i] * x[i]
            a += y
            b += y * y
        s += a * a - b
    return s
