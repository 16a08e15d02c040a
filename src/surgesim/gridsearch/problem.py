"""The grid search's quadratic: its default problem, the start theta0 - theta* = H^-1 mu of every
run, and diag(H), tr(H) and lambda_max(H) for the learning-rate grids."""

from __future__ import annotations

import math

import numpy as np

from ..hessian import Dense, Diagonal, Hessian
from ..problem import QuadraticProblem, surge_problem

__all__ = ["initial_delta", "diag_trace_lmax", "default_problem"]


def initial_delta(problem: QuadraticProblem) -> np.ndarray:
    """theta0 - theta* = H^-1 mu: the start at which the mean gradient is the problem's mu.

    Diagonal and diagonal + low-rank H are solved in O(d k^2) (Woodbury identity); they need
    h > 0. Raises ValueError when H is singular.
    """
    H, mu = problem.hessian, problem.mu
    if isinstance(H, Dense):
        try:
            return np.linalg.solve(H.matrix, mu)
        except np.linalg.LinAlgError:
            raise ValueError("H is singular: theta0 = theta* + H^-1 mu is undefined") from None
    if np.any(H.h <= 0):
        raise ValueError(f"H's diagonal part must be > 0 to solve for theta0, min is {H.h.min():.3g}")
    if isinstance(H, Diagonal):
        return mu / H.h
    # (D + U U')^-1 mu = D^-1 mu - D^-1 U (I + U'D^-1 U)^-1 U'D^-1 mu
    U, dinv = H.factor, 1.0 / H.h
    small = np.eye(U.shape[1]) + (U.T * dinv) @ U
    y = dinv * mu
    return y - dinv * (U @ np.linalg.solve(small, U.T @ y))



def diag_trace_lmax(H: Hessian) -> tuple[np.ndarray, float, float]:
    """diag(H), tr(H) and the largest eigenvalue (power iteration for the structured kinds)."""
    if isinstance(H, Dense):
        return H.diag(), H.trace(), float(np.linalg.eigvalsh(H.matrix)[-1])
    if isinstance(H, Diagonal):
        return H.diag(), H.trace(), float(H.h.max())
    x = np.ones(H.dim) / math.sqrt(H.dim)
    lam = 0.0
    for _ in range(500):
        y = H.matvec(x)
        new = float(np.linalg.norm(y))
        x = y / new
        if abs(new - lam) <= 1e-12 * new:
            break
        lam = new
    return H.diag(), H.trace(), new



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

