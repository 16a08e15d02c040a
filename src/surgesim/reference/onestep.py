"""Plain NumPy one-step estimator: per-trial a = mu'V and b = V'HV for a block of trials.

Two sources of randomness:

- ``"surgesim"``: the same counter-based words as the Numba kernels (``surgesim.rng``), so the
  kernels must match it sample for sample (the tests' independent check);
- ``"pcg64"``: NumPy's own Generator, the baseline a user would write (``sims.bench``).

Everything else is vectorised NumPy over a (trials, d) matrix: V from uniforms compared with the
sign probability, a by a matrix-vector product, b by a GEMM (float64, or float32 as tuned NumPy).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike
from scipy import special

from ..problem import QuadraticProblem
from ..rng import derive_key, normals, uniforms

__all__ = ["signs", "moments"]


def signs(
    problem: QuadraticProblem, B: int, trials: np.ndarray, key_b=None, sampler: str = "sign",
    generator: np.random.Generator | None = None,
) -> np.ndarray:  # fmt: skip
    """V (len(trials), d) for the given trial indices: from stream derive_key(key_b, t) when
    ``key_b`` is given, else from ``generator`` (NumPy PCG64)."""
    mu, sigma = problem.mu, problem.sigma
    d, n = problem.dim, len(trials)
    if sampler == "sign":
        # P(sign of the batch mean = -sign(x)) = Phi(-|x|), x = sqrt(B) mu / sigma (rare sign)
        x = np.sqrt(B) * mu / sigma
        q = special.ndtr(-np.abs(x))
        rare = np.where(x >= 0, -1.0, 1.0)
        if key_b is not None:
            u = np.stack([uniforms(derive_key(key_b, t), d) for t in trials])
        else:
            u = _generator(generator).random((n, d))
        return np.where(u < q, rare, -rare)
    if sampler == "batch_mean":
        if key_b is not None:
            z = np.stack([normals(derive_key(key_b, t), d) for t in trials])
        else:
            z = _generator(generator).standard_normal((n, d))
        return np.sign(mu + sigma / np.sqrt(B) * z)
    if sampler == "per_example":
        if key_b is not None:
            z = np.stack([normals(derive_key(key_b, t), d * B) for t in trials])
        else:
            z = _generator(generator).standard_normal((n, d * B))
        # normal j = i * B + e is example e of coordinate i
        return np.sign(B * mu + sigma * z.reshape(n, d, B).sum(axis=2))
    raise ValueError(f"unknown sampler {sampler!r}")


def _generator(generator: np.random.Generator | None) -> np.random.Generator:
    if generator is None:
        raise ValueError("signs needs key_b or generator: neither was given")
    return generator


def moments(
    problem: QuadraticProblem, V: np.ndarray, dtype: DTypeLike = np.float64,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(a, b) per row of V: a = V mu, b = rowwise V H V' with H densified, GEMM in ``dtype``."""
    H = problem.hessian.to_dense()
    a = V @ problem.mu
    Vd = V.astype(dtype)
    b = np.einsum("ij,ij->i", Vd @ H.astype(dtype), Vd, dtype=np.float64)
    return a, b
