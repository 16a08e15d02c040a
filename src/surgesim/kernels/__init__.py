"""Numba kernels: one-step sign moments (``onestep``) and multi-step dynamics (``dynamics``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import dynamics, onestep
from .onestep import BATCH_MEAN, PER_EXAMPLE, SAMPLERS, SIGN, batch_key, trial_moments, trial_signs

if TYPE_CHECKING:
    from ..problem import QuadraticProblem

__all__ = [
    "dynamics",
    "onestep",
    "BATCH_MEAN",
    "PER_EXAMPLE",
    "SAMPLERS",
    "SIGN",
    "batch_key",
    "one_step_moments",
    "trial_moments",
    "trial_signs",
]


def one_step_moments(
    problem: QuadraticProblem, batch_size: int, trials: int, seed: int = 0, sampler: str = "sign"
) -> tuple[np.ndarray, np.ndarray]:
    """Raw Monte Carlo moments of one sign-SGD step: per trial t, a_t = mu'V_t and b_t = V_t'HV_t.

    The one-step loss improvement at learning rate eps is exactly eps a_t - eps^2/2 b_t (eq 30-31),
    so E[a] and E[b] give eq 8 and eq 9 (``surgesim.estimate`` adds standard errors and adaptive
    trial counts). Trial t uses the same random stream as in ``surgesim.estimate`` (key
    ``batch_key(seed, B)``, counter t), so the first N trials here are the estimator's first N.

    Args:
        problem: a ``surgesim.QuadraticProblem``.
        batch_size: B >= 1.
        trials: number of trials N >= 1.
        seed: 0 <= seed < 2^64.
        sampler: "sign", "batch_mean" or "per_example" (``onestep`` module docstring).

    Returns:
        (a, b), two float64 arrays of shape (N,). For dense H, b is accumulated from float32
        products (relative error about 1e-7).

    >>> import surgesim as ss
    >>> a, b = one_step_moments(ss.surge_problem(50, seed=0), batch_size=16, trials=1000, seed=1)
    >>> a.shape, bool(abs(a.mean() / b.mean()) < 1)
    ((1000,), True)
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    if isinstance(batch_size, bool) or not float(batch_size).is_integer() or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(trials, bool) or not float(trials).is_integer() or trials < 1:
        raise ValueError(f"trials must be an integer >= 1, got {trials!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in [0, 2^64), got {seed!r}")
    B, n, d = int(batch_size), int(trials), problem.dim
    key = onestep.batch_key(int(seed), B)
    thr, rare = onestep.sign_thresholds(B, problem.mu, problem.sigma)
    H = problem.hessian
    h, Ut = H.diagonal_part(), np.ascontiguousarray(H.low_rank_factor().T)  # H = diag(h) + U U' + D
    a, b = np.empty(n), np.empty(n)
    code, step = SAMPLERS[sampler], 8 * onestep.DENSE_BLOCK  # trials per call: bounds the scratch memory
    work = np.empty(((min(n, step) + 15) // 16, d), dtype=np.float32)
    dense = H.dense_part()
    H32 = dense.astype(np.float32) if dense.size else None
    for s in range(0, n, step):
        m = min(step, n - s)
        trial_moments(code, key, np.uint64(s), B, problem.mu, problem.sigma, thr, rare, h, Ut, a[s : s + m],
                      b[s : s + m], work)  # fmt: skip
        if H32 is not None:  # b by float32 GEMMs in blocks aligned to trial indices, as the estimator does
            V = np.empty((-(-m // onestep.DENSE_BLOCK) * onestep.DENSE_BLOCK, d), dtype=np.float32)
            trial_signs(code, key, np.uint64(s), B, problem.mu, problem.sigma, thr, rare, np.empty(V.shape[0]), V)
            b[s : s + m] = onestep.quad_rows_f32(V, H32)[:m]
    return a, b
