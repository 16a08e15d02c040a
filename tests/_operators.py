"""Random Hessian operators for the operator tests (tests/test_hessian*.py)."""

from __future__ import annotations

import numpy as np

from surgesim.hessian import Dense, Diagonal, DiagonalPlusLowRank, HessianOperator


def random_operator(kind: str, d: int, seed: int, k: int = 3, h_low: float = 0.0, tag: int = 11) -> HessianOperator:
    """A ``kind`` operator ("dense", "diagonal", "lowrank") with diagonal h uniform in (h_low, 2),
    low-rank factor U (d, k) standard normal, dense part A A' with A (d, d) of variance 1/d; its
    draws from the stream [seed, d, tag]. h_low > 0 makes it positive definite."""
    rng = np.random.default_rng([seed, d, tag])
    h = rng.uniform(h_low, 2.0, size=d)
    if kind == "diagonal":
        return Diagonal(h)
    U = rng.standard_normal((d, k))
    if kind == "lowrank":
        return DiagonalPlusLowRank(h, U)
    A = rng.standard_normal((d, d)) / np.sqrt(d)
    return Dense(A @ A.T + np.diag(h))
