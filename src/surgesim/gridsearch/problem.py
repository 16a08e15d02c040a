"""The grid search's quadratic: its default problem, the start theta0 - theta* = H^-1 mu of every
run, and diag(H), tr(H) and lambda_max(H) for the learning-rate grids."""

from __future__ import annotations

import math

import numpy as np

from ..hessian import Hessian
from ..problem import QuadraticProblem, surge_problem

__all__ = ["initial_delta", "diag_trace_lmax", "default_problem"]


def initial_delta(problem: QuadraticProblem) -> np.ndarray:
    """theta0 - theta* = H^-1 mu: the start at which the mean gradient is the problem's mu.

    Diagonal and diagonal + low-rank H are solved in O(d k^2) (Woodbury identity); they need
    h > 0. Raises ValueError when H is singular.
    """
    try:
        return problem.hessian.solve(problem.mu)
    except ValueError as e:
        raise ValueError(f"theta0 = theta* + H^-1 mu is undefined: {e}") from None



def diag_trace_lmax(H: Hessian) -> tuple[np.ndarray, float, float]:
    """diag(H), tr(H) and the largest eigenvalue (``max_eigenvalue``: power iteration for the
    diagonal plus low-rank kind)."""
    return H.diag(), H.trace(), H.max_eigenvalue()



def default_problem(dims: int = 256, seed: int = 0) -> QuadraticProblem:
    """The default problem: ``surge_problem(dims, seed)`` with |mu_i| / sigma_i log-uniform in
    (0.016, 0.05) * sqrt(256 / dims).

    H = diag(h) + U U' with positive factors along sign(mu), so eq 14's off-diagonal sum is large;
    the scaling of r = mu / sigma keeps B_noise at the start (~ 1 / (d r^2)) at about 20 whatever
    ``dims``, well below the validity bound pi / (2 r_max^2) (~ 600 at dims = 256, growing with
    dims).
    """
    if isinstance(dims, bool) or int(dims) != dims or dims < 2:
        raise ValueError(f"dims={dims!r} must be an integer >= 2")
    scale = math.sqrt(256.0 / dims)
    return surge_problem(int(dims), seed=seed, snr=(0.016 * scale, 0.05 * scale))

